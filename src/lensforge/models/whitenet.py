"""`whitenet`: the fast network for small colour images (CIFAR-10 and any 32x32 colour folder).

The design follows what Keller Jordan's airbench measured on CIFAR-10 (94% in ~4 s on an A100),
rewritten for lensforge's engine and a CPU:

- a frozen first layer that *whitens* 2x2 patches: its filters are the eigenvectors of the
  training patches' covariance scaled by 1/sqrt(eigenvalue), and their negatives, so the next
  layer sees decorrelated, unit-variance inputs from the first step (`fit_to_data`);
- three conv groups (conv, max-pool, BN, GELU, conv, BN, GELU) of w, 4w and 4w channels (w = 64
  as airbench; the CIFAR recipe takes 96, recipes.py);
  convolutions start as identities on their first input channels (dirac), which trains faster
  from scratch than a purely random start;
- batch norm without a learned scale, whose biases learn 64x faster than the rest
  (`optimizer_groups`), and a fast-moving running mean (momentum 0.4);
- a global max-pool, a bias-free linear layer and logits scaled by 1/9 (a temperature that lets
  the large learning rate work with label smoothing).

It normalises its own inputs (images in [0, 1]) like every lensforge classifier.
"""
from __future__ import annotations

from typing import Sequence

import torch
from torch import nn

from . import register
from .classifiers import Normalize

#: Learning-rate multiplier of the batch-norm biases (the only trained part of the norms).
BN_BIAS_LR_SCALE = 64.0


class _BatchNorm(nn.BatchNorm2d):
    """Batch norm whose scale stays 1: only the bias trains (with BN_BIAS_LR_SCALE)."""

    def __init__(self, channels: int):
        super().__init__(channels, momentum=0.4)
        self.weight.requires_grad_(False)


def _conv(cin: int, cout: int) -> nn.Conv2d:
    conv = nn.Conv2d(cin, cout, 3, padding=1, bias=False)
    with torch.no_grad():
        n = min(cin, cout)
        nn.init.dirac_(conv.weight[:n, :n])
    return conv


class _Group(nn.Sequential):
    def __init__(self, cin: int, cout: int):
        super().__init__(_conv(cin, cout), nn.MaxPool2d(2), _BatchNorm(cout), nn.GELU(),
                         _conv(cout, cout), _BatchNorm(cout), nn.GELU())


class WhiteNet(nn.Module):
    def __init__(self, in_channels: int = 3, num_classes: int = 10, image_size=32, width: int = 64,
                 whiten_kernel: int = 2, logit_scale: float = 1 / 9,
                 mean: Sequence[float] | None = None, std: Sequence[float] | None = None):
        super().__init__()
        del image_size  # any size >= 16 px works: the head pools globally
        widths = (width, 4 * width, 4 * width)
        k = whiten_kernel
        self.norm = Normalize(in_channels, mean, std)
        self.whiten = nn.Conv2d(in_channels, 2 * in_channels * k * k, k, bias=True)
        self.whiten.weight.requires_grad_(False)   # set from the data by fit_to_data, never trained
        nn.init.zeros_(self.whiten.bias)
        self.body = nn.Sequential(nn.GELU(), _Group(self.whiten.out_channels, widths[0]),
                                  _Group(widths[0], widths[1]), _Group(widths[1], widths[2]))
        self.pool = nn.AdaptiveMaxPool2d(1)
        self.head = nn.Linear(widths[2], num_classes, bias=False)
        self.logit_scale = logit_scale

    def forward(self, x):
        # The whitening layer runs in fp32 even under bf16 autocast: its filters for the weakest
        # patch directions are ~30x gains on differences of neighbouring pixels, and bf16's 8-bit
        # mantissa (0.4% per pixel) turned those channels into noise. It costs 0.3 MFLOP per image.
        with torch.autocast(x.device.type, enabled=False):
            x = self.whiten(self.norm(x.float()))
        x = self.body(x)
        return self.head(self.pool(x).flatten(1)) * self.logit_scale

    @torch.no_grad()
    def fit_to_data(self, images: torch.Tensor, eps: float = 5e-4) -> None:
        """Set the whitening filters from training images (N, C, H, W), uint8 or floats in [0, 1]
        (the scale the network is fed: a uint8 sample taken as 0-255 floats gave filters 255x too
        weak, and a run that diverged at its peak learning rate): the covariance of
        all k x k patches, its eigenvectors scaled by 1/sqrt(eigenvalue + eps), and their negatives
        (so a GELU after it keeps both signs). Called once before training, not on resume."""
        w = self.whiten.weight
        c, k = w.shape[1], w.shape[2]
        cov, count = torch.zeros(c * k * k, c * k * k, dtype=torch.float64), 0
        for chunk in images.split(1000):                               # ~45 MB of patches at a time
            x = chunk.float().to(w.device)
            x = self.norm(x if chunk.is_floating_point() else x / 255)
            patches = x.unfold(2, k, 1).unfold(3, k, 1)                # N, C, H', W', k, k
            patches = patches.permute(0, 2, 3, 1, 4, 5).reshape(-1, c * k * k).double().cpu()
            cov += patches.T @ patches
            count += len(patches)
        cov /= count
        values, vectors = torch.linalg.eigh(cov)                       # ascending
        values, vectors = values.flip(0), vectors.flip(1)              # strongest first
        filters = (vectors.T / (values.clamp_min(0) + eps).sqrt()[:, None]).reshape(-1, c, k, k)
        w.copy_(torch.cat([filters, -filters]).to(w.dtype))

    def optimizer_groups(self) -> list[dict]:
        """Batch-norm biases at BN_BIAS_LR_SCALE x the learning rate; everything trainable decays
        (engine/trainer.build_optimizer divides each group's decay by its scale), except kernels
        under --optimizer muon, whose norms stay fixed."""
        norm = [p for m in self.modules() if isinstance(m, _BatchNorm) for p in m.parameters() if p.requires_grad]
        ids = {id(p) for p in norm}
        rest = [p for p in self.parameters() if p.requires_grad and id(p) not in ids]
        # Every kernel is followed by batch norm, so its scale is free: Muon keeps it fixed instead of decaying it.
        return [{"params": rest, "lr_scale": 1.0, "scale_invariant": True},
                {"params": norm, "lr_scale": BN_BIAS_LR_SCALE}]


register("whitenet")(WhiteNet)
