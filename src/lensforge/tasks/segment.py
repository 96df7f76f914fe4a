"""Semantic segmentation on the one lifecycle: any image/mask folder or zip, U-Net or DeepLab.

    run = train("cells/", model="unet", epochs=30)
    seg = load(run.dir)
    for rec in seg.predict_files(["big_photo.jpg"], out_dir="masks/"):
        print(rec.file, rec.values, rec.error)

Training samples random crops at native resolution (no resizing), augmented identically for image
and mask; the loss is cross-entropy + soft Dice. Evaluation and prediction run on whole images of
any size by blended overlap-tiling (tasks/segment_ops.py), so metrics are on full-resolution masks.
"""
from __future__ import annotations

import io
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable

import numpy as np
import torch

from ..data.masks import ClassTable, encode_colour
from ..data.segdata import (Augmentation, CropBatches, SegSplit, add_border_weights, class_frequencies,
                            load_segmentation)
from ..engine.checkpoint import load_checkpoint
from ..engine.device import select_runtime
from ..errors import DataError, UsageError
from ..fileio import write_bytes
from ..models.segmentation import segmentation_loss
from ..specs.segment import SegmentOptions
from .apply import accepts_onnx, Record, expand_inputs, save_image, unique_stems, write_records_csv, write_table_csv
from .common import restore_model
from .lifecycle import Run, TrainableTask, run
from .segment_ops import (ISBI_THRESHOLDS, adapted_rand, confusion, foreground_counts, isbi_pixel_error, predict_probs,
                          scores)

TASK = "segment"
DEFAULT_WIDTH = {"unet": 16, "deeplab": 128}


def model_spec(opts: SegmentOptions, channels: int, k: int) -> tuple[str, dict]:
    """Registry name and constructor kwargs (stored in the checkpoint) for the chosen network."""
    width = opts.width or DEFAULT_WIDTH[opts.model]
    if opts.model == "unet":
        return "unet", {"in_channels": channels, "out_channels": k, "base": width, "depth": opts.depth}
    return "deeplab", {"in_channels": channels, "num_classes": k, "rates": list(opts.rates), "width": width}


def model_multiple(name: str, kwargs: dict) -> int:
    return 2 ** kwargs["depth"] if name == "unet" else 16


def _class_weights(opts: SegmentOptions, train: SegSplit, k: int) -> torch.Tensor | None:
    if opts.class_weights == "none":
        return None
    if opts.class_weights == "balanced":
        # inverse square root of frequency: full inverse frequency over-weights specks of a rare class
        freq = class_frequencies(train, k).clamp_min(1e-4)
        w = freq.rsqrt()
        return (w / (w * freq).sum()).float()
    ws = [float(v) for v in opts.class_weights.split(",")]
    if len(ws) != k:
        raise UsageError(f"--class-weights has {len(ws)} values for {k} classes")
    return torch.tensor(ws, dtype=torch.float32)


