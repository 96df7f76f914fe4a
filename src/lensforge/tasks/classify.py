"""Image classification: train, evaluate and predict, on named datasets or a user's folders.

    run = train(data="fashion-mnist", data_dir="../shared/datasets", epochs=15)
    clf = load(run.dir / "weights" / "best.pt")
    clf.predict(["shirt.jpg"])

The CLI (`lensforge classify ...`) is a thin layer over these three functions.
"""
from __future__ import annotations

from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Iterable

import numpy as np
import torch
import torch.nn.functional as F

from ..data import Augment, load_dataset
from ..data.loader import Batches
from ..data.preprocess import PreprocessSpec, load_and_prepare, prepare
from ..engine.checkpoint import load_checkpoint
from ..engine.device import Runtime, select_runtime
from ..models.classifiers import TTA_MODES, TestTimeAugment
from ..recipes import MODEL_RECIPES
from ..errors import DataError, UsageError
from ..specs.classify import ClassifyOptions
from .apply import InputFile, Record, accepts_onnx, write_records_csv, write_table_csv
from .common import data_summary, restore_model, split_sizes
from .lifecycle import Run, TrainableTask, run

TASK = "classify"


# ----------------------------------------------------------------------------- evaluation core

@torch.no_grad()
def predict_logits(model: torch.nn.Module, data, rt: Runtime, batch_size: int = 512, tta: str = "none"):
    """Logits (float32, CPU) and labels for a whole split; with test-time augmentation ("flip",
    "flip+shift": models.classifiers.TestTimeAugment) the mean log-softmax over the views."""
    model.eval()
    net = TestTimeAugment(model, tta)
    outs, labels = [], []
    fmt = torch.channels_last if rt.channels_last else torch.contiguous_format
    for x, y in Batches(data, batch_size, device=rt.device):
        x = x.contiguous(memory_format=fmt)
        with rt.autocast():
            logits = net(x)
        outs.append(logits.cpu())
        if y is not None:
            labels.append(y.cpu())
    return torch.cat(outs), (torch.cat(labels) if labels else None)


def tta_mode(meta: dict) -> str:
    """The test-time augmentation a checkpoint (or its export's metadata) is evaluated with: its
    "tta" entry, or for checkpoints from before that entry, flip TTA where it trained with flips."""
    if meta.get("tta") in TTA_MODES:
        return meta["tta"]
    return "flip" if meta.get("augment", {}).get("flip") and meta.get("options", {}).get("tta", True) else "none"


def pick_model(shape: tuple[int, int, int]) -> str:
    """--model auto: whitenet for 32x32 colour images (CIFAR-10 and folders like it: 0.9218 on the
    JPEG CIFAR-10 in 34 minutes on a 2-core CPU,
    bench/results/cifar10_muon_w96_20ep_cutout8mean_reflect.md); the course's cnn elsewhere (28 px
    digits and clothes, larger photos)."""
    return "whitenet" if tuple(shape) == (3, 32, 32) else "cnn"


def confusion(pred: torch.Tensor, true: torch.Tensor, n: int) -> np.ndarray:
    return torch.bincount(true * n + pred, minlength=n * n).reshape(n, n).numpy()


