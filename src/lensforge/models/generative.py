"""Generative networks: dense/conv autoencoders, VAEs and DCGAN generator/discriminator.

Every network takes and produces images as floats in [0, 1] (decoders return logits, so the
Bernoulli likelihood can use the numerically stable `binary_cross_entropy_with_logits`), and is
built from plain constructor arguments (in_channels, image_size, latent_dim, ...) so a checkpoint
can rebuild it by name without pickle. Conv stacks are planned from the image size, so the same
code serves 28x28 digits and 64x64 faces without per-size classes.
"""
from __future__ import annotations

import math

import torch
from torch import nn

from . import register


def _size(image_size) -> tuple[int, int]:
    return (image_size, image_size) if isinstance(image_size, int) else (int(image_size[0]), int(image_size[1]))


def plan_sizes(h: int, w: int, smallest: int = 7) -> list[tuple[int, int]]:
    """Spatial sizes of a stride-2 pyramid, halving (rounding up) while both sides stay >= smallest.

    Rounding up matches Conv2d(k=3, s=2, p=1); the decoder undoes each step exactly with the
    output_padding that `_up` computes, so odd sizes (e.g. 7 -> 14 -> 28, or 23) round-trip.
    """
    sizes = [(h, w)]
    while math.ceil(sizes[-1][0] / 2) >= smallest and math.ceil(sizes[-1][1] / 2) >= smallest and len(sizes) < 6:
        sizes.append((math.ceil(sizes[-1][0] / 2), math.ceil(sizes[-1][1] / 2)))
    return sizes


def _widths(n: int, base: int, cap: int = 256) -> list[int]:
    return [min(cap, base * 2 ** i) for i in range(n)]


def _up(cin: int, cout: int, src: tuple[int, int], dst: tuple[int, int]) -> nn.ConvTranspose2d:
    pad = (dst[0] - (2 * src[0] - 1), dst[1] - (2 * src[1] - 1))
    return nn.ConvTranspose2d(cin, cout, 3, 2, 1, output_padding=pad)


class DenseEncoder(nn.Module):
    def __init__(self, in_channels: int, image_size, out_dim: int, hidden=(512, 256)):
        super().__init__()
        h, w = _size(image_size)
        layers: list[nn.Module] = [nn.Flatten()]
        width = in_channels * h * w
        for units in hidden:
            layers += [nn.Linear(width, units), nn.ReLU(inplace=True)]
            width = units
        layers.append(nn.Linear(width, out_dim))
        self.net = nn.Sequential(*layers)

    def forward(self, x):
        return self.net(x)


class DenseDecoder(nn.Module):
    def __init__(self, in_channels: int, image_size, latent_dim: int, hidden=(256, 512)):
        super().__init__()
        self.shape = (in_channels, *_size(image_size))
        layers: list[nn.Module] = []
        width = latent_dim
        for units in hidden:
            layers += [nn.Linear(width, units), nn.ReLU(inplace=True)]
            width = units
        layers.append(nn.Linear(width, math.prod(self.shape)))
        self.net = nn.Sequential(*layers)

    def forward(self, z):
        return self.net(z).view(-1, *self.shape)


class ConvEncoder(nn.Module):
    def __init__(self, in_channels: int, image_size, out_dim: int, width: int = 32, hidden: int = 256):
        super().__init__()
        sizes = plan_sizes(*_size(image_size))
        chans = [in_channels] + _widths(len(sizes) - 1, width)
        layers: list[nn.Module] = []
        for cin, cout in zip(chans[:-1], chans[1:]):
            layers += [nn.Conv2d(cin, cout, 3, 2, 1), nn.ReLU(inplace=True)]
        if len(sizes) == 1:      # images too small to downsample: a dense encoder in disguise
            chans = [in_channels]
        h, w = sizes[-1]
        layers += [nn.Flatten(), nn.Linear(chans[-1] * h * w, hidden), nn.ReLU(inplace=True), nn.Linear(hidden, out_dim)]
        self.net = nn.Sequential(*layers)

    def forward(self, x):
        return self.net(x)