class SegmentTask(TrainableTask):
    name = TASK
    Options = SegmentOptions

    def setup(self) -> None:
        opts, cfg = self.opts, self.cfg
        self._cpu0 = time.process_time()
        d = load_segmentation(opts.data, classes=opts.classes, num_classes=opts.num_classes,
                              mask_mode=opts.mask_format, val_fraction=opts.val_fraction,
                              test_fraction=opts.test_fraction, skip_unmatched=opts.skip_unmatched, seed=cfg.seed)
        self.data = d
        k = d.num_classes
        self.model_name, self.model_kwargs = model_spec(opts, d.channels, k)
        self.multiple = model_multiple(self.model_name, self.model_kwargs)
        if opts.crop % self.multiple:
            raise UsageError(f"--crop {opts.crop} must be a multiple of {self.multiple} for {opts.model} "
                             f"(depth {opts.depth})")
        if opts.border_weight > 0:
            add_border_weights(d.train, opts.border_weight)
        self.class_weights = _class_weights(opts, d.train, k)
        self.aug = Augmentation(flip=opts.flip, rotate=opts.flip, elastic=opts.elastic,
                                brightness=opts.jitter, contrast=2 * opts.jitter)
        self.train_batches = CropBatches(d.train, cfg.batch_size, opts.crop, self.aug, device=self.rt.device,
                                         seed=cfg.seed, steps=opts.steps_per_epoch)

    def build_model(self):
        model = super().build_model()
        if self.opts.pretrained and self.resume_state is None:
            model.load_encoder(self.opts.pretrained)
        return model

    def has_validation(self) -> bool:
        return self.data.val is not None

    def title(self) -> str:
        return f"lensforge segment: {Path(self.opts.data).name} / {self.opts.model}"

    def summary(self) -> str:
        d = self.data
        sizes = {k: len(s) for k, s in (("train", d.train), ("val", d.val), ("test", d.test)) if s is not None}
        skipped = f", skipped {sum(d.skipped.values())} image(s) without masks" if d.skipped else ""
        return (f"{d.name}: {d.mask_mode} masks, {d.num_classes} classes ({', '.join(d.classes.names)}), "
                f"{d.channels} channel(s), splits {sizes}{skipped}; {len(self.train_batches)} batches of "
                f"{self.cfg.batch_size}x{self.opts.crop}px per epoch")

    def config_extra(self) -> dict:
        d = self.data
        return {"classes": d.classes.to_dict(), "mask_mode": d.mask_mode, "channels": d.channels,
                "splits": {k: len(s) for k, s in (("train", d.train), ("val", d.val), ("test", d.test)) if s is not None},
                "skipped_unmatched": d.skipped, "augmentation": vars(self.aug),
                "class_weights": self.class_weights.tolist() if self.class_weights is not None else None}

    def extra_meta(self) -> dict:
        d = self.data
        return {"classes": d.classes.to_dict(), "channels": d.channels, "mask_mode": d.mask_mode,
                "multiple": self.multiple}

    def training_step(self, model, batch):
        x, (y, w) = batch
        logits = model(x)
        loss, logs = segmentation_loss(logits, y, class_weights=self.class_weights, pixel_weights=w,
                                       dice=self.opts.dice)
        return loss, logs

    def _predict(self, model, image: torch.Tensor, tta: bool) -> torch.Tensor:
        x = image.to(self.rt.device).float().div(255)
        return predict_probs(model, x, tile=self.opts.tile, overlap=self.opts.overlap, multiple=self.multiple,
                             tta=tta, autocast=self.rt.autocast)

    def evaluate(self, model) -> dict[str, float]:
        if self.data.val is None:
            return {}
        was = model.training
        model.eval()
        k = self.data.num_classes
        cm = torch.zeros(k, k, dtype=torch.long)
        for img, mask in zip(self.data.val.images, self.data.val.masks):
            cm += confusion(self._predict(model, img, False).argmax(0).cpu(), mask, k)
        model.train(was)
        s = scores(cm, self.data.classes.names)
        return {"val_miou": s["miou"], "val_pixel_accuracy": s["pixel_accuracy"]}

    def final_results(self, run_dir: Path, fit) -> dict:
        d = self.data
        split, prefix = (d.test, "test") if d.test is not None else (d.val, "val")
        out: dict = {"monitor": self.cfg.monitor if d.val is not None else "none (no validation split: final weights)",
                     # CPU time of this process through setup and training (all threads): on a shared
                     # machine wall-clock train_seconds depends on the other jobs, this does not
                     "train_cpu_seconds": round(time.process_time() - self._cpu0, 1)}
        if split is None:
            return out
        res, per_image, preds = evaluate_split(self.model, split, d.classes, d.mask_mode, self.rt,
                                               tile=self.opts.tile, overlap=self.opts.overlap,
                                               multiple=self.multiple, tta=self.opts.tta)
        out.update({f"{prefix}_{k}": v for k, v in res.items()})
        out["tta"] = "flip" if self.opts.tta else "none"
        table = iou_table(res, d.classes.names)
        write_table_csv(run_dir / "per_class.csv", table)
        write_table_csv(run_dir / f"{prefix}_images.csv", per_image)
        self.tables.append(("Per-class IoU and Dice", table))
        strip_figure(split, preds, per_image, d.classes, run_dir / "examples.png")
        self.figures.append((f"{prefix.capitalize()} images, best and worst by mean IoU: image / truth / "
                             f"prediction / overlay", "examples.png"))
        return out


