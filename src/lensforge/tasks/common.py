"""What every task's run shares: options, run folders, resume, the final report, file outputs.

A task module keeps only what is specific to it (its model, loss, metrics and artefacts); the
mechanics of turning a training run into a complete run folder live here once.
"""
from __future__ import annotations

import csv
import io
import sys
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Sequence

import numpy as np
import torch

from ..engine.checkpoint import load_checkpoint
from ..engine.device import Runtime
from ..engine.trainer import FitResult, TrainConfig, fit
from ..errors import LensforgeError, UsageError
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
    return opts, cfg


def run_name(data: str, model: str) -> str:
    return f"{Path(data).stem if not str(data).isidentifier() else data}-{model}"


def resume_checkpoint(run_dir: Path, task: str, opts_cls, progress: bool = True):
    """(checkpoint, task options, TrainConfig) of an interrupted run, exactly as it was started;
    only whether to draw progress bars may change between the two halves."""
    last = Path(run_dir) / "weights" / "last.pt"
    if not last.exists():
        raise UsageError(f"--resume {run_dir}: no weights/last.pt there to resume from")
    state = load_checkpoint(last, task=task)
    cfg = TrainConfig.from_dict(state["config"])
    cfg.progress = progress
    return state, opts_cls(**state["options"]), cfg


def data_summary(data: str, ds) -> str:
    """The line printed before training: images (and classes) per split, image size, what was skipped."""
    sizes = ", ".join(f"{n} {k}" for k, n in split_sizes(ds).items())
    c, h, w = ds.train.shape
    line = f"{data}: {sizes} images"
    if ds.classes:
        line += f", {len(ds.classes)} classes"
    line += f", {h}x{w} {'grey' if c == 1 else 'colour'}"
    if ds.skipped:
        line += f"; skipped {len(ds.skipped)} unreadable file(s), e.g. {ds.skipped[0]}"
    return line


def split_sizes(ds) -> dict[str, int]:
    """Image count per split, for config.yaml."""
    return {k: len(s) for k, s in (("train", ds.train), ("val", ds.val), ("test", ds.test)) if s is not None}


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



def restore_model(ckpt: dict, name: str | None = None, what: str | None = None) -> torch.nn.Module:
    """Rebuild a checkpoint's network from (name, kwargs) and load its weights, with a one-line
    error when they do not fit (e.g. a checkpoint edited by hand or from another version)."""
    name = name or ckpt["model_name"]
    model = create_model(name, **ckpt["model_kwargs"])
    try:
        model.load_state_dict(ckpt["model"])
    except RuntimeError as e:
        raise LensforgeError(f"weights do not fit {what or f'model {name!r}'}: {str(e).splitlines()[0]}") from None
    return model


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


def save_png(image: torch.Tensor, path: str | Path) -> None:
    """One (C,H,W) float image in [0, 1] as a PNG, written atomically."""
    from PIL import Image

    arr = (image.detach().float().clamp(0, 1).cpu().numpy() * 255).round().astype(np.uint8)
    arr = arr[0] if arr.shape[0] == 1 else arr.transpose(1, 2, 0)
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, format="PNG")
    write_bytes(path, buf.getvalue())


def write_csv(path: str | Path, header: list[str], rows: list[list]) -> None:
    buf = io.StringIO()
    w = csv.writer(buf)
    w.writerow(header)
    w.writerows(rows)
    with atomic_open(path, "w") as f:
        f.write(buf.getvalue())
