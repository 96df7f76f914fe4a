"""Autoencoders (dense or conv), optionally denoising: train, denoise images, score anomalies.

    run = train("fashion-mnist", data_dir="../shared/datasets", model="conv", latent_dim=3, epochs=10)
    ae = load(run.dir)
    ae.reconstruct(x)                  # x: (N, C, H, W) floats in [0, 1]
    score(run.dir, ["odd.png"])        # Records ranked by reconstruction error: high = unlike the training data

The loss is the mean squared error on [0, 1] pixels, the same number the report and the PCA
baseline are measured in, so "beats PCA" is a like-for-like statement. The decoder's output is
linear and only clamped to [0, 1] when read out: a sigmoid output under an MSE loss saturates on
dark backgrounds and can collapse to an all-black image it cannot climb out of.

Anomaly scores and the digit preprocessing: a model trained on digit-style data (MNIST) reads a
user's image the MNIST way (find the ink, crop, centre). A photo of a scene has no ink for that
reading to find, and the reading returns a blank canvas, which any autoencoder reconstructs almost
perfectly (MSE 0.0009 with an MNIST autoencoder, below every MNIST test digit): scored on that
canvas, the least digit-like inputs would rank as the most normal. So `score` treats an image the
digit reading finds no ink in as anomalous by definition: it ranks above every image that was read
as a digit, and its `mse` column is the error of its plain grey resize (`reading` says which
reading each row used). `denoise` refuses such images with an error row instead of writing a
black square.
"""
from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F

from ..data.loader import Batches
from ..data.preprocess import PreprocessSpec, load_and_prepare
from ..engine.device import Runtime
from ..errors import UsageError
from ..specs.autoencode import AutoencodeOptions
from .apply import accepts_onnx, InputFile, Record, save_image, unique_stems, write_records_csv, write_table_csv
from .generative_common import (GenerativeTask, as_inputs, first_images, load_generative, load_images, map_batches,
                                psnr, read_inputs, save_grid)
from .lifecycle import Run, run

TASK = "autoencode"


def add_noise(x: torch.Tensor, sigma: float, generator: torch.Generator | None = None) -> torch.Tensor:
    """Gaussian noise clipped back to valid pixels: what a real noisy image looks like."""
    noise = torch.randn(x.shape, generator=generator, device=x.device) if generator is not None else torch.randn_like(x)
    return (x + sigma * noise).clamp(0, 1)


def _fixed_noise(x: torch.Tensor, sigma: float, seed: int = 1234) -> torch.Tensor:
    """Evaluation noise drawn from a fixed seed, so epochs and runs are compared on the same noisy images."""
    return add_noise(x.cpu(), sigma, torch.Generator().manual_seed(seed)).to(x.device)


