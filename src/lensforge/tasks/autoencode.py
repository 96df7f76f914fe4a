"""Autoencoders (dense or conv), optionally denoising: train, denoise images, score anomalies.

    run = train("fashion-mnist", data_dir="../shared/datasets", model="conv", latent_dim=3, epochs=10)
    ae = load(run.dir)
    ae.reconstruct(x)                  # x: (N, C, H, W) floats in [0, 1]
    ae.score_files(["odd.png"])        # reconstruction error per image: high = unlike the training data

The loss is the mean squared error on [0, 1] pixels, the same number the report and the PCA
baseline are measured in, so "beats PCA" is a like-for-like statement. The decoder's output is
linear and only clamped to [0, 1] when read out: a sigmoid output under an MSE loss saturates on
dark backgrounds and can collapse to an all-black image it cannot climb out of.
"""
from __future__ import annotations

import sys
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Sequence

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
from .generative_common import (Run, base_results, expand_images, finish_run, first_images, held_out, load_generative,
                                load_images, map_batches, psnr, read_images, resume_checkpoint, run_name, save_png,
                                split_options, split_sizes, train_run, write_csv)

TASK = "autoencode"
MODELS = ("dense", "conv")


@dataclass
class AutoencodeOptions:
    data: str = "digits"
    data_dir: str | None = None
    model: str = "conv"
    latent_dim: int = 16
    width: int = 32
    image_size: int | None = None
    denoise: float = 0.0            # std of Gaussian noise added to inputs (targets stay clean); 0 = plain AE
    val_fraction: float = 0.0
    download: bool = True

    def validate(self) -> None:
        if self.model not in MODELS:
            raise UsageError(f"--model {self.model}: choose dense or conv")
        if self.latent_dim < 1:
            raise UsageError("--latent-dim must be >= 1")
        if self.width < 1:
            raise UsageError("--width must be >= 1")
        if not 0 <= self.denoise <= 2:
            raise UsageError("--denoise is a noise std on [0, 1] pixels: use a value in [0, 2], e.g. 0.3")


def add_noise(x: torch.Tensor, sigma: float, generator: torch.Generator | None = None) -> torch.Tensor:
    """Gaussian noise clipped back to valid pixels: what a real noisy image looks like."""
    noise = torch.randn(x.shape, generator=generator, device=x.device) if generator is not None else torch.randn_like(x)
    return (x + sigma * noise).clamp(0, 1)


def _fixed_noise(x: torch.Tensor, sigma: float, seed: int = 1234) -> torch.Tensor:
    """Evaluation noise drawn from a fixed seed, so epochs and runs are compared on the same noisy images."""
    return add_noise(x.cpu(), sigma, torch.Generator().manual_seed(seed)).to(x.device)


class AutoencodeTask:
    def __init__(self, ds: Dataset, model: torch.nn.Module, opts: AutoencodeOptions, cfg: TrainConfig,
                 rt: Runtime, model_kwargs: dict):
        self.ds, self.model, self.opts, self.cfg, self.rt, self.model_kwargs = ds, model, opts, cfg, rt, model_kwargs
        self.train_batches = Batches(ds.train, cfg.batch_size, device=rt.device, shuffle=True, drop_last=True,
                                     seed=cfg.seed)
        self.eval_split, self.eval_name = held_out(ds)

    def training_step(self, model, batch):
        x, _ = batch
        inp = add_noise(x, self.opts.denoise) if self.opts.denoise > 0 else x
        loss = F.mse_loss(model(inp).float(), x)
        return loss, {"mse": loss.detach()}

    @torch.no_grad()
    def evaluate(self, model) -> dict[str, float]:
        was = model.training
        model.eval()
        errs = per_image_errors(model, self.eval_split, self.rt, self.opts.denoise)
        model.train(was)
        return {f"{self.eval_name}_mse": errs["mse"].mean().item(), f"{self.eval_name}_psnr": errs["psnr"].mean().item()}

    def checkpoint_meta(self) -> dict:
        return {"task": TASK, "model_name": f"ae-{self.opts.model}", "model_kwargs": self.model_kwargs,
                "classes": list(self.ds.classes) if self.ds.classes else None, "preprocess": self.ds.spec.to_dict(),
                "options": asdict(self.opts)}