# ----------------------------------------------------------------------------- evaluation


def evaluate_split(model, split: SegSplit, classes: ClassTable, mask_mode: str, rt, *, tile: int, overlap: int,
                   multiple: int, tta: bool) -> tuple[dict, list[dict], list[np.ndarray]]:
    """Whole-image metrics over a split; per-image rows; the predicted masks (for figures)."""
    k = len(classes)
    cm = torch.zeros(k, k, dtype=torch.long)
    rows, preds, rands, raw_rands = [], [], [], []
    binary = k == 2
    base_cm = torch.zeros(k, k, dtype=torch.long)
    fg_counts = torch.zeros(len(ISBI_THRESHOLDS), 3, dtype=torch.long)
    majority = int(torch.stack([torch.bincount(m.flatten().long(), minlength=k) for m in split.masks]).sum(0).argmax())
    for img, mask, name in zip(split.images, split.masks, split.names):
        x = img.to(rt.device).float().div(255)
        probs = predict_probs(model, x, tile=tile, overlap=overlap, multiple=multiple, tta=tta,
                              autocast=rt.autocast).cpu()
        pred = probs.argmax(0)
        if binary:
            fg_counts += foreground_counts(probs[1], mask)
        c = confusion(pred, mask, k)
        cm += c
        base_cm += confusion(torch.full_like(mask, majority), mask, k)
        s = scores(c, classes.names)
        row = {"file": name, "miou": s["miou"], "pixel_accuracy": s["pixel_accuracy"]}
        if binary:
            r = adapted_rand(pred.numpy(), mask.numpy())
            rands.append(r)
            raw_rands.append(adapted_rand(pred.numpy(), mask.numpy(), thin=False))
            row["adapted_rand_error"] = r
        rows.append(row)
        preds.append(pred.numpy().astype(np.uint8))
    s = scores(cm, classes.names)
    res = {"miou": s["miou"], "iou": s["iou"], "dice": s["dice"], "mean_dice": s["mean_dice"],
           "pixel_accuracy": s["pixel_accuracy"], "images": len(split),
           "majority_class_miou": scores(base_cm, classes.names)["miou"]}
    if binary:
        # ISBI-2012's definition (see segment_ops.ISBI_THRESHOLDS), so the figure compares with the
        # challenge's and the U-Net paper's; 1 - pixel accuracy counts every disagreeing pixel of the mask
        # as written, and 1 - the mask's foreground F-score is the ISBI figure without the threshold sweep.
        res["pixel_error"], res["pixel_error_threshold"] = isbi_pixel_error(fg_counts)
        fg_dice = s["dice"][classes.names[1]]     # None: no foreground in truth or mask, nothing to get wrong
        res["pixel_error_mask"] = 0.0 if fg_dice is None else 1 - fg_dice
        res["pixel_disagreement"] = 1 - s["pixel_accuracy"]
        res["pixel_error_definition"] = ("ISBI-2012: 1 - maximal F-score of foreground pixels over thresholds 0, 0.1, "
                                         "..., 0.9 of its probability, all images as one stack")
        res["adapted_rand_error"] = float(np.mean(rands))
        res["adapted_rand_error_unthinned"] = float(np.mean(raw_rands))
        res["rand_regions"] = (f"4-connected components of class '{classes.names[1]}'; predicted boundary pixels "
                               "joined to the nearest region (border thinning), truth boundaries ignored")
    return res, rows, preds