class AutoencodeTask(GenerativeTask):
    """Reconstruction (or denoising) with an MSE loss; the report compares with a PCA of the same size."""

    name, Options = TASK, AutoencodeOptions

    def network(self, channels: int, size: list[int]) -> tuple[str, dict]:
        o = self.opts
        return f"ae-{o.model}", {"in_channels": channels, "image_size": size, "latent_dim": o.latent_dim,
                                 "width": o.width}

    def run_name(self) -> str:
        return super().run_name() + ("-denoise" if self.opts.denoise else "")

    def title(self) -> str:
        return f"lensforge autoencode: {self.opts.data} / {self.opts.model} (latent {self.opts.latent_dim})"

    def training_step(self, model, batch):
        x, _ = batch
        inp = add_noise(x, self.opts.denoise) if self.opts.denoise > 0 else x
        loss = F.mse_loss(model(inp).float(), x)
        return loss, {"mse": loss.detach()}

    def held_out_metrics(self, model) -> dict[str, float]:
        errs = per_image_errors(model, self.eval_split, self.rt, self.opts.denoise)
        return {"mse": errs["mse"].mean().item(), "psnr": errs["psnr"].mean().item()}

    def final_results(self, run_dir: Path, fit) -> dict:
        from ..report import image_grid
        from ..report.latent import plot_latent_scatter

        ds, net, rt, opts = self.ds, self.model, self.rt, self.opts
        split, name = self.eval_split, self.eval_name
        errs = per_image_errors(net, split, rt, opts.denoise)
        out = {"eval_split": name, f"{name}_images": len(split), f"{name}_mse": errs["mse"].mean().item(),
               f"{name}_psnr": errs["psnr"].mean().item()}
        if opts.denoise:
            out[f"{name}_noisy_psnr"] = errs["noisy_psnr"].mean().item()
            out[f"{name}_psnr_gain_db"] = out[f"{name}_psnr"] - out[f"{name}_noisy_psnr"]
            out["noise_sigma"] = opts.denoise
        if split is not ds.train:
            out[f"pca{opts.latent_dim}_{name}_mse"] = pca_baseline_mse(ds.train, split, opts.latent_dim)
        x, _ = first_images(split, 16)
        rows = [x]
        inp = _fixed_noise(x, opts.denoise, seed=1234) if opts.denoise else x
        if opts.denoise:
            rows.append(inp)
        rows.append(map_batches(net.reconstruct, inp, rt.device))
        save_grid(torch.cat(rows), run_dir / "reconstructions.png", ncols=len(x))
        self.figures.append(("Reconstructions: input (top), output (bottom)" if not opts.denoise else
                             "Denoising: clean (top), noisy input (middle), output (bottom)", "reconstructions.png"))
        if opts.latent_dim in (2, 3):
            xs, ys = split.take(torch.arange(min(len(split), 5000)))
            z = map_batches(net.encode, xs.float() / 255, rt.device)
            plot_latent_scatter(z.numpy(), run_dir / "latent.png", labels=ys.numpy() if ys is not None else None,
                                class_names=ds.classes, title=f"{opts.data} {name}")
            self.figures.append(("Latent codes of held-out images", "latent.png"))
        worst = errs["mse"].argsort(descending=True)[:16]
        wx, _ = split.take(worst)
        image_grid(wx, run_dir / "worst.png", ncols=8, titles=[f"mse {errs['mse'][i]:.4f}" for i in worst.tolist()])
        self.figures.append(("Worst reconstructions (most anomalous held-out images)", "worst.png"))
        names = getattr(split, "names", None)
        write_table_csv(run_dir / "reconstruction_errors.csv",
                        [{"index": i, "file": names[i] if names is not None else "", "mse": m, "psnr_db": round(p, 4)}
                         for i, (m, p) in enumerate(zip(errs["mse"].tolist(), errs["psnr"].tolist()))])
        return out


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

def train(data: str | None = None, *, out: str | Path | None = None, resume: str | Path | None = None,
          **options) -> Run:
    """Train an autoencoder and write a run folder (reconstructions, latent plot, errors, report).

    `options` are any AutoencodeOptions or TrainConfig fields (model, latent_dim, denoise, epochs, ...);
    defaults are the autoencode recipe (lensforge.recipes), exactly as on the command line.
    """
    return run(AutoencodeTask, data, out=out, resume=resume, **options)


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

    def plain_reading(self, f: InputFile) -> np.ndarray:
        """The image as it is: a plain resize to the model's size and channels, no digit normalisation."""
        return load_and_prepare(f.source(), PreprocessSpec(self.spec.size, self.spec.channels, "resize"), name=f.name)


@accepts_onnx(TASK)
def load(weights: str | Path, device: str = "auto") -> Autoencoder:
    return Autoencoder(weights, device)