@torch.no_grad()
def per_image_errors(model, split, rt: Runtime, sigma: float = 0.0, batch_size: int = 500) -> dict[str, torch.Tensor]:
    """Per-image MSE and PSNR of the reconstruction (of the noisy input when sigma > 0, against the
    clean image), plus the noisy input's own PSNR as the baseline a denoiser must beat."""
    mse, ps, noisy_ps = [], [], []
    for i, (x, _) in enumerate(Batches(split, batch_size, device=rt.device)):
        inp = _fixed_noise(x, sigma, seed=1234 + i) if sigma > 0 else x
        with rt.autocast():
            out = model(inp).float().clamp(0, 1)
        mse.append((out - x).pow(2).flatten(1).mean(1).cpu())
        ps.append(psnr(out, x).cpu())
        if sigma > 0:
            noisy_ps.append(psnr(inp, x).cpu())
    res = {"mse": torch.cat(mse), "psnr": torch.cat(ps)}
    if sigma > 0:
        res["noisy_psnr"] = torch.cat(noisy_ps)
    return res


def pca_baseline_mse(train, test, k: int, max_train: int = 60000) -> float:
    """Test MSE on [0, 1] pixels of the best rank-k linear reconstruction fitted on train: the bar a
    k-dimensional autoencoder has to clear to have learned anything non-linear."""
    n = min(len(train), max_train)
    x, _ = train.take(torch.arange(n))
    x = x.flatten(1).double() / 255
    mean = x.mean(0, keepdim=True)
    xc = x - mean
    evals, evecs = torch.linalg.eigh(xc.T @ xc)
    basis = evecs[:, -k:]                       # top-k principal directions
    t, _ = test.take(torch.arange(len(test)))
    t = t.flatten(1).double() / 255 - mean
    recon = (t @ basis) @ basis.T
    return (recon - t).pow(2).mean().item()


# ----------------------------------------------------------------------------- training

def _build(opts: AutoencodeOptions, cfg: TrainConfig):
    opts.validate()
    ds = load_images(opts.data, data_dir=opts.data_dir, download=opts.download, image_size=opts.image_size,
                     val_fraction=opts.val_fraction, seed=cfg.seed)
    c, h, w = ds.train.shape
    kwargs = {"in_channels": c, "image_size": [h, w], "latent_dim": opts.latent_dim, "width": opts.width}
    return ds, kwargs


def train(data: str = "digits", *, model: str = "conv", out: str | Path | None = None,
          resume: str | Path | None = None, **options) -> Run:
    """Train an autoencoder and write a run folder (reconstructions, latent plot, errors, report)."""
    if resume is not None:
        state, opts, cfg = resume_checkpoint(Path(resume), TASK, AutoencodeOptions, options.get("progress", True))
        ds, kwargs = _build(opts, cfg)
        return _train_and_report(Path(resume), ds, opts, cfg, state["model_kwargs"], state)
    options = with_recipe(TASK, {"monitor": "val_mse", "mode": "min", **options})
    opts, cfg = split_options(options, AutoencodeOptions, data=str(data), model=model)
    ds, kwargs = _build(opts, cfg)
    run_dir = new_run_dir(TASK, run_name(opts.data, f"{opts.model}{'-denoise' if opts.denoise else ''}"), out)
    return _train_and_report(run_dir, ds, opts, cfg, kwargs, None)