def iou_table(res: dict, names: list[str]) -> list[dict]:
    return [{"class": n, "iou": res["iou"][n], "dice": res["dice"][n]} for n in names]


def _rgb(img: torch.Tensor) -> np.ndarray:
    a = img.numpy()
    return np.repeat(a[0][..., None], 3, 2) if a.shape[0] == 1 else a.transpose(1, 2, 0)


def overlay(image_rgb: np.ndarray, mask: np.ndarray, colours, alpha: float = 0.45) -> np.ndarray:
    """The image with each non-background class tinted in its colour (background left as is)."""
    col = encode_colour(mask, colours).astype(np.float32)
    out = image_rgb.astype(np.float32)
    fg = (mask > 0)[..., None]
    if len(colours) == 2:   # binary: white foreground would not show on a bright image; tint it green
        col[mask > 0] = (0, 220, 0)
    out = np.where(fg, (1 - alpha) * out + alpha * col, out)
    return out.clip(0, 255).astype(np.uint8)


def strip_figure(split: SegSplit, preds: list[np.ndarray], rows: list[dict], classes: ClassTable, path: Path,
                 n: int = 2) -> None:
    from matplotlib.figure import Figure

    order = sorted(range(len(rows)), key=lambda i: rows[i]["miou"], reverse=True)
    picks = order[:n] + [i for i in order[::-1][:n] if i not in order[:n]]
    fig = Figure(figsize=(12, 3.1 * len(picks)), layout="constrained")
    axes = fig.subplots(len(picks), 4, squeeze=False)
    for r, i in enumerate(picks):
        img = _rgb(split.images[i])
        truth, pred = split.masks[i].numpy(), preds[i]
        panels = [img, encode_colour(truth, classes.colours), encode_colour(pred, classes.colours),
                  overlay(img, pred, classes.colours)]
        label = "best" if r < n else "worst"
        titles = [f"{label}: {Path(rows[i]['file']).name}", "truth", f"prediction (mIoU {rows[i]['miou']:.3f})",
                  "overlay"]
        for ax, p, t in zip(axes[r], panels, titles):
            ax.imshow(p, interpolation="nearest")
            ax.set_title(t, fontsize=9)
            ax.axis("off")
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=80)
    write_bytes(path, buf.getvalue())


# ----------------------------------------------------------------------------- API


def train(data: str | None = None, *, out: str | Path | None = None, resume: str | Path | None = None,
          **options) -> Run:
    """Train a segmentation model and write a complete run folder (`options`: SegmentOptions and
    TrainConfig fields; defaults are the segment recipe, the same as on the command line)."""
    return run(SegmentTask, data, out=out, resume=resume, **options)