class ClassifyTask(TrainableTask):
    """Classification on the one lifecycle: data and network from the options, cross-entropy steps,
    accuracy per epoch, and a test report (confusion matrix, per-class table, worst mistakes)."""

    name = TASK
    Options = ClassifyOptions

    def setup(self) -> None:
        opts, cfg = self.opts, self.cfg
        ds = load_dataset(opts.data, data_dir=opts.data_dir, download=opts.download, image_size=opts.image_size,
                          val_fraction=opts.val_fraction, seed=cfg.seed)
        if not ds.classes or len(ds.classes) < 2:
            raise DataError(f"{opts.data}: classification needs at least 2 classes, found {ds.num_classes}")
        model_recipe = self._choose_model(tuple(ds.train.shape))
        # The dataset's augmentation, with each setting the user gave (same names) put in its place;
        # a resumed run keeps the one it started with (a setting its checkpoint lacks did not exist
        # then, so it was off), even where a dataset's default has changed since.
        names = {f.name for f in fields(Augment)}
        started = (self.resume_state or {}).get("augment")
        if isinstance(started, dict):
            self.augment = Augment(**{k: v for k, v in started.items() if k in names})
        else:
            given = {k: getattr(opts, k) for k in names if hasattr(opts, k) and getattr(opts, k) is not None}
            recipe = {k: v for k, v in model_recipe.items() if k in names and k not in given}
            self.augment = replace(ds.augment, **recipe, **given)
        self.tta = (tta_mode(self.resume_state) if self.resume_state is not None else
                    "none" if not (opts.tta and self.augment.flip) else model_recipe.get("tta", "flip"))
        self.ds = ds
        self.fit_recipe_to_data(len(ds.train))
        c, h, w = ds.train.shape
        self.input_shape = (c, h, w)
        images = ds.train.images if hasattr(ds.train, "images") else ds.train.take(torch.arange(min(len(ds.train), 512)))[0]
        mean, std = _channel_stats(images)
        self.model_name = opts.model
        self.model_kwargs = {"in_channels": c, "num_classes": ds.num_classes, "image_size": [h, w], "mean": mean,
                             "std": std, **_architecture(opts)}
        self.train_batches = Batches(ds.train, cfg.batch_size, device=self.rt.device, shuffle=True, drop_last=True,
                                     augment=self.augment, seed=cfg.seed)
        self.eval_split, self.eval_prefix = (ds.val, "val") if ds.val is not None else (ds.test, "test")
        self.fmt = torch.channels_last if self.rt.channels_last else torch.contiguous_format

    def _choose_model(self, shape: tuple[int, int, int]) -> dict:
        """Resolve --model auto from the data's shape and overlay the network's own recipe
        (recipes.MODEL_RECIPES) on the options the caller did not set; returns that recipe."""
        opts, cfg = self.opts, self.cfg
        if opts.model == "auto":
            opts.model = pick_model(shape)
        if opts.blocks is not None and opts.model != "resnet":   # auto resolved: specs' validate() could not tell
            raise UsageError(f"--blocks applies to the resnet model only (this run uses {opts.model})")
        recipe = MODEL_RECIPES.get(self.name, {}).get(opts.model, {})
        if self.resume_state is None:
            for key, value in recipe.items():
                if key in self.given:
                    continue
                if hasattr(cfg, key):
                    setattr(cfg, key, value)
                elif hasattr(opts, key) and key not in _AUGMENT_KEYS:   # label_smoothing
                    setattr(opts, key, value)
            if recipe:
                self.choices.append(f"{opts.model} recipe for the options not given: " + ", ".join(
                    f"{k} {v}" for k, v in recipe.items() if k not in self.given))
        return recipe

    def build_model(self) -> torch.nn.Module:
        """The network; one with data-dependent initial weights (whitenet's whitening filters) is
        fitted to up to 5,000 training images, only on a new run (a resumed one loads its weights)."""
        model = super().build_model()
        if self.resume_state is None and hasattr(model, "fit_to_data"):
            train = self.ds.train
            n = min(len(train), 5000)
            model.fit_to_data(train.images[:n] if hasattr(train, "images") else train.take(torch.arange(n))[0])
        return model

    def has_validation(self) -> bool:
        return self.ds.val is not None

    def summary(self) -> str:
        return data_summary(self.opts.data, self.ds)

    def title(self) -> str:
        return f"lensforge classify: {self.opts.data} / {self.opts.model}"

    def config_extra(self) -> dict:
        return {"augment": self.augment.to_dict(), "preprocess": self.ds.spec.to_dict(), "splits": split_sizes(self.ds)}

    def extra_meta(self) -> dict:
        return {"classes": list(self.ds.classes), "preprocess": self.ds.spec.to_dict(), "augment": self.augment.to_dict(),
                "tta": self.tta}

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

    def final_results(self, run_dir: Path, fit) -> dict:
        from ..report import image_grid, per_class_table, plot_confusion_matrix

        ds, net, rt = self.ds, self.model, self.rt
        out: dict = {"monitor": self.cfg.monitor if ds.val is not None else "none (no validation split: final weights)",
                     "splits": split_sizes(ds), "classes": ds.num_classes, "skipped_files": ds.skipped}
        if ds.val is not None:
            out["val_accuracy"] = fit.best_value
        split = ds.test if ds.test is not None else ds.val
        prefix = "test" if ds.test is not None else "val"
        logits, y = predict_logits(net, split, rt)
        plain = (logits.argmax(1) == y).float().mean().item()
        if self.tta != "none":
            logits, _ = predict_logits(net, split, rt, tta=self.tta)
        prob = logits.softmax(1)
        pred = prob.argmax(1)
        cm = confusion(pred, y, ds.num_classes)
        table = per_class_table(cm, ds.classes)
        if prefix == "test":
            out.update({"test_accuracy_plain": plain, "test_accuracy": (pred == y).float().mean().item(),
                        "test_loss": F.nll_loss(prob.clamp_min(1e-12).log(), y).item(),
                        "tta": self.tta, "test_images": len(y), "per_class": table})
        plot_confusion_matrix(cm, ds.classes, run_dir / "confusion_matrix.png")
        wrong = (pred != y).nonzero().flatten()
        order = wrong[prob[wrong, pred[wrong]].argsort(descending=True)][:32]
        if len(order):
            imgs, _ = split.take(order)
            titles = [f"{ds.classes[y[i]]} -> {ds.classes[pred[i]]} ({prob[i, pred[i]]:.2f})" for i in order.tolist()]
            image_grid(imgs.numpy(), run_dir / "mistakes.png", titles=titles, ncols=8)
        write_table_csv(run_dir / "per_class.csv", table)
        self.figures += [(f"Confusion matrix ({prefix})", "confusion_matrix.png"), ("Most confident mistakes", "mistakes.png")]
        self.tables.append(("Per-class precision / recall", table))
        return out