def _train_and_report(run_dir: Path, ds: Dataset, opts, cfg, kwargs, resume_state) -> Run:
    rt = select_runtime(cfg.device, cfg.precision)
    torch.manual_seed(cfg.seed)
    net = create_model(f"ae-{opts.model}", **kwargs)
    task = AutoencodeTask(ds, net, opts, cfg, rt, kwargs)
    config = {"task": TASK, **asdict(opts), "train": asdict(cfg), "runtime": rt.describe(), "model_kwargs": kwargs,
              "preprocess": ds.spec.to_dict(),
              "splits": split_sizes(ds)}
    result = train_run(TASK, run_dir, task, cfg, config, resume_state)
    results = base_results(result, rt)
    results.update(_final_report(run_dir, net, ds, opts, rt))
    finish_run(run_dir, f"lensforge autoencode: {opts.data} / {opts.model} (latent {opts.latent_dim})", results,
               config, [("Reconstructions: input (top), output (bottom)" if not opts.denoise else
                         "Denoising: clean (top), noisy input (middle), output (bottom)", "reconstructions.png"),
                        ("Latent codes of held-out images", "latent.png"),
                        ("Worst reconstructions (most anomalous held-out images)", "worst.png")],
               result.history)
    return Run(run_dir, results, result.history)


def _final_report(run_dir: Path, net, ds: Dataset, opts: AutoencodeOptions, rt: Runtime) -> dict:
    from ..report import image_grid
    from ..report.latent import plot_latent_scatter

    split, name = held_out(ds)
    errs = per_image_errors(net, split, rt, opts.denoise)
    out = {"eval_split": name, f"{name}_images": len(split), f"{name}_mse": errs["mse"].mean().item(),
           f"{name}_psnr": errs["psnr"].mean().item()}
    if opts.denoise:
        out[f"{name}_noisy_psnr"] = errs["noisy_psnr"].mean().item()
        out[f"{name}_psnr_gain_db"] = out[f"{name}_psnr"] - out[f"{name}_noisy_psnr"]
        out["noise_sigma"] = opts.denoise
    if split is not ds.train:
        out[f"pca{opts.latent_dim}_{name}_mse"] = pca_baseline_mse(ds.train, split, opts.latent_dim)
    x, y = first_images(split, 16)
    rows = [x]
    inp = _fixed_noise(x, opts.denoise, seed=1234) if opts.denoise else x
    if opts.denoise:
        rows.append(inp)
    rows.append(map_batches(net.reconstruct, inp, rt.device))
    image_grid(torch.cat(rows), run_dir / "reconstructions.png", ncols=len(x))
    worst = errs["mse"].argsort(descending=True)[:16]
    wx, _ = split.take(worst)
    image_grid(wx, run_dir / "worst.png", ncols=8, titles=[f"mse {errs['mse'][i]:.4f}" for i in worst.tolist()])
    names = getattr(split, "names", None)
    write_csv(run_dir / "reconstruction_errors.csv", ["index", "name", "mse", "psnr_db"],
              [[i, names[i] if names is not None else "", f"{m:.6g}", f"{p:.4f}"]
               for i, (m, p) in enumerate(zip(errs["mse"].tolist(), errs["psnr"].tolist()))])
    if opts.latent_dim in (2, 3):
        idx = torch.arange(min(len(split), 5000))
        xs, ys = split.take(idx)
        z = map_batches(net.encode, xs.float() / 255, rt.device)
        plot_latent_scatter(z.numpy(), run_dir / "latent.png", labels=ys.numpy() if ys is not None else None,
                            class_names=ds.classes, title=f"{opts.data} {name}")
    return out


# ----------------------------------------------------------------------------- loaded models

class Autoencoder:
    """A trained (denoising) autoencoder plus the preprocessing it was trained with."""

    def __init__(self, weights: str | Path, device: str = "auto"):
        self.meta, self.model, self.rt = load_generative(weights, TASK, device)
        self.spec = PreprocessSpec.from_dict(self.meta["preprocess"])
        self.noise_sigma = float(self.meta["options"].get("denoise", 0.0))

    def reconstruct(self, x: torch.Tensor) -> torch.Tensor:
        return map_batches(self.model.reconstruct, x, self.rt.device)

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        return map_batches(self.model.encode, x, self.rt.device)

    def errors(self, x: torch.Tensor) -> torch.Tensor:
        """Per-image reconstruction MSE on [0, 1] pixels."""
        return (self.reconstruct(x) - x).pow(2).flatten(1).mean(1)

    def read(self, files: Sequence[str], strict: bool = True):
        return read_images(files, self.spec, strict=strict)


