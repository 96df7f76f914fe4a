"""What the autoencoder, VAE and GAN tasks share: data, run folders, loaded models, image I/O.

The three tasks differ only in their model and loss; everything around them (options parsing,
unlabelled folders, run folder + results.json + report.html, resume, reading a user's images with
the preprocessing stored in the checkpoint, writing image files atomically) lives here once.
"""
from __future__ import annotations

import io
import sys
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import torch

from ..data import Dataset, load_dataset
from ..data.preprocess import PreprocessSpec, load_and_prepare
from ..engine.checkpoint import load_checkpoint
from ..engine.device import Runtime, select_runtime
from ..engine.trainer import FitResult, TrainConfig, fit
from ..errors import DataError, LensforgeError, UsageError
from ..fileio import atomic_open, write_bytes, write_json
from ..models import create_model
from ..runs import write_config


@dataclass
class Run:
    dir: Path
    results: dict
    history: list[dict] = field(default_factory=list)

    @property
    def best_weights(self) -> Path:
        return self.dir / "weights" / "best.pt"


def split_options(options: dict, opts_cls, **fixed):
    """Task options and TrainConfig from one flat keyword dict, refusing unknown names."""
    opt_names = {f.name for f in fields(opts_cls)}
    cfg_names = {f.name for f in fields(TrainConfig)}
    unknown = set(options) - opt_names - cfg_names
    if unknown:
        raise UsageError(f"unknown option(s): {', '.join(sorted(unknown))}")
    opts = opts_cls(**fixed, **{k: v for k, v in options.items() if k in opt_names})
    cfg = TrainConfig(**{k: v for k, v in options.items() if k in cfg_names})
    cfg.validate()
    if cfg.precision == "auto" and select_runtime(cfg.device, "fp32").device.type == "cpu":
        # Measured on the project's CPU (AMD EPYC, bf16 reported as fast): bf16 autocast makes these
        # small conv/transposed-conv nets 2-15x slower than fp32, and bf16 likelihoods are coarse.
        cfg.precision = "fp32"
    return opts, cfg


def load_images(data: str, *, data_dir=None, download=True, image_size=None, val_fraction=0.0, seed=0,
                channels=None) -> Dataset:
    """Named dataset or a user's folder/zip; class sub-folders are optional (labels are only used
    to colour plots and to condition a GAN)."""
    if image_size is not None and (image_size < 4 or image_size > 512):
        raise UsageError(f"--image-size {image_size}: must be between 4 and 512")
    ds = load_dataset(data, data_dir=data_dir, download=download, image_size=image_size, channels=channels,
                      val_fraction=val_fraction, seed=seed, require_labels=False)
    if image_size is not None and tuple(ds.train.shape[1:]) != (image_size, image_size):
        raise UsageError(f"--image-size applies to image folders; {data} images are fixed at "
                         f"{ds.train.shape[1]}x{ds.train.shape[2]}")
    if len(ds.train) < 2:
        raise DataError(f"{data}: needs at least 2 training images, found {len(ds.train)}")
    return ds


def run_name(data: str, model: str) -> str:
    return f"{Path(data).stem if not str(data).isidentifier() else data}-{model}"


def held_out(ds: Dataset):
    """(split, name) to measure on: validation if carved, else test, else train (with a note)."""
    if ds.val is not None:
        return ds.val, "val"
    if ds.test is not None:
        return ds.test, "test"
    return ds.train, "train"


def first_images(split, n: int) -> tuple[torch.Tensor, torch.Tensor | None]:
    """The first n images of a split as floats in [0, 1] (a fixed, reproducible showcase)."""
    x, y = split.take(torch.arange(min(n, len(split))))
    return x.float() / 255, y


def resume_checkpoint(run_dir: Path, task: str) -> dict:
    last = run_dir / "weights" / "last.pt"
    if not last.exists():
        raise UsageError(f"--resume {run_dir}: no weights/last.pt there to resume from")
    return load_checkpoint(last, task=task)


def train_run(task_name: str, run_dir: Path, task, cfg: TrainConfig, config: dict,
              resume_state: dict | None) -> FitResult:
    """Write config.yaml, run the engine, then load best.pt's weights back into task.model."""
    write_config(run_dir, config)
    if resume_state is not None and resume_state["epoch"] >= cfg.epochs:
        print(f"{run_dir}: all {cfg.epochs} epochs already done; re-running the final report", file=sys.stderr)
    result = fit(task, cfg, run_dir, resume=resume_state)
    best = load_checkpoint(run_dir / "weights" / "best.pt", task=task_name)
    task.model.load_state_dict(best["model"])
    task.model.eval()
    return result