class ConvDecoder(nn.Module):
    def __init__(self, in_channels: int, image_size, latent_dim: int, width: int = 32, hidden: int = 256):
        super().__init__()
        sizes = plan_sizes(*_size(image_size))
        chans = [in_channels] + _widths(len(sizes) - 1, width)
        h, w = sizes[-1]
        self.start = (chans[-1], h, w)
        self.fc = nn.Sequential(nn.Linear(latent_dim, hidden), nn.ReLU(inplace=True),
                                nn.Linear(hidden, chans[-1] * h * w), nn.ReLU(inplace=True))
        ups: list[nn.Module] = []
        for i in range(len(sizes) - 1, 0, -1):
            ups.append(_up(chans[i], chans[i - 1] if i > 1 else chans[1], sizes[i], sizes[i - 1]))
            ups.append(nn.ReLU(inplace=True))
        # a final 3x3 conv at full resolution gives every output pixel its own mixing of features
        ups.append(nn.Conv2d(chans[1] if len(chans) > 1 else in_channels, in_channels, 3, 1, 1))
        self.net = nn.Sequential(*ups)

    def forward(self, z):
        return self.net(self.fc(z).view(-1, *self.start))


def _encoder(kind: str, in_channels, image_size, out_dim, width):
    if kind == "dense":
        return DenseEncoder(in_channels, image_size, out_dim, hidden=(width * 16, width * 8))
    return ConvEncoder(in_channels, image_size, out_dim, width=width)


def _decoder(kind: str, in_channels, image_size, latent_dim, width):
    if kind == "dense":
        return DenseDecoder(in_channels, image_size, latent_dim, hidden=(width * 8, width * 16))
    return ConvDecoder(in_channels, image_size, latent_dim, width=width)


class AutoEncoder(nn.Module):
    """x -> z (latent_dim) -> x; the output is linear (trained with MSE), `reconstruct` clamps it
    to valid pixels."""

    def __init__(self, kind: str = "conv", in_channels: int = 1, image_size=28, latent_dim: int = 16, width: int = 32):
        super().__init__()
        self.latent_dim = latent_dim
        self.encoder = _encoder(kind, in_channels, image_size, latent_dim, width)
        self.decoder = _decoder(kind, in_channels, image_size, latent_dim, width)

    def encode(self, x):
        return self.encoder(x)

    def decode(self, z):
        return self.decoder(z)

    def forward(self, x):
        return self.decode(self.encode(x))

    def reconstruct(self, x):
        return self.forward(x).float().clamp(0, 1)


class VAE(nn.Module):
    """Encoder gives (mu, logvar) of q(z|x); decoder gives the logits (Bernoulli) or means
    (Gaussian, with one learned log-sigma per channel) of p(x|z)."""

    def __init__(self, kind: str = "conv", in_channels: int = 1, image_size=28, latent_dim: int = 16, width: int = 32,
                 likelihood: str = "bernoulli"):
        super().__init__()
        if likelihood not in ("bernoulli", "gaussian"):
            raise ValueError(f"unknown likelihood {likelihood!r}")
        self.latent_dim, self.likelihood = latent_dim, likelihood
        self.encoder = _encoder(kind, in_channels, image_size, 2 * latent_dim, width)
        self.decoder = _decoder(kind, in_channels, image_size, latent_dim, width)
        self.log_sigma = nn.Parameter(torch.full((1, in_channels, 1, 1), -1.0)) if likelihood == "gaussian" else None

    def encode(self, x):
        mu, logvar = self.encoder(x).float().chunk(2, dim=1)
        return mu, logvar.clamp(-12, 8)

    def decode(self, z):
        return self.decoder(z)

    def forward(self, x, generator: torch.Generator | None = None):
        mu, logvar = self.encode(x)
        eps = torch.randn(mu.shape, generator=generator, device=mu.device) if generator is not None else torch.randn_like(mu)
        z = mu + eps * (0.5 * logvar).exp()
        return self.decode(z), mu, logvar

    def mean_image(self, out):
        """Pixels in [0, 1] that p(x|z) is centred on."""
        out = out.float()
        return torch.sigmoid(out) if self.likelihood == "bernoulli" else out.clamp(0, 1)


