"""Image classification: train, evaluate and predict, on named datasets or a user's folders.

    run = train(data="fashion-mnist", data_dir="../shared/datasets", epochs=15)
    clf = load(run.dir / "weights" / "best.pt")
    clf.predict(["shirt.jpg"])

The CLI (`lensforge classify ...`) is a thin layer over these three functions.
"""
from __future__ import annotations

import csv
import io
import sys
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from ..data import Augment, Dataset, load_dataset
from ..data.imageio import IMAGE_EXTENSIONS
from ..data.loader import Batches
from ..data.preprocess import PreprocessSpec, load_and_prepare, prepare
from ..engine.checkpoint import load_checkpoint
from ..engine.device import Runtime, select_runtime
from ..engine.trainer import TrainConfig, fit
from ..errors import DataError, UsageError
from ..fileio import atomic_open, write_json
from ..models import create_model
from ..recipes import with_recipe
from ..runs import new_run_dir, write_config
from .common import Run, restore_model, resume_checkpoint, split_sizes

TASK = "classify"

@dataclass
class ClassifyOptions:
    """Task options on top of TrainConfig; all of them land in config.yaml."""

    data: str = "digits"
    data_dir: str | None = None
    model: str = "cnn"
    image_size: int | None = None
    val_fraction: float = 0.0
    label_smoothing: float = 0.1
    translate: int | None = None       # None = the dataset's default augmentation
    flip: bool | None = None
    cutout: int | None = None
    tta: bool = True                   # flip test-time augmentation when the data is flip-invariant
    download: bool = True


# ----------------------------------------------------------------------------- evaluation core

@torch.no_grad()
def predict_logits(model: torch.nn.Module, data, rt: Runtime, batch_size: int = 512, tta_flip: bool = False):
    """Logits (float32, CPU) and labels for a whole split, optionally averaging a mirrored pass."""
    model.eval()
    outs, labels = [], []
    fmt = torch.channels_last if rt.channels_last else torch.contiguous_format
    for x, y in Batches(data, batch_size, device=rt.device):
        x = x.contiguous(memory_format=fmt)
        with rt.autocast():
            logits = model(x).float()
            if tta_flip:
                logits = (logits.log_softmax(1) + model(x.flip(-1)).float().log_softmax(1)) / 2
        outs.append(logits.cpu())
        if y is not None:
            labels.append(y.cpu())
    return torch.cat(outs), (torch.cat(labels) if labels else None)


def confusion(pred: torch.Tensor, true: torch.Tensor, n: int) -> np.ndarray:
    return torch.bincount(true * n + pred, minlength=n * n).reshape(n, n).numpy()


class ClassifyTask:
    """Binds a dataset and a model to the engine's step/evaluate protocol."""

    def __init__(self, ds: Dataset, model: torch.nn.Module, model_name: str, model_kwargs: dict,
                 cfg: TrainConfig, opts: ClassifyOptions, rt: Runtime, augment: Augment):
        self.ds, self.model, self.opts, self.rt = ds, model, opts, rt
        self.model_name, self.model_kwargs = model_name, model_kwargs
        self.augment = augment
        self.train_batches = Batches(ds.train, cfg.batch_size, device=rt.device, shuffle=True, drop_last=True,
                                     augment=augment, seed=cfg.seed)
        self.eval_split, self.eval_prefix = (ds.val, "val") if ds.val is not None else (ds.test, "test")
        self.fmt = torch.channels_last if rt.channels_last else torch.contiguous_format

    def training_step(self, model, batch):
        x, y = batch
        logits = model(x.contiguous(memory_format=self.fmt))
        loss = F.cross_entropy(logits.float(), y, label_smoothing=self.opts.label_smoothing)
        acc = (logits.argmax(1) == y).float().mean()
        return loss, {"loss": loss.detach(), "accuracy": acc}

    def evaluate(self, model) -> dict[str, float]:
        if self.eval_split is None:
            return {}
        logits, y = predict_logits(model, self.eval_split, self.rt)
        p = self.eval_prefix
        return {f"{p}_loss": F.cross_entropy(logits, y).item(), f"{p}_accuracy": (logits.argmax(1) == y).float().mean().item()}

    def checkpoint_meta(self) -> dict:
        return {"task": TASK, "model_name": self.model_name, "model_kwargs": self.model_kwargs,
                "classes": list(self.ds.classes), "preprocess": self.ds.spec.to_dict(),
                "augment": self.augment.to_dict(), "options": asdict(self.opts)}


# ----------------------------------------------------------------------------- training

