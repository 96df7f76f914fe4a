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
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
import torch.nn.functional as F

from ..data import Dataset
from ..data.loader import Batches
from ..data.preprocess import PreprocessSpec
from ..engine.device import Runtime, select_runtime
from ..engine.trainer import TrainConfig
from ..errors import UsageError
from ..models import create_model
from ..recipes import with_recipe
from ..runs import new_run_dir
from .generative_common import (Run, base_results, finish_run, first_images, held_out, load_generative, load_images,
                                map_batches, read_images, resume_checkpoint, run_name, split_options, split_sizes,
                                train_run)

TASK = "vae"
MODELS = ("dense", "conv")
LIKELIHOODS = ("bernoulli", "gaussian")


@dataclass
class VAEOptions:
    data: str = "digits"
    data_dir: str | None = None
    model: str = "conv"
    latent_dim: int = 16
    width: int = 32
    beta: float = 1.0
    likelihood: str = "bernoulli"   # bernoulli for binary-ish images (digits), gaussian for photos
    image_size: int | None = None
    val_fraction: float = 0.0
    download: bool = True

    def validate(self) -> None:
        if self.model not in MODELS:
            raise UsageError(f"--model {self.model}: choose dense or conv")
        if self.latent_dim < 1:
            raise UsageError("--latent-dim must be >= 1")
        if self.width < 1:
            raise UsageError("--width must be >= 1")
        if not (self.beta >= 0 and math.isfinite(self.beta)):
            raise UsageError("--beta must be a number >= 0")
        if self.likelihood not in LIKELIHOODS:
            raise UsageError(f"--likelihood {self.likelihood}: choose bernoulli or gaussian")


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


class VAETask:
    def __init__(self, ds: Dataset, model, opts: VAEOptions, cfg: TrainConfig, rt: Runtime, model_kwargs: dict):
        self.ds, self.model, self.opts, self.cfg, self.rt, self.model_kwargs = ds, model, opts, cfg, rt, model_kwargs
        self.train_batches = Batches(ds.train, cfg.batch_size, device=rt.device, shuffle=True, drop_last=True,
                                     seed=cfg.seed)
        self.eval_split, self.eval_name = held_out(ds)

    def training_step(self, model, batch):
        x, _ = batch
        out, mu, logvar = model(x)
        recon, kl = elbo_terms(x, out, mu, logvar, self.opts.likelihood, getattr(model, "log_sigma", None))
        loss = (recon + self.opts.beta * kl).mean()
        return loss, {"neg_elbo": (recon + kl).mean().detach(), "recon": recon.mean().detach(), "kl": kl.mean().detach()}

    @torch.no_grad()
    def evaluate(self, model) -> dict[str, float]:
        was = model.training
        model.eval()
        res = evaluate_elbo(model, self.eval_split, self.rt, self.opts.likelihood)
        model.train(was)
        return {f"{self.eval_name}_{k}": v for k, v in res.items()}

    def checkpoint_meta(self) -> dict:
        return {"task": TASK, "model_name": f"vae-{self.opts.model}", "model_kwargs": self.model_kwargs,
                "classes": list(self.ds.classes) if self.ds.classes else None, "preprocess": self.ds.spec.to_dict(),
                "options": asdict(self.opts)}


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

def _build(opts: VAEOptions, cfg: TrainConfig):
    opts.validate()
    ds = load_images(opts.data, data_dir=opts.data_dir, download=opts.download, image_size=opts.image_size,
                     val_fraction=opts.val_fraction, seed=cfg.seed)
    c, h, w = ds.train.shape
    kwargs = {"in_channels": c, "image_size": [h, w], "latent_dim": opts.latent_dim, "width": opts.width,
              "likelihood": opts.likelihood}
    return ds, kwargs