class DCGANGenerator(nn.Module):
    """z (+ one-hot class when conditional) -> image in [0, 1]; transposed convs with batch norm."""

    def __init__(self, in_channels: int = 1, image_size=28, latent_dim: int = 64, width: int = 64, num_classes: int = 0):
        super().__init__()
        self.latent_dim, self.num_classes = latent_dim, num_classes
        sizes = plan_sizes(*_size(image_size), smallest=4)
        n = len(sizes) - 1
        chans = [width * 2 ** min(i, 3) for i in range(n)][::-1] if n else [width]
        h, w = sizes[-1]
        self.start = (chans[0], h, w)
        self.fc = nn.Sequential(nn.Linear(latent_dim + num_classes, chans[0] * h * w, bias=False),
                                nn.BatchNorm1d(chans[0] * h * w), nn.ReLU(inplace=True))
        layers: list[nn.Module] = []
        for j, i in enumerate(range(n, 1, -1)):
            layers += [_up(chans[j], chans[j + 1], sizes[i], sizes[i - 1]), nn.BatchNorm2d(chans[j + 1]), nn.ReLU(inplace=True)]
        last = chans[-1]
        if n:
            layers.append(_up(last, in_channels, sizes[1], sizes[0]))
        else:
            layers.append(nn.Conv2d(last, in_channels, 3, 1, 1))
        self.net = nn.Sequential(*layers)

    def forward(self, z, labels: torch.Tensor | None = None):
        if self.num_classes:
            if labels is None:
                raise ValueError("a conditional generator needs labels")
            z = torch.cat([z, nn.functional.one_hot(labels, self.num_classes).to(z.dtype)], dim=1)
        return torch.sigmoid(self.net(self.fc(z).view(-1, *self.start)).float())


class DCGANDiscriminator(nn.Module):
    """image (+ class maps when conditional) -> one real/fake logit; strided convs, LeakyReLU.

    spectral_norm=False is the DCGAN discriminator (batch norm after every conv but the first).
    spectral_norm=True divides every conv and linear weight by its largest singular value (one power
    iteration per training forward, Miyato et al. 2018) and drops batch norm: D becomes roughly
    1-Lipschitz layer by layer, so its logits cannot saturate and G's gradients stay informative, and
    D's output for one image no longer depends on the rest of the batch (the SNGAN/BigGAN discriminator).
    """

    def __init__(self, in_channels: int = 1, image_size=28, width: int = 64, num_classes: int = 0,
                 spectral_norm: bool = False):
        super().__init__()
        self.num_classes = num_classes
        sn = nn.utils.parametrizations.spectral_norm if spectral_norm else (lambda m: m)
        sizes = plan_sizes(*_size(image_size), smallest=4)
        n = len(sizes) - 1
        chans = [in_channels + num_classes] + [width * 2 ** min(i, 3) for i in range(n)]
        layers: list[nn.Module] = []
        for i, (cin, cout) in enumerate(zip(chans[:-1], chans[1:])):
            layers.append(sn(nn.Conv2d(cin, cout, 3, 2, 1)))
            if i > 0 and not spectral_norm:
                layers.append(nn.BatchNorm2d(cout))
            layers.append(nn.LeakyReLU(0.2, inplace=True))
        h, w = sizes[-1]
        layers += [nn.Flatten(), sn(nn.Linear(chans[-1] * h * w, 1))]
        self.net = nn.Sequential(*layers)

    def forward(self, x, labels: torch.Tensor | None = None):
        if self.num_classes:
            if labels is None:
                raise ValueError("a conditional discriminator needs labels")
            maps = nn.functional.one_hot(labels, self.num_classes).to(x.dtype)[:, :, None, None]
            x = torch.cat([x * 2 - 1, maps.expand(-1, -1, *x.shape[2:])], dim=1)
        else:
            x = x * 2 - 1
        return self.net(x).float().squeeze(1)


class _DownBlock(nn.Module):
    """A residual block of the SNGAN discriminator (Miyato et al. 2018): [ReLU] conv3x3, ReLU,
    conv3x3, 2x average pool, plus a 1x1-conv + pool shortcut. The first block of a network skips
    the leading ReLU (its input is the image). Pooling rounds up (ceil_mode), so 7 -> 4 like the
    stride-2 pyramid of `plan_sizes`."""

    def __init__(self, cin: int, cout: int, sn, first: bool):
        super().__init__()
        self.first = first
        self.c1, self.c2 = sn(nn.Conv2d(cin, cout, 3, 1, 1)), sn(nn.Conv2d(cout, cout, 3, 1, 1))
        self.skip = sn(nn.Conv2d(cin, cout, 1))

    def forward(self, x):
        pool = lambda t: nn.functional.avg_pool2d(t, 2, ceil_mode=True, count_include_pad=False)  # noqa: E731
        h = x if self.first else nn.functional.relu(x)
        h = self.c2(nn.functional.relu(self.c1(h)))
        return pool(h) + (self.skip(pool(x)) if self.first else pool(self.skip(x)))