def _channel_stats(images: torch.Tensor) -> tuple[list[float], list[float]]:
    sample = images[:: max(1, len(images) // 10000)].float() / 255
    mean = sample.mean(dim=(0, 2, 3))
    std = sample.std(dim=(0, 2, 3)).clamp_min(1e-3)
    return [round(v, 5) for v in mean.tolist()], [round(v, 5) for v in std.tolist()]


def _build(opts: ClassifyOptions, cfg: TrainConfig):
    if not 0 <= opts.label_smoothing < 1:
        raise UsageError("--label-smoothing must be in [0, 1)")
    ds = load_dataset(opts.data, data_dir=opts.data_dir, download=opts.download, image_size=opts.image_size,
                      val_fraction=opts.val_fraction, seed=cfg.seed)
    if not ds.classes or len(ds.classes) < 2:
        raise DataError(f"{opts.data}: classification needs at least 2 classes, found {ds.num_classes}")
    if cfg.early_stop and ds.val is None:
        raise UsageError("--early-stop monitors validation accuracy: add --val-fraction (e.g. 0.1)")
    a = ds.augment
    augment = Augment(a.translate if opts.translate is None else opts.translate,
                      a.flip if opts.flip is None else opts.flip, a.cutout if opts.cutout is None else opts.cutout)
    c, h, w = ds.train.shape
    images = ds.train.images if hasattr(ds.train, "images") else ds.train.take(torch.arange(min(len(ds.train), 512)))[0]
    mean, std = _channel_stats(images)
    kwargs = {"in_channels": c, "num_classes": ds.num_classes, "image_size": [h, w], "mean": mean, "std": std}
    return ds, augment, kwargs


def train(data: str = "digits", *, model: str = "cnn", out: str | Path | None = None, resume: str | Path | None = None,
          **options) -> Run:
    """Train a classifier and write a complete run folder; returns the Run (dir, results, history).

    `options` are any ClassifyOptions or TrainConfig fields (epochs, batch_size, lr, seed, ...).
    """
    if resume is not None:
        return _resume(Path(resume), progress=options.get("progress", True))
    unknown = set(options) - {f for f in ClassifyOptions.__dataclass_fields__} - set(TrainConfig.__dataclass_fields__)
    if unknown:
        raise UsageError(f"unknown option(s): {', '.join(sorted(unknown))}")
    options = with_recipe(TASK, options)
    opts = ClassifyOptions(data=str(data), model=model,
                           **{k: v for k, v in options.items() if k in ClassifyOptions.__dataclass_fields__})
    cfg = TrainConfig(**{k: v for k, v in options.items() if k in TrainConfig.__dataclass_fields__})
    cfg.validate()
    rt = select_runtime(cfg.device, cfg.precision)
    ds, augment, kwargs = _build(opts, cfg)
    torch.manual_seed(cfg.seed)
    net = create_model(opts.model, **kwargs)
    name = f"{Path(opts.data).stem if not opts.data.isidentifier() else opts.data}-{opts.model}"
    run_dir = new_run_dir(TASK, name, out)
    return _train_and_report(run_dir, ds, net, kwargs, cfg, opts, rt, augment, resume_state=None)


def _resume(run_dir: Path, progress: bool = True) -> Run:
    state, opts, cfg = resume_checkpoint(run_dir, TASK, ClassifyOptions, progress)
    rt = select_runtime(cfg.device, cfg.precision)
    ds, augment, _ = _build(opts, cfg)
    net = create_model(state["model_name"], **state["model_kwargs"])
    if state["epoch"] >= cfg.epochs:
        print(f"{run_dir}: all {cfg.epochs} epochs already done; re-running the final evaluation", file=sys.stderr)
    return _train_and_report(run_dir, ds, net, state["model_kwargs"], cfg, opts, rt, augment, resume_state=state)


def _train_and_report(run_dir, ds, net, kwargs, cfg, opts, rt, augment, resume_state) -> Run:
    task = ClassifyTask(ds, net, opts.model, kwargs, cfg, opts, rt, augment)
    config = {"task": TASK, **asdict(opts), "train": asdict(cfg), "runtime": rt.describe(),
              "model_kwargs": kwargs, "augment": augment.to_dict(), "preprocess": ds.spec.to_dict(),
              "splits": split_sizes(ds)}
    write_config(run_dir, config)
    result = fit(task, cfg, run_dir, resume=resume_state)
    best = load_checkpoint(run_dir / "weights" / "best.pt", task=TASK)
    net.load_state_dict(best["model"])
    results = {"best_epoch": result.best_epoch, "epochs_run": len(result.history),
               "train_seconds": round(result.train_seconds, 2), **rt.describe(),
               "monitor": cfg.monitor if ds.val is not None else "none (no validation split: final weights)"}
    if ds.val is not None:
        results["val_accuracy"] = result.best_value
    if ds.test is not None:
        results.update(_final_report(run_dir, net, ds, rt, opts, augment, result.history))
    else:
        _final_report(run_dir, net, ds, rt, opts, augment, result.history, split=ds.val)
    write_json(run_dir / "results.json", results)
    _write_html(run_dir, results, config)
    return Run(run_dir, results, result.history)


def _final_report(run_dir: Path, net, ds: Dataset, rt: Runtime, opts: ClassifyOptions, augment: Augment,
                  history, split=None) -> dict:
    from ..report import image_grid, per_class_table, plot_confusion_matrix, plot_curves

    split = ds.test if split is None else split
    use_tta = opts.tta and augment.flip
    logits, y = predict_logits(net, split, rt, tta_flip=False)
    out = {"test_accuracy_plain": (logits.argmax(1) == y).float().mean().item()}
    if use_tta:
        logits, _ = predict_logits(net, split, rt, tta_flip=True)
    prob = logits.softmax(1)
    pred = prob.argmax(1)
    out["test_accuracy"] = (pred == y).float().mean().item()
    out["test_loss"] = F.nll_loss(prob.clamp_min(1e-12).log(), y).item()
    out["tta"] = "flip" if use_tta else "none"
    out["test_images"] = len(y)
    cm = confusion(pred, y, ds.num_classes)
    table = per_class_table(cm, ds.classes)
    out["per_class"] = table
    plot_curves(history, run_dir / "curves.png")
    plot_confusion_matrix(cm, ds.classes, run_dir / "confusion_matrix.png")
    wrong = (pred != y).nonzero().flatten()
    order = wrong[prob[wrong, pred[wrong]].argsort(descending=True)][:32]
    if len(order):
        imgs, _ = split.take(order)
        titles = [f"{ds.classes[y[i]]} -> {ds.classes[pred[i]]} ({prob[i, pred[i]]:.2f})" for i in order.tolist()]
        image_grid(imgs.numpy(), run_dir / "mistakes.png", titles=titles, ncols=8)
    _write_csv(run_dir / "per_class.csv", table)
    return out


def _write_html(run_dir: Path, results: dict, config: dict) -> None:
    from ..report import write_report

    summary = {k: v for k, v in results.items() if k != "per_class"}
    images = [(c, str(run_dir / f)) for c, f in (("Training curves", "curves.png"),
              ("Confusion matrix (test)", "confusion_matrix.png"), ("Most confident mistakes", "mistakes.png"))
              if (run_dir / f).exists()]
    write_report(run_dir / "report.html", title=f"lensforge classify: {config['data']} / {config['model']}",
                 summary=summary, images=images, tables=[("Per-class precision / recall", results.get("per_class", []))],
                 config=config)


def _write_csv(path: Path, rows: list[dict]) -> None:
    if not rows:
        return
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=list(rows[0]))
    w.writeheader()
    w.writerows(rows)
    with atomic_open(path, "w") as f:
        f.write(buf.getvalue())


# ----------------------------------------------------------------------------- loaded models

@dataclass
class Prediction:
    file: str
    label: str | None = None
    confidence: float | None = None
    top: list[tuple[str, float]] = field(default_factory=list)
    error: str | None = None


class Classifier:
    """A trained classifier plus the exact preprocessing it was trained with."""

    def __init__(self, ckpt: dict, device: str = "auto"):
        self.classes: list[str] = list(ckpt["classes"])
        self.spec = PreprocessSpec.from_dict(ckpt["preprocess"])
        self.model_name = ckpt["model_name"]
        self.meta = ckpt
        self.rt = select_runtime(device, "auto")
        self.model = restore_model(ckpt)
        self.model.to(self.rt.device).eval()
        self.tta = bool(ckpt.get("augment", {}).get("flip")) and ckpt.get("options", {}).get("tta", True)

    def _inputs(self, images) -> tuple[list[str], list[np.ndarray | None], list[str | None]]:
        names, arrays, errors = [], [], []
        for i, item in enumerate(images):
            if isinstance(item, (str, Path)):
                name, src = str(item), item
            elif isinstance(item, (bytes, bytearray)):
                name, src = f"<bytes {i}>", bytes(item)
            else:
                name, src = f"<array {i}>", None
            try:
                if src is not None:
                    arr = load_and_prepare(src, self.spec, name=name)
                else:
                    arr = prepare(_to_array(item), self.spec)
                arrays.append(arr)
                errors.append(None)
            except DataError as e:
                arrays.append(None)
                errors.append(str(e))
            names.append(name)
        return names, arrays, errors

    @torch.no_grad()
    def predict(self, images: Iterable, top_k: int = 1, batch_size: int = 256) -> list[Prediction]:
        """Predict paths, bytes, PIL images or arrays; unreadable inputs get `error` set, never raise."""
        names, arrays, errors = self._inputs(list(images))
        good = [i for i, a in enumerate(arrays) if a is not None]
        results = [Prediction(n, error=e) for n, e in zip(names, errors)]
        k = max(1, min(top_k, len(self.classes)))
        from ..data.sets import TensorSet
        for start in range(0, len(good), batch_size):
            chunk = good[start:start + batch_size]
            x = torch.from_numpy(np.stack([arrays[i] for i in chunk]))
            logits, _ = predict_logits(self.model, TensorSet(x), self.rt, batch_size, tta_flip=self.tta)
            prob = logits.softmax(1)
            conf, idx = prob.topk(k, dim=1)
            for row, i in enumerate(chunk):
                top = [(self.classes[j], float(c)) for j, c in zip(idx[row].tolist(), conf[row].tolist())]
                results[i].label, results[i].confidence, results[i].top = top[0][0], top[0][1], top
        return results


def _to_array(item) -> np.ndarray:
    if hasattr(item, "convert"):  # PIL image
        return np.asarray(item.convert("RGB"))
    if isinstance(item, torch.Tensor):
        item = item.detach().cpu().numpy()
    arr = np.asarray(item)
    if arr.dtype != np.uint8:
        arr = (np.clip(arr.astype(np.float32), 0, 1) * 255).round().astype(np.uint8) if arr.max(initial=0) <= 1.0 \
            else np.clip(arr, 0, 255).astype(np.uint8)
    if arr.ndim == 3 and arr.shape[0] in (1, 3) and arr.shape[-1] not in (1, 3):
        arr = arr.transpose(1, 2, 0)
    if arr.ndim == 3 and arr.shape[-1] == 1:
        arr = arr[..., 0]
    if arr.ndim not in (2, 3):
        raise DataError(f"array input: expected HxW or HxWxC image, got shape {arr.shape}")
    return arr


def load(weights: str | Path, device: str = "auto") -> Classifier:
    """Load a trained classifier (a .pt file or a run folder) safely (weights_only)."""
    return Classifier(load_checkpoint(weights, task=TASK), device=device)


def expand_inputs(paths: Sequence[str | Path]) -> list[str]:
    """Files as given, plus image files found (recursively, sorted) inside given folders."""
    files: list[str] = []
    for p in paths:
        p = Path(p)
        if p.is_dir():
            files += sorted(str(f) for f in p.rglob("*") if f.is_file() and f.suffix.lower() in IMAGE_EXTENSIONS)
        elif p.exists():
            files.append(str(p))
        else:
            files.append(str(p))  # reported as an error row by predict
    return files


def write_predictions_csv(path: str | Path, preds: list[Prediction], top_k: int = 1) -> None:
    buf = io.StringIO()
    w = csv.writer(buf)
    header = ["file", "label", "confidence", "error"] + (["top_k"] if top_k > 1 else [])
    w.writerow(header)
    for p in preds:
        row = [p.file, p.label or "", f"{p.confidence:.6f}" if p.confidence is not None else "", p.error or ""]
        if top_k > 1:
            row.append(";".join(f"{l}:{c:.4f}" for l, c in p.top))
        w.writerow(row)
    with atomic_open(path, "w") as f:
        f.write(buf.getvalue())


def evaluate(weights: str | Path, data: str, *, data_dir=None, split: str = "test", batch_size: int = 512,
             device: str = "auto", download: bool = True) -> dict:
    """Accuracy, loss and per-class table of saved weights on a dataset's split, with the
    preprocessing stored in the checkpoint (image size and channels must match)."""
    clf = load(weights, device=device)
    spec = clf.spec
    ds = load_dataset(data, data_dir=data_dir, download=download, image_size=list(spec.size), channels=spec.channels,
                      style=spec.style)
    target = {"test": ds.test, "train": ds.train, "val": ds.val}.get(split)
    if target is None:
        raise UsageError(f"--split {split}: {data} has no such split")
    if tuple(target.shape) != (spec.channels, *spec.size):
        raise DataError(f"{data}: images are {tuple(target.shape)}, model expects {(spec.channels, *spec.size)}")
    if list(ds.classes) != clf.classes:
        raise DataError(f"{data}: classes {ds.classes[:5]}... differ from the model's {clf.classes[:5]}...")
    logits, y = predict_logits(clf.model, target, clf.rt, batch_size, tta_flip=clf.tta)
    pred = logits.argmax(1)
    from ..report import per_class_table
    cm = confusion(pred, y, len(clf.classes))
    return {"accuracy": (pred == y).float().mean().item(), "loss": F.cross_entropy(logits, y).item(),
            "images": len(y), "split": split, "per_class": per_class_table(cm, clf.classes)}