@dataclass
class Segmenter:
    """A trained segmentation model, ready for images of any size."""

    model: torch.nn.Module
    classes: ClassTable
    channels: int
    multiple: int
    tile: int
    overlap: int
    tta: bool
    rt: object
    meta: dict

    def probabilities(self, image: np.ndarray, *, tta: bool | None = None, tile: int | None = None,
                      overlap: int | None = None) -> torch.Tensor:
        """(H,W[,3]) uint8 image -> (K,H,W) class probabilities at full resolution."""
        t = torch.from_numpy(np.ascontiguousarray(image))
        t = t[None] if t.dim() == 2 else t.permute(2, 0, 1)
        x = t.to(self.rt.device).float().div(255)
        return predict_probs(self.model, x, tile=tile or self.tile, overlap=self.overlap if overlap is None else overlap,
                             multiple=self.multiple, tta=self.tta if tta is None else tta, autocast=self.rt.autocast)

    def predict(self, image: np.ndarray, **kw) -> np.ndarray:
        """(H,W) uint8 class indices."""
        return self.probabilities(image, **kw).argmax(0).cpu().numpy().astype(np.uint8)

    def predict_files(self, inputs: Iterable, out_dir: str | Path, **kw) -> list[Record]:
        """Segment files/folders/zips; writes <stem>_mask.png (class indices), <stem>_colour.png,
        <stem>_overlay.jpg and predictions.csv (file, share_<class>..., error) into out_dir."""
        from ..data.imageio import read_image

        files = expand_inputs([str(p) for p in inputs])
        out_dir = Path(out_dir)
        out_dir.mkdir(parents=True, exist_ok=True)
        records = []
        for f, stem in zip(files, unique_stems(files)):
            try:
                img = read_image(f.source(), "L" if self.channels == 1 else "RGB", name=str(f))
            except DataError as e:
                records.append(Record(str(f), error=str(e)))
                continue
            mask = self.predict(img, **kw)
            counts = np.bincount(mask.ravel(), minlength=len(self.classes))
            share = {f"share_{n}": float(c / mask.size) for n, c in zip(self.classes.names, counts)}
            save_image(out_dir / f"{stem}_mask.png", mask)
            save_image(out_dir / f"{stem}_colour.png", encode_colour(mask, self.classes.colours))
            rgb = img if img.ndim == 3 else np.repeat(img[..., None], 3, 2)
            save_image(out_dir / f"{stem}_overlay.jpg", overlay(rgb, mask, self.classes.colours))
            records.append(Record(str(f), {"width": mask.shape[1], "height": mask.shape[0], **share}))
        cols = ["width", "height"] + [f"share_{n}" for n in self.classes.names]
        write_records_csv(out_dir / "predictions.csv", records, cols)
        return records


@accepts_onnx(TASK)
def load(weights: str | Path, device: str = "auto") -> Segmenter:
    """Load a trained segmentation model (a .pt file or a run folder) safely (weights_only)."""
    ckpt = load_checkpoint(weights, task=TASK)
    rt = select_runtime(device, "auto")
    model = restore_model(ckpt).to(rt.device).eval()
    opts = ckpt.get("options", {})
    return Segmenter(model, ClassTable.from_dict(ckpt["classes"]), int(ckpt["channels"]), int(ckpt["multiple"]),
                     int(opts.get("tile", 256)), int(opts.get("overlap", 64)), bool(opts.get("tta", True)), rt, ckpt)


def evaluate(weights: str | Path, data: str | None = None, *, split: str = "test", tta: bool | None = None,
             device: str = "auto") -> dict:
    """Test metrics of saved weights on a dataset's split (default: the data the run was trained on,
    split exactly as in training)."""
    seg = load(weights, device=device)
    opts = seg.meta.get("options", {})
    data = data if data is not None else opts.get("data")
    if not data:
        raise UsageError(f"{weights}: the checkpoint does not say what it was trained on; pass --data")
    d = load_segmentation(data, classes=opts.get("classes"), num_classes=len(seg.classes),
                          mask_mode=seg.meta.get("mask_mode", "auto"), channels=seg.channels,
                          val_fraction=opts.get("val_fraction", 0.0), test_fraction=opts.get("test_fraction", 0.2),
                          skip_unmatched=opts.get("skip_unmatched", False),
                          seed=seg.meta.get("config", {}).get("seed", 0))
    if d.classes.names != seg.classes.names and d.mask_mode != "binary":
        raise DataError(f"{data}: classes {d.classes.names} differ from the model's {seg.classes.names}")
    target = {"test": d.test, "train": d.train, "val": d.val}.get(split)
    if target is None:
        raise UsageError(f"--split {split}: {data} has no such split")
    res, rows, _ = evaluate_split(seg.model, target, seg.classes, d.mask_mode, seg.rt, tile=seg.tile,
                                  overlap=seg.overlap, multiple=seg.multiple, tta=seg.tta if tta is None else tta)
    return {"data": str(data), "split": split, **{f"{split}_{k}": v for k, v in res.items()}, "per_image": rows}