class ResNetDiscriminator(nn.Module):
    """image -> one real/fake logit: the SNGAN/BigGAN residual discriminator, sized by `plan_sizes`
    (28 -> 14 -> 7 -> 4 for digits), spectral norm on every layer, no batch norm, ReLU, then a sum
    over positions and a linear layer. Conditional (num_classes > 0) it is a projection
    discriminator (Miyato & Koyama 2018): logit = linear(phi(x)) + <embed(y), phi(x)>, the class
    entering as an inner product with the features instead of as extra input channels."""

    def __init__(self, in_channels: int = 1, image_size=28, width: int = 32, num_classes: int = 0):
        super().__init__()
        self.num_classes = num_classes
        sn = nn.utils.parametrizations.spectral_norm
        n = max(1, len(plan_sizes(*_size(image_size), smallest=4)) - 1)
        chans = [in_channels] + [width * 2 ** min(i, 3) for i in range(n)]
        self.blocks = nn.Sequential(*[_DownBlock(cin, cout, sn, first=i == 0)
                                      for i, (cin, cout) in enumerate(zip(chans[:-1], chans[1:]))])
        self.linear = sn(nn.Linear(chans[-1], 1))
        self.embed = sn(nn.Embedding(num_classes, chans[-1])) if num_classes else None

    def forward(self, x, labels: torch.Tensor | None = None):
        phi = nn.functional.relu(self.blocks(x * 2 - 1)).sum((2, 3)).float()
        out = self.linear(phi).squeeze(1)
        if self.num_classes:
            if labels is None:
                raise ValueError("a conditional discriminator needs labels")
            out = out + (self.embed(labels).float() * phi).sum(1)
        return out.float()


# Constructors take exactly the keyword arguments a checkpoint's model_kwargs hold (autoencode:
# in_channels, image_size, latent_dim, width; vae: those plus likelihood; gan: see the classes), so
# an unknown argument is a TypeError naming it, never silently dropped.

@register("ae-dense")
def ae_dense(in_channels: int = 1, image_size=28, latent_dim: int = 16, width: int = 32) -> AutoEncoder:
    return AutoEncoder("dense", in_channels, image_size, latent_dim, width)


@register("ae-conv")
def ae_conv(in_channels: int = 1, image_size=28, latent_dim: int = 16, width: int = 32) -> AutoEncoder:
    return AutoEncoder("conv", in_channels, image_size, latent_dim, width)


@register("vae-dense")
def vae_dense(in_channels: int = 1, image_size=28, latent_dim: int = 16, width: int = 32,
              likelihood: str = "bernoulli") -> VAE:
    return VAE("dense", in_channels, image_size, latent_dim, width, likelihood)


@register("vae-conv")
def vae_conv(in_channels: int = 1, image_size=28, latent_dim: int = 16, width: int = 32,
             likelihood: str = "bernoulli") -> VAE:
    return VAE("conv", in_channels, image_size, latent_dim, width, likelihood)


register("dcgan-g")(DCGANGenerator)


@register("dcgan-d")
def gan_discriminator(in_channels: int = 1, image_size=28, width: int = 64, num_classes: int = 0,
                      spectral_norm: bool = False, arch: str = "dcgan") -> nn.Module:
    """The GAN task's D from its checkpointed d_kwargs. `arch` "dcgan" (the default, so d_kwargs
    written before `arch` existed rebuild the D they were trained with) or "resnet" (always
    spectrally normalised; `spectral_norm` is then stored as True)."""
    if arch == "resnet":
        return ResNetDiscriminator(in_channels, image_size, width, num_classes)
    if arch != "dcgan":
        raise ValueError(f"unknown discriminator arch {arch!r}")
    return DCGANDiscriminator(in_channels, image_size, width, num_classes, spectral_norm)