def train(data: str = "digits", *, model: str = "conv", out: str | Path | None = None,
          resume: str | Path | None = None, **options) -> Run:
    """Train a VAE and write a run folder (ELBO curves, samples, reconstructions, manifold, report)."""
    if resume is not None:
        state, opts, cfg = resume_checkpoint(Path(resume), TASK, VAEOptions, options.get("progress", True))
        ds, _ = _build(opts, cfg)
        return _train_and_report(Path(resume), ds, opts, cfg, state["model_kwargs"], state)
    options = with_recipe(TASK, {"monitor": "val_neg_elbo", "mode": "min", **options})
    opts, cfg = split_options(options, VAEOptions, data=str(data), model=model)
    ds, kwargs = _build(opts, cfg)
    run_dir = new_run_dir(TASK, run_name(opts.data, opts.model), out)
    return _train_and_report(run_dir, ds, opts, cfg, kwargs, None)


def _train_and_report(run_dir: Path, ds: Dataset, opts: VAEOptions, cfg, kwargs, resume_state) -> Run:
    rt = select_runtime(cfg.device, cfg.precision)
    torch.manual_seed(cfg.seed)
    net = create_model(f"vae-{opts.model}", **kwargs)
    task = VAETask(ds, net, opts, cfg, rt, kwargs)
    config = {"task": TASK, **asdict(opts), "train": asdict(cfg), "runtime": rt.describe(), "model_kwargs": kwargs,
              "preprocess": ds.spec.to_dict(),
              "splits": split_sizes(ds)}
    result = train_run(TASK, run_dir, task, cfg, config, resume_state)
    results = base_results(result, rt)
    results.update(_final_report(run_dir, net, ds, opts, rt))
    finish_run(run_dir, f"lensforge vae: {opts.data} / {opts.model} (latent {opts.latent_dim}, beta {opts.beta})",
               results, config,
               [("Samples from the prior (decoder means)", "samples.png"),
                ("Reconstructions: input (top), output (bottom)", "reconstructions.png"),
                ("Interpolation between two held-out images", "interpolation.png"),
                ("2-D latent manifold (decoded Gaussian quantiles)", "manifold.png"),
                ("Latent means of held-out images", "latent.png")], result.history)
    return Run(run_dir, results, result.history)


def _final_report(run_dir: Path, net, ds: Dataset, opts: VAEOptions, rt: Runtime) -> dict:
    from ..report import image_grid
    from ..report.latent import plot_latent_scatter

    split, name = held_out(ds)
    res = evaluate_elbo(net, split, rt, opts.likelihood)
    out = {"eval_split": name, f"{name}_images": len(split), **{f"{name}_{k}": v for k, v in res.items()},
           "units": "nats per image", "likelihood": opts.likelihood, "beta": opts.beta}
    gen = VAEGenerator(net, rt, ds.spec, ds.classes)
    image_grid(gen.sample(64, seed=0), run_dir / "samples.png", ncols=8)
    x, _ = first_images(split, 16)
    image_grid(torch.cat([x, gen.reconstruct(x)]), run_dir / "reconstructions.png", ncols=len(x))
    if len(x) >= 2:
        image_grid(gen.interpolate(x[0], x[1], 10), run_dir / "interpolation.png", ncols=10)
    if opts.latent_dim == 2:
        image_grid(gen.manifold(15), run_dir / "manifold.png", ncols=15)
    if opts.latent_dim in (2, 3):
        xs, ys = split.take(torch.arange(min(len(split), 5000)))
        mu = gen.encode(xs.float() / 255)
        plot_latent_scatter(mu.numpy(), run_dir / "latent.png", labels=ys.numpy() if ys is not None else None,
                            class_names=ds.classes, title=f"{opts.data} {name}")
    return out


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

    def read(self, files, strict: bool = True):
        return read_images(files, self.spec, strict=strict)


def load(weights: str | Path, device: str = "auto") -> VAEGenerator:
    ckpt, model, rt = load_generative(weights, TASK, device)
    return VAEGenerator(model, rt, PreprocessSpec.from_dict(ckpt["preprocess"]), ckpt.get("classes"))