#: Recipe keys that are augmentation (set on the Augment) or the TTA mode, not task options.
_AUGMENT_KEYS = {f.name for f in fields(Augment)} | {"tta"}


def _architecture(opts: ClassifyOptions) -> dict:
    """The width/depth options the chosen network takes (stored in the checkpoint's model_kwargs)."""
    arch: dict = {}
    if opts.width is not None:
        arch["width"] = opts.width
    if opts.blocks is not None:
        arch["blocks"] = [opts.blocks] * 3
    return arch


def _channel_stats(images: torch.Tensor) -> tuple[list[float], list[float]]:
    sample = images[:: max(1, len(images) // 10000)].float() / 255
    mean = sample.mean(dim=(0, 2, 3))
    std = sample.std(dim=(0, 2, 3)).clamp_min(1e-3)
    return [round(v, 5) for v in mean.tolist()], [round(v, 5) for v in std.tolist()]


def train(data: str | None = None, *, out: str | Path | None = None, resume: str | Path | None = None,
          **options) -> Run:
    """Train a classifier and write a complete run folder; returns the Run (dir, results, history).

    `options` are any ClassifyOptions or TrainConfig fields (model, epochs, batch_size, lr, seed, ...);
    defaults are the classify recipe (lensforge.recipes), exactly as on the command line.
    """
    return run(ClassifyTask, data, out=out, resume=resume, **options)


# ----------------------------------------------------------------------------- loaded models

@dataclass
class Prediction:
    """One input's prediction: the top class and its probability, the top-k list, or an error."""

    file: str
    label: str | None = None
    confidence: float | None = None
    top: list[tuple[str, float]] = field(default_factory=list)
    error: str | None = None

    def record(self, top_k: int = 1) -> Record:
        values = {"label": self.label, "confidence": self.confidence}
        if top_k > 1:
            values["top_k"] = [f"{l}:{c:.4f}" for l, c in self.top]
        return Record(self.file, values, self.error)


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
        self.tta = tta_mode(ckpt)

    def _inputs(self, images) -> tuple[list[str], list[np.ndarray | None], list[str | None]]:
        names, arrays, errors = [], [], []
        for i, item in enumerate(images):
            if isinstance(item, InputFile):
                name, src = item.name, item.source()
            elif isinstance(item, (str, Path)):
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
            logits, _ = predict_logits(self.model, TensorSet(x), self.rt, batch_size, tta=self.tta)
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


@accepts_onnx(TASK)
def load(weights: str | Path, device: str = "auto") -> Classifier:
    """Load a trained classifier (a .pt file or a run folder) safely (weights_only), or an exported
    .onnx file run by onnxruntime (same predict API and outputs: lensforge.export.runtime)."""
    return Classifier(load_checkpoint(weights, task=TASK), device=device)


def write_predictions_csv(path: str | Path, preds: list[Prediction], top_k: int = 1) -> None:
    """file, label, confidence, [top_k,] error: the apply verbs' one CSV layout."""
    write_records_csv(path, [p.record(top_k) for p in preds], ["label", "confidence"] + (["top_k"] if top_k > 1 else []))


def evaluate(weights: str | Path, data: str | None = None, *, data_dir=None, split: str = "test",
             batch_size: int = 512, device: str = "auto", download: bool = True) -> dict:
    """`<split>_accuracy`, `<split>_loss` and the per-class table of saved weights on a dataset's split,
    with the preprocessing stored in the checkpoint. `data`/`data_dir` default to the run's own."""
    clf = load(weights, device=device)
    trained = clf.meta.get("options", {})
    data = data if data is not None else trained.get("data")
    data_dir = data_dir if data_dir is not None else trained.get("data_dir")
    if not data:
        raise UsageError(f"{weights}: the checkpoint does not say what it was trained on; pass --data")
    spec = clf.spec
    ds = load_dataset(data, data_dir=data_dir, download=download, image_size=list(spec.size), channels=spec.channels,
                      style=spec.style, val_fraction=trained.get("val_fraction", 0.0) if split == "val" else 0.0,
                      seed=clf.meta.get("config", {}).get("seed", 0))
    target = {"test": ds.test, "train": ds.train, "val": ds.val}.get(split)
    if target is None:
        raise UsageError(f"--split {split}: {data} has no such split")
    if tuple(target.shape) != (spec.channels, *spec.size):
        raise DataError(f"{data}: images are {tuple(target.shape)}, model expects {(spec.channels, *spec.size)}")
    if list(ds.classes) != clf.classes:
        raise DataError(f"{data}: classes {ds.classes[:5]}... differ from the model's {clf.classes[:5]}...")
    logits, y = predict_logits(clf.model, target, clf.rt, batch_size, tta=clf.tta)
    pred = logits.argmax(1)
    from ..report import per_class_table
    cm = confusion(pred, y, len(clf.classes))
    return {"data": data, "split": split, f"{split}_accuracy": (pred == y).float().mean().item(),
            f"{split}_loss": F.cross_entropy(logits, y).item(), f"{split}_images": len(y),
            "per_class": per_class_table(cm, clf.classes)}