def finish_run(run_dir: Path, title: str, results: dict, config: dict, figures: list[tuple[str, str]],
               history: list[dict], tables: list[tuple[str, list[dict]]] = ()) -> None:
    """curves.png, results.json and report.html: the files every lensforge run folder has."""
    from ..report import plot_curves, write_report

    if history:
        plot_curves(history, run_dir / "curves.png")
        figures = [("Training curves", "curves.png")] + list(figures)
    write_json(run_dir / "results.json", results)
    images = [(c, str(run_dir / f)) for c, f in figures if (run_dir / f).exists()]
    write_report(run_dir / "report.html", title=title, summary=results, images=images, tables=list(tables),
                 config=config)


def base_results(result: FitResult, rt: Runtime) -> dict:
    return {"best_epoch": result.best_epoch, "epochs_run": len(result.history),
            "train_seconds": round(result.train_seconds, 2), **rt.describe()}


# ----------------------------------------------------------------------------- loaded models

def load_generative(weights: str | Path, task: str, device: str = "auto") -> tuple[dict, torch.nn.Module, Runtime]:
    """(checkpoint, model in eval mode on its device, runtime) via the safe weights_only loader."""
    ckpt = load_checkpoint(weights, task=task)
    rt = select_runtime(device, "fp32")
    model = create_model(ckpt["model_name"], **ckpt["model_kwargs"])
    try:
        model.load_state_dict(ckpt["model"])
    except RuntimeError as e:
        raise LensforgeError(f"{weights}: weights do not fit model '{ckpt['model_name']}': "
                             f"{str(e).splitlines()[0]}") from None
    return ckpt, model.to(rt.device).eval(), rt


def expand_images(paths: Sequence[str | Path]) -> list[str]:
    """Files as given, plus image files found (recursively, sorted) inside given folders."""
    from ..data.imageio import IMAGE_EXTENSIONS

    files: list[str] = []
    for p in map(Path, paths):
        if p.is_dir():
            files += sorted(str(f) for f in p.rglob("*") if f.is_file() and f.suffix.lower() in IMAGE_EXTENSIONS)
        elif p.exists():
            files.append(str(p))
        else:
            raise UsageError(f"{p}: no such file or folder")
    if not files:
        raise UsageError(f"no image files found in {' '.join(map(str, paths))}")
    return files


def read_images(files: Sequence[str], spec: PreprocessSpec, strict: bool = True) -> tuple[torch.Tensor, list[str], list[str]]:
    """Images prepared exactly as in training, as floats in [0, 1]: (batch, names kept, errors).

    strict: the first unreadable file raises (one line naming it); otherwise it is skipped and
    its message returned, so a batch job over a folder reports bad files but finishes.
    """
    arrays, kept, errors = [], [], []
    for f in files:
        try:
            arrays.append(load_and_prepare(f, spec, name=f))
            kept.append(f)
        except DataError as e:
            if strict:
                raise
            errors.append(str(e))
    if not arrays:
        raise DataError(f"none of the {len(files)} input image(s) could be read: {errors[0] if errors else ''}")
    x = torch.from_numpy(np.stack(arrays)).float() / 255
    return x, kept, errors


def save_png(image: torch.Tensor, path: str | Path) -> None:
    """One (C,H,W) float image in [0, 1] as a PNG, written atomically."""
    from PIL import Image

    arr = (image.detach().float().clamp(0, 1).cpu().numpy() * 255).round().astype(np.uint8)
    arr = arr[0] if arr.shape[0] == 1 else arr.transpose(1, 2, 0)
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, format="PNG")
    write_bytes(path, buf.getvalue())


def write_csv(path: str | Path, header: list[str], rows: list[list]) -> None:
    import csv

    buf = io.StringIO()
    w = csv.writer(buf)
    w.writerow(header)
    w.writerows(rows)
    with atomic_open(path, "w") as f:
        f.write(buf.getvalue())


@torch.no_grad()
def map_batches(fn: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor, device, batch_size: int = 512) -> torch.Tensor:
    """fn over x in chunks on `device`, results concatenated on the CPU."""
    outs = [fn(x[i:i + batch_size].to(device)).float().cpu() for i in range(0, len(x), batch_size)]
    return torch.cat(outs) if outs else torch.empty(0)


def psnr(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Peak signal-to-noise ratio in dB per image, for pixels in [0, 1] (peak 1)."""
    mse = (pred.float() - target.float()).pow(2).flatten(1).mean(1)
    return 10 * torch.log10(1.0 / mse.clamp_min(1e-10))
