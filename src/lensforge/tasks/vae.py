"""Variational autoencoders: train, sample, interpolate, and the 2-D latent manifold.

    run = train("mnist", data_dir="../shared/datasets", model="conv", latent_dim=32, epochs=15)
    vae = load(run.dir)
    vae.sample(64)                       # (64, C, H, W) in [0, 1]
    vae.interpolate(img_a, img_b, 10)    # decoded path between the two images' latent means

Losses are reported as the negative ELBO in nats per image, split into the reconstruction term
(-E_q log p(x|z)) and KL(q(z|x) || N(0, I)), the way the VAE literature quotes them, so a run
can be compared with published numbers. `beta` only weights the KL in the *training* loss;
the reported ELBO always uses beta = 1, otherwise it would not be a bound.
"""
from __future__ import annotations

import math
from pathlib import Path

import torch
import torch.nn.functional as F

from ..data.loader import Batches
from ..data.preprocess import PreprocessSpec
from ..engine.device import Runtime
from ..errors import UsageError
from ..specs.vae import VAEOptions
from .generative_common import (GenerativeTask, as_inputs, first_images, load_generative, map_batches, read_inputs,
                                save_grid)
from .apply import accepts_onnx
from .lifecycle import Run, run

TASK = "vae"


def elbo_terms(x: torch.Tensor, out: torch.Tensor, mu: torch.Tensor, logvar: torch.Tensor,
               likelihood: str = "bernoulli", log_sigma: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-image (reconstruction nats, KL nats); their sum is the negative ELBO.

    Bernoulli: -log p(x|z) = BCE(logits, x) summed over pixels (for grey levels in (0, 1) this is
    the usual cross-entropy surrogate, as in pytorch/examples). Gaussian: a per-channel learned
    sigma, -log N(x; mean, sigma^2) summed over pixels. KL is the closed form for a diagonal
    Gaussian posterior against N(0, I).
    """
    x, out, mu, logvar = x.float(), out.float(), mu.float(), logvar.float()
    if likelihood == "bernoulli":
        recon = F.binary_cross_entropy_with_logits(out, x, reduction="none").flatten(1).sum(1)
    else:
        if log_sigma is None:
            raise ValueError("gaussian likelihood needs log_sigma")
        ls = log_sigma.float().expand_as(x)
        nll = 0.5 * ((x - out) / ls.exp()).pow(2) + ls + 0.5 * math.log(2 * math.pi)
        recon = nll.flatten(1).sum(1)
    kl = 0.5 * (mu.pow(2) + logvar.exp() - 1 - logvar).sum(1)
    return recon, kl


class VAETask(GenerativeTask):
    """Maximum ELBO (KL weighted by beta in training); reported in nats per image with beta = 1."""

    name, Options = TASK, VAEOptions

    def network(self, channels: int, size: list[int]) -> tuple[str, dict]:
        o = self.opts
        return f"vae-{o.model}", {"in_channels": channels, "image_size": size, "latent_dim": o.latent_dim,
                                  "width": o.width, "likelihood": o.likelihood}

    def title(self) -> str:
        o = self.opts
        return f"lensforge vae: {o.data} / {o.model} (latent {o.latent_dim}, beta {o.beta})"

    def training_step(self, model, batch):
        x, _ = batch
        out, mu, logvar = model(x)
        recon, kl = elbo_terms(x, out, mu, logvar, self.opts.likelihood, getattr(model, "log_sigma", None))
        loss = (recon + self.opts.beta * kl).mean()
        return loss, {"neg_elbo": (recon + kl).mean().detach(), "recon": recon.mean().detach(), "kl": kl.mean().detach()}

    def held_out_metrics(self, model) -> dict[str, float]:
        return evaluate_elbo(model, self.eval_split, self.rt, self.opts.likelihood)

    def final_results(self, run_dir: Path, fit) -> dict:
        from ..report.latent import plot_latent_scatter

        ds, net, rt, opts = self.ds, self.model, self.rt, self.opts
        split, name = self.eval_split, self.eval_name
        res = evaluate_elbo(net, split, rt, opts.likelihood)
        out = {"eval_split": name, f"{name}_images": len(split), **{f"{name}_{k}": v for k, v in res.items()},
               "units": "nats per image", "likelihood": opts.likelihood, "beta": opts.beta}
        gen = VAEGenerator(net, rt, ds.spec, ds.classes)
        save_grid(gen.sample(64, seed=0), run_dir / "samples.png", ncols=8)
        self.figures.append(("Samples from the prior (decoder means)", "samples.png"))
        x, _ = first_images(split, 16)
        save_grid(torch.cat([x, gen.reconstruct(x)]), run_dir / "reconstructions.png", ncols=len(x))
        self.figures.append(("Reconstructions: input (top), output (bottom)", "reconstructions.png"))
        if len(x) >= 2:
            save_grid(gen.interpolate(x[0], x[1], 10), run_dir / "interpolation.png", ncols=10)
            self.figures.append(("Interpolation between two held-out images", "interpolation.png"))
        if opts.latent_dim == 2:
            save_grid(gen.manifold(15), run_dir / "manifold.png", ncols=15)
            self.figures.append(("2-D latent manifold (decoded Gaussian quantiles)", "manifold.png"))
        if opts.latent_dim in (2, 3):
            xs, ys = split.take(torch.arange(min(len(split), 5000)))
            plot_latent_scatter(gen.encode(xs.float() / 255).numpy(), run_dir / "latent.png",
                                labels=ys.numpy() if ys is not None else None, class_names=ds.classes,
                                title=f"{opts.data} {name}")
            self.figures.append(("Latent means of held-out images", "latent.png"))
        return out


@torch.no_grad()
def evaluate_elbo(model, split, rt: Runtime, likelihood: str, batch_size: int = 500, seed: int = 0) -> dict[str, float]:
    """Mean negative ELBO (one posterior sample per image, drawn from a fixed seed), recon and KL in nats."""
    g = torch.Generator(device=rt.device).manual_seed(seed)
    tot = {"neg_elbo": 0.0, "recon": 0.0, "kl": 0.0}
    n = 0
    for x, _ in Batches(split, batch_size, device=rt.device):
        with rt.autocast():
            out, mu, logvar = model(x, generator=g)
        recon, kl = elbo_terms(x, out, mu, logvar, likelihood, getattr(model, "log_sigma", None))
        tot["recon"] += recon.sum().item()
        tot["kl"] += kl.sum().item()
        tot["neg_elbo"] += (recon + kl).sum().item()
        n += len(x)
    return {k: v / n for k, v in tot.items()}


# ----------------------------------------------------------------------------- training

def train(data: str | None = None, *, out: str | Path | None = None, resume: str | Path | None = None,
          **options) -> Run:
    """Train a VAE and write a run folder (ELBO curves, samples, reconstructions, manifold, report).

    `options` are any VAEOptions or TrainConfig fields; defaults are the vae recipe (lensforge.recipes).
    """
    return run(VAETask, data, out=out, resume=resume, **options)


# ----------------------------------------------------------------------------- loaded models

class VAEGenerator:
    """Sampling, encoding and interpolation with a trained VAE (inputs/outputs in [0, 1])."""

    def __init__(self, model, rt: Runtime, spec: PreprocessSpec, classes=None):
        self.model, self.rt, self.spec, self.classes = model.eval(), rt, spec, classes

    @torch.no_grad()
    def sample(self, n: int, seed: int = 0) -> torch.Tensor:
        if n < 1:
            raise UsageError("--n must be >= 1")
        z = torch.randn(n, self.model.latent_dim, generator=torch.Generator().manual_seed(seed))
        return self.decode(z)

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        return map_batches(lambda b: self.model.mean_image(self.model.decode(b)), z, self.rt.device)

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """Posterior means: the deterministic code of each image."""
        return map_batches(lambda b: self.model.encode(b)[0], x, self.rt.device)

    def reconstruct(self, x: torch.Tensor) -> torch.Tensor:
        return self.decode(self.encode(x))

    def interpolate(self, a: torch.Tensor, b: torch.Tensor, steps: int = 10) -> torch.Tensor:
        """Decoded straight line between the latent means of images a and b (endpoints included)."""
        if steps < 2:
            raise UsageError("--steps must be >= 2")
        za, zb = self.encode(torch.stack([a, b]))
        t = torch.linspace(0, 1, steps)[:, None]
        return self.decode((1 - t) * za + t * zb)

    def manifold(self, n: int = 15) -> torch.Tensor:
        """n x n decoded grid over the 2-D latent, at evenly spaced Gaussian quantiles (so the grid
        covers where the prior puts its mass, not a box that is mostly empty)."""
        if self.model.latent_dim != 2:
            raise UsageError(f"the latent manifold needs --latent-dim 2, this model has {self.model.latent_dim}")
        q = torch.distributions.Normal(0, 1).icdf(torch.linspace(0.05, 0.95, n))
        zy, zx = torch.meshgrid(q.flip(0), q, indexing="ij")
        return self.decode(torch.stack([zx.flatten(), zy.flatten()], 1))

    def read(self, files):
        """generative_common.Inputs: one Record per file, the readable ones prepared as in training."""
        return read_inputs(as_inputs(files), self.spec)


@accepts_onnx(TASK)
def load(weights: str | Path, device: str = "auto") -> VAEGenerator:
    ckpt, model, rt = load_generative(weights, TASK, device)
    return VAEGenerator(model, rt, PreprocessSpec.from_dict(ckpt["preprocess"]), ckpt.get("classes"))