def denoise(weights: str | Path, inputs: Sequence[str | Path | InputFile], out_dir: str | Path, device: str = "auto",
            add_noise_sigma: float = 0.0) -> list[Record]:
    """Write <out_dir>/<stem>.png for each input image; one Record per input: `out` (the written
    file) and `seconds` (the batch's model time shared out per image), or `error`.

    add_noise_sigma > 0 first corrupts the (clean) inputs with that noise and also writes
    <stem>_noisy.png (`noisy`), to see what the model removes.
    """
    ae = load(weights, device)
    if ae.noise_sigma <= 0:
        print(f"note: {weights} was trained without --denoise; its output is a plain reconstruction",
              file=sys.stderr)
    files = as_inputs(inputs)
    got = read_inputs(files, ae.spec)
    stems = unique_stems(files)
    x = got.x
    if len(x) and add_noise_sigma > 0:
        x = add_noise(x, add_noise_sigma, torch.Generator().manual_seed(0))
    t0 = time.perf_counter()
    y = ae.reconstruct(x) if len(x) else x
    seconds = (time.perf_counter() - t0) / max(1, len(x))
    for j, i in enumerate(got.index):
        rec = got.records[i]
        if add_noise_sigma > 0:
            rec.values["noisy"] = str(save_image(Path(out_dir) / f"{stems[i]}_noisy.png", x[j]))
        rec.values.update(out=str(save_image(Path(out_dir) / f"{stems[i]}.png", y[j])), seconds=seconds)
    return got.records


SCORE_COLUMNS = ["rank", "mse", "reading", "label"]


def score(weights: str | Path, inputs: Sequence[str | Path | InputFile] = (), *, data: str | None = None,
          data_dir=None, split: str = "test", device: str = "auto", download: bool = True) -> list[Record]:
    """Records ranked most anomalous first, values SCORE_COLUMNS; unreadable files last (error set,
    no rank). Images the digit reading finds no ink in rank first (see the module docstring)."""
    ae = load(weights, device)
    records: list[Record] = []
    if inputs:
        got = read_inputs(as_inputs(inputs), ae.spec, blank=ae.plain_reading)
        for i, m in zip(got.index, ae.errors(got.x).tolist() if len(got.x) else []):
            got.records[i].values.update(mse=m, label="")
        records += got.records
    if data is not None:
        records += _score_split(ae, data, data_dir=data_dir, split=split, download=download)
    if not records:
        raise UsageError("give image files/folders, or --data NAME, to score")

    def anomaly(r: Record) -> tuple[bool, float]:
        return r.values["reading"].startswith("resize (no ink"), r.values["mse"]

    ranked = sorted((r for r in records if r.ok), key=anomaly, reverse=True)
    for rank, r in enumerate(ranked, 1):
        r.values["rank"] = rank
    return ranked + [r for r in records if not r.ok]


def write_scores_csv(path: str | Path, records: Sequence[Record]) -> None:
    """file, rank, mse, reading, label, error: the apply verbs' one CSV layout."""
    write_records_csv(path, records, SCORE_COLUMNS)


def _score_split(ae: Autoencoder, data: str, *, data_dir, split: str, download: bool) -> list[Record]:
    from ..data.catalog import is_named

    ds = load_images(data, data_dir=data_dir, download=download, image_size=None if is_named(data) else ae.spec.size[0])
    target = {"test": ds.test, "train": ds.train, "val": ds.val}.get(split)
    if target is None:
        raise UsageError(f"--split {split}: {data} has no such split")
    if tuple(target.shape) != (ae.spec.channels, *ae.spec.size):
        raise UsageError(f"--data {data}: images are {tuple(target.shape)}, the model expects "
                         f"{(ae.spec.channels, *ae.spec.size)}")
    names = getattr(target, "names", None)
    records = []
    for start in range(0, len(target), 2000):
        idx = torch.arange(start, min(start + 2000, len(target)))
        xb, yb = target.take(idx)
        for j, (i, m) in enumerate(zip(idx.tolist(), ae.errors(xb.float() / 255).tolist())):
            label = ds.classes[int(yb[j])] if yb is not None and ds.classes else ""
            records.append(Record(names[i] if names is not None else f"{data}:{split}:{i}",
                                  {"mse": m, "reading": "dataset", "label": label}))
    return records