def load(weights: str | Path, device: str = "auto") -> Autoencoder:
    return Autoencoder(weights, device)


def denoise_files(weights: str | Path, inputs: Sequence[str], out_dir: str | Path, device: str = "auto",
                  add_noise_sigma: float = 0.0) -> list[tuple[str, str]]:
    """Write <out_dir>/<stem>.png for each input image; returns (input, output) pairs.

    add_noise_sigma > 0 first corrupts the (clean) inputs with that noise and also writes
    <stem>_noisy.png, to see what the model removes.
    """
    ae = load(weights, device)
    if ae.noise_sigma <= 0:
        print(f"note: {weights} was trained without --denoise; its output is a plain reconstruction",
              file=sys.stderr)
    files = expand_images(inputs)
    x, kept, _ = ae.read(files)
    out_dir = Path(out_dir)
    stems = _unique_stems(kept)
    if add_noise_sigma > 0:
        x = add_noise(x, add_noise_sigma, torch.Generator().manual_seed(0))
        for img, stem in zip(x, stems):
            save_png(img, out_dir / f"{stem}_noisy.png")
    y = ae.reconstruct(x)
    pairs = []
    for f, img, stem in zip(kept, y, stems):
        save_png(img, out_dir / f"{stem}.png")
        pairs.append((f, str(out_dir / f"{stem}.png")))
    return pairs


def _unique_stems(files: Sequence[str]) -> list[str]:
    seen: dict[str, int] = {}
    stems = []
    for f in files:
        s = Path(f).stem
        seen[s] = seen.get(s, 0) + 1
        stems.append(s if seen[s] == 1 else f"{s}-{seen[s]}")
    return stems


def score(weights: str | Path, inputs: Sequence[str] = (), *, data: str | None = None, data_dir=None,
          split: str = "test", device: str = "auto", download: bool = True) -> list[dict]:
    """Images ranked by reconstruction error, highest (most anomalous) first."""
    ae = load(weights, device)
    rows: list[dict] = []
    if inputs:
        files = expand_images(inputs)
        x, kept, errors = ae.read(files, strict=False)
        for e in errors:
            print(f"error: {e}", file=sys.stderr)
        rows += [{"name": f, "mse": m} for f, m in zip(kept, ae.errors(x).tolist())]
    if data is not None:
        ds = load_images(data, data_dir=data_dir, download=download,
                         image_size=ae.spec.size[0] if not _is_named(data) else None)
        target = {"test": ds.test, "train": ds.train, "val": ds.val}.get(split)
        if target is None:
            raise UsageError(f"--split {split}: {data} has no such split")
        if tuple(target.shape) != (ae.spec.channels, *ae.spec.size):
            raise UsageError(f"--data {data}: images are {tuple(target.shape)}, the model expects "
                             f"{(ae.spec.channels, *ae.spec.size)}")
        names = getattr(target, "names", None)
        for start in range(0, len(target), 2000):
            idx = torch.arange(start, min(start + 2000, len(target)))
            xb, yb = target.take(idx)
            errs = ae.errors(xb.float() / 255).tolist()
            for j, (i, m) in enumerate(zip(idx.tolist(), errs)):
                label = ds.classes[int(yb[j])] if yb is not None and ds.classes else ""
                rows.append({"name": names[i] if names is not None else f"{data}:{split}:{i}", "label": label, "mse": m})
    if not rows:
        raise UsageError("give image files/folders, or --data NAME, to score")
    rows.sort(key=lambda r: -r["mse"])
    for rank, r in enumerate(rows, 1):
        r["rank"] = rank
    return rows


def _is_named(data: str) -> bool:
    from ..data.catalog import is_named
    return is_named(data)
