"""Object detection on the one lifecycle: `lensforge detect train|eval|predict` and its Python API.

Training reads VOC / YOLO / COCO data (lensforge.data.boxes), holds the images in memory at the
training size, and feeds batches augmented with mosaic + random affine + HSV + flip
(lensforge.data.detaugment; mosaic off for the last `close_mosaic` epochs) to a YOLOv8-style
detector (lensforge.models.detection) trained with the task-aligned assigner and CIoU + DFL loss
(lensforge.detect). The end of a run scores the test split with the COCO protocol
(faster-coco-eval), re-scores the exported json with pycocotools, and draws PR curves, the
confusion matrix and a strip of test images with predicted and true boxes.
"""
from __future__ import annotations

import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Sequence

import cv2
import numpy as np
import torch

from ..data.boxes import DetectionData, DetSample, load_detection
from ..data.detaugment import AugmentConfig, DetImages, decode_samples, letterbox, make_batch, mosaic_epochs_off
from ..data.imageio import read_image
from ..detect.cocoeval import (ImageTruth, confusion_matrix, evaluate as coco_evaluate, ground_truth_json,
                               predictions_json, pycocotools_score)
from ..detect.loss import DetectionLoss
from ..detect.nms import decode, postprocess
from ..engine.checkpoint import load_checkpoint
from ..engine.device import select_runtime
from ..errors import DataError, UsageError
from ..fileio import write_json, write_text
from ..models import create_model
from ..specs.detect import DetectOptions
from .apply import InputFile, Record, accepts_onnx, save_image, write_records_csv
from .common import restore_model
from .lifecycle import TrainableTask, run

TASK = "detect"
PALETTE = [(230, 25, 75), (60, 180, 75), (0, 130, 200), (245, 130, 48), (145, 30, 180), (70, 240, 240),
           (240, 50, 230), (210, 245, 60), (250, 190, 212), (0, 128, 128)]


def _gen(*keys: int) -> np.random.Generator:
    return np.random.default_rng([int(k) for k in keys])


class DetBatches:
    """Augmented training batches; shuffling and augmentation are seeded by (seed, epoch, step), so
    a resumed run sees exactly the batches an uninterrupted one would."""

    def __init__(self, data: DetImages, batch_size: int, aug: AugmentConfig, epochs: int, close_mosaic: int, seed: int):
        self.data, self.bs, self.aug, self.seed = data, min(batch_size, len(data)), aug, seed
        self.mosaic_off = mosaic_epochs_off(epochs, close_mosaic)

    def __len__(self) -> int:
        return max(1, len(self.data) // self.bs)  # drop the ragged last batch: BatchNorm dislikes tiny ones

    def epoch(self, epoch: int = 0, start: int = 0):
        order = _gen(self.seed, epoch).permutation(len(self.data))
        for step in range(start, len(self)):
            idx = order[step * self.bs:(step + 1) * self.bs].tolist()
            images, targets = make_batch(self.data, idx, _gen(self.seed, epoch, step, 7), self.aug,
                                         mosaic=epoch < self.mosaic_off)
            yield images.float().div_(255), targets


@torch.no_grad()
def predict_letterboxed(model, images: torch.Tensor, conf: float, iou: float, multi_label: bool,
                        device: torch.device, batch_size: int = 8) -> list[torch.Tensor]:
    """(B, 3, S, S) uint8 letterboxed images -> per image (K, 6) boxes in letterboxed pixels."""
    model.eval()
    out = []
    for i in range(0, len(images), batch_size):
        x = images[i:i + batch_size].to(device).float().div_(255)
        raw = model(x)
        boxes, probs = decode([r.float().cpu() for r in raw], model.nc, model.reg_max, model.strides)
        out += postprocess(boxes, probs, conf=conf, iou=iou, multi_label=multi_label)
    return out


def _to_original(d: torch.Tensor, pad: tuple[float, float], sx: float, sy: float, w: int, h: int) -> torch.Tensor:
    d = d.clone()
    d[:, [0, 2]] = ((d[:, [0, 2]] - pad[0]) / sx).clamp(0, w)
    d[:, [1, 3]] = ((d[:, [1, 3]] - pad[1]) / sy).clamp(0, h)
    return d


def score_split(model, samples: list[DetSample], classes: list[str], size: int, device, conf: float, iou: float,
                out_dir: Path | None = None) -> tuple[dict, list[ImageTruth], list[torch.Tensor], DetImages]:
    """COCO-score `samples`: predictions mapped back to original pixels; with out_dir, the ground
    truth and predictions are written there as COCO json and re-scored with pycocotools."""
    data = decode_samples(samples, size)
    by_name = {s.name: s for s in samples}
    truths, dets = [], []
    for i0 in range(0, len(data), 16):
        idx = list(range(i0, min(len(data), i0 + 16)))
        images, _ = make_batch(data, idx, np.random.default_rng(0), None)
        preds = predict_letterboxed(model, images, conf, iou, True, device)
        for i, d in zip(idx, preds):
            s = by_name[data.names[i]]
            h, w = data.images[i].shape[:2]
            pad = ((size - w) // 2, (size - h) // 2)
            dets.append(_to_original(d, pad, w / s.width, h / s.height, s.width, s.height))
            truths.append(ImageTruth(s.name, s.width, s.height, s.boxes, s.labels))
    gt, pr = ground_truth_json(truths, classes), predictions_json(dets)
    res = coco_evaluate(gt, pr, classes)
    if out_dir is not None:
        write_json(out_dir / "test_ground_truth.coco.json", gt)
        write_json(out_dir / "test_predictions.coco.json", pr)
        if pr:
            res["pycocotools_map50_95"], res["pycocotools_map50"] = pycocotools_score(
                out_dir / "test_ground_truth.coco.json", out_dir / "test_predictions.coco.json")
    return res, truths, dets, data


class DetectTask(TrainableTask):
    name = TASK
    Options = DetectOptions
    needs_validation = ("early_stop",)

    def setup(self) -> None:
        o, cfg = self.opts, self.cfg
        ds = load_detection(o.data)
        self.ds: DetectionData = ds
        present = [s for s in (p.strip() for p in o.train_splits.split(",")) if s in ds.splits and s != o.val_split]
        if "train" not in ds.splits and "trainval" in ds.splits and not present:
            present = ["trainval"]
        if not present:
            raise DataError(f"{o.data}: none of the training splits {o.train_splits!r} exists "
                            f"(found: {', '.join(ds.splits)})")
        if o.val_split is not None and o.val_split not in ds.splits:
            raise UsageError(f"--val-split {o.val_split}: {o.data} has no such split (found: {', '.join(ds.splits)})")
        self.train_samples = [s for k in present for s in ds.splits[k]]
        self.test_name = o.test_split if o.test_split in ds.splits else ("val" if "val" in ds.splits else None)
        self.trained_on = present
        t0 = time.perf_counter()
        train = decode_samples(self.train_samples, o.image_size, ds.sanity)
        self.decode_seconds = time.perf_counter() - t0
        self.val = decode_samples(ds.splits[o.val_split], o.image_size) if o.val_split else None
        self.aug = AugmentConfig(o.mosaic, o.scale, o.translate, (o.hsv_h, o.hsv_s, o.hsv_v), o.flip)
        self.train_batches = DetBatches(train, cfg.batch_size, self.aug, cfg.epochs, o.close_mosaic, cfg.seed)
        self.n_train = len(train)
        self.model_name = f"det-{o.model}"
        self.model_kwargs = {"num_classes": len(ds.classes)}
        self.loss = DetectionLoss(len(ds.classes), 16, (8, 16, 32))

    def build_model(self):
        # the ImageNet file only seeds a new run; checkpoints carry all weights, so model_kwargs
        # (what restore uses) never names a file that may be gone at predict time
        weights = self.opts.backbone_weights if self.resume_state is None else None
        return create_model(self.model_name, **self.model_kwargs, **({"backbone_weights": weights} if weights else {}))

    def has_validation(self) -> bool:
        return self.val is not None

    def summary(self) -> str:
        return (f"{self.ds.summary(self.opts.data)}; training on {'+'.join(self.trained_on)} ({self.n_train} images), "
                f"testing on {self.test_name or 'nothing'}; classes: {', '.join(self.ds.classes)}")

    def config_extra(self) -> dict:
        return {"classes": self.ds.classes, "format": self.ds.format, "augment": asdict(self.aug),
                "splits": {k: len(v) for k, v in self.ds.splits.items()}, "trained_on": self.trained_on}

    def extra_meta(self) -> dict:
        return {"classes": self.ds.classes, "image_size": self.opts.image_size}

    def training_step(self, model, batch):
        images, targets = batch
        return self.loss(model(images.to(self.rt.device)), targets)

    def evaluate(self, model) -> dict[str, float]:
        if self.val is None:
            return {}
        samples = self.ds.splits[self.opts.val_split]
        res, *_ = score_split(model, samples, self.ds.classes, self.opts.image_size, self.rt.device,
                              self.opts.conf, self.opts.iou)
        return {"val_map50": res["map50"], "val_map50_95": res["map50_95"]}

    def final_results(self, run_dir: Path, fit) -> dict:
        if self.test_name is None:
            return {"test": "none (the data set has no test or val split)"}
        t0 = time.perf_counter()
        res, truths, dets, data = score_split(self.model, self.ds.splits[self.test_name], self.ds.classes,
                                              self.opts.image_size, self.rt.device, self.opts.conf, self.opts.iou,
                                              run_dir)
        classes = self.ds.classes
        out = {"test_split": self.test_name, "test_images": len(truths), "test_map50": res["map50"],
               "test_map50_95": res["map50_95"], "test_map75": res["map75"], "test_ap50": res["ap50"],
               "test_ap50_95": res["ap50_95"], "test_ap_small": res["ap_small"], "test_ap_medium": res["ap_medium"],
               "test_ap_large": res["ap_large"], "eval_seconds": round(time.perf_counter() - t0, 2),
               "train_images_per_second": round(self.n_train * len(fit.history) / max(fit.train_seconds, 1e-9), 2),
               "data_summary": self.ds.summary(self.opts.data)}
        if "pycocotools_map50" in res:
            out["pycocotools_map50"], out["pycocotools_map50_95"] = res["pycocotools_map50"], res["pycocotools_map50_95"]
        draw_report_figures(run_dir, classes, res, truths, dets, data, self.ds.splits[self.test_name])
        self.figures += [("Precision-recall at IoU 0.5 (test)", "pr_curves.png"),
                         ("Confusion matrix at conf 0.25, IoU 0.45 (with background)", "confusion_matrix.png"),
                         ("Test predictions (coloured) and ground truth (white)", "predictions.png")]
        self.tables.append(("Per-class AP (test)", [{"class": c, "AP50": round(res["ap50"].get(c, 0.0), 4),
                                                     "AP50-95": round(res["ap50_95"].get(c, 0.0), 4)} for c in classes]))
        return out


def draw_report_figures(run_dir: Path, classes, res, truths, dets, data: DetImages, samples) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from ..report import plot_confusion_matrix

    fig, ax = plt.subplots(figsize=(5, 4))
    for k, c in enumerate(classes):
        ax.plot(res["recall_points"], res["pr50"][k], label=f"{c} AP50={res['ap50'].get(c, 0):.3f}")
    ax.set(xlabel="recall", ylabel="precision", xlim=(0, 1), ylim=(0, 1.02), title=f"mAP@0.5 = {res['map50']:.3f}")
    ax.legend(fontsize=8, loc="lower left")
    fig.tight_layout()
    fig.savefig(run_dir / "pr_curves.png", dpi=110)
    plt.close(fig)
    cm = confusion_matrix(truths, dets, len(classes))
    plot_confusion_matrix(cm, list(classes) + ["background"], run_dir / "confusion_matrix.png", normalize=False)
    write_json(run_dir / "confusion_matrix.json", {"labels": list(classes) + ["background"], "rows_true": cm.tolist()})
    by_name = {s.name: s for s in samples}
    tiles = []
    for t, d in list(zip(truths, dets))[:8]:
        img = read_image(by_name[t.file_name].read(), "RGB", name=t.file_name)
        tiles.append(draw_boxes(img, d, classes, truth=t.boxes, conf=0.25))
    if tiles:
        h = 320
        tiles = [cv2.resize(x, (round(x.shape[1] * h / x.shape[0]), h), interpolation=cv2.INTER_AREA) for x in tiles]
        rows = [np.concatenate(tiles[i:i + 4], 1) for i in range(0, len(tiles), 4)]
        w = max(r.shape[1] for r in rows)
        rows = [np.pad(r, ((0, 0), (0, w - r.shape[1]), (0, 0)), constant_values=255) for r in rows]
        save_image(run_dir / "predictions.png", np.concatenate(rows, 0))


def draw_boxes(img: np.ndarray, dets, classes, truth=None, conf: float = 0.0) -> np.ndarray:
    out = np.ascontiguousarray(img.copy())
    lw = max(1, round(max(img.shape[:2]) / 320))
    if truth is not None:
        for x1, y1, x2, y2 in np.asarray(truth).tolist():
            cv2.rectangle(out, (round(x1), round(y1)), (round(x2), round(y2)), (255, 255, 255), lw)
    for x1, y1, x2, y2, s, c in np.asarray(dets, float).tolist():
        if s < conf:
            continue
        col = PALETTE[int(c) % len(PALETTE)]
        cv2.rectangle(out, (round(x1), round(y1)), (round(x2), round(y2)), col, lw + 1)
        cv2.putText(out, f"{classes[int(c)]} {s:.2f}", (round(x1), max(10, round(y1) - 3)), cv2.FONT_HERSHEY_SIMPLEX,
                    0.4 * lw, col, lw)
    return out


def train(data: str | None = None, *, out: str | Path | None = None, resume: str | Path | None = None, **options):
    """Train a detector; returns the Run (results.json content in run.results)."""
    return run(DetectTask, data, out=out, resume=resume, **options)


# ----------------------------------------------------------------------------- using a trained detector


@dataclass
class Detection:
    file: str
    boxes: np.ndarray  # (K, 4) original pixels
    scores: np.ndarray
    labels: list[str]
    classes: np.ndarray
    width: int = 0
    height: int = 0
    error: str | None = None


class Detector:
    def __init__(self, model, classes: list[str], image_size: int, device):
        self.model, self.classes, self.size, self.device = model.eval(), classes, image_size, device

    def predict(self, inputs: Sequence[InputFile | str | Path | np.ndarray], conf: float = 0.25, iou: float = 0.7):
        out = []
        for item in inputs:
            name = str(item) if not isinstance(item, np.ndarray) else "array"
            try:
                img = item if isinstance(item, np.ndarray) else read_image(
                    item.source() if isinstance(item, InputFile) else item, "RGB", name=name)
            except DataError as e:
                out.append(Detection(name, np.zeros((0, 4)), np.zeros(0), [], np.zeros(0, int), error=str(e)))
                continue
            h, w = img.shape[:2]
            boxed, r, pad = letterbox(img, self.size)
            x = torch.from_numpy(boxed).permute(2, 0, 1)[None]
            d = predict_letterboxed(self.model, x, conf, iou, False, self.device)[0]
            d = _to_original(d, pad, r, r, w, h).numpy()
            cls = d[:, 5].astype(int)
            out.append(Detection(name, d[:, :4], d[:, 4], [self.classes[c] for c in cls], cls, w, h))
        return out


@accepts_onnx(TASK)
def load(weights: str | Path, device: str = "auto") -> Detector:
    p = Path(weights)
    if p.is_dir():
        p = p / "weights" / "best.pt"
    ckpt = load_checkpoint(p, task=TASK)
    model = restore_model(ckpt, what=f"{p} (detector)")
    rt = select_runtime(device, "fp32")
    return Detector(model.to(rt.device), list(ckpt["classes"]), int(ckpt["image_size"]), rt.device)


def evaluate(weights: str | Path, data: str | None = None, *, split: str = "test", conf: float = 0.001,
             iou: float = 0.7, out: str | Path | None = None, device: str = "auto") -> dict:
    det = load(weights, device)
    p = Path(weights)
    ckpt = load_checkpoint(p / "weights" / "best.pt" if p.is_dir() else p, task=TASK)
    data = data or ckpt["options"]["data"]
    ds = load_detection(data)
    if split not in ds.splits:
        raise UsageError(f"--split {split}: {data} has no such split (found: {', '.join(ds.splits)})")
    if ds.classes != det.classes:
        raise DataError(f"{data}: classes {ds.classes} differ from the detector's {det.classes}")
    out_dir = Path(out) if out else None
    if out_dir:
        out_dir.mkdir(parents=True, exist_ok=True)
    res, truths, dets, dd = score_split(det.model, ds.splits[split], ds.classes, det.size, det.device, conf, iou, out_dir)
    if out_dir:
        draw_report_figures(out_dir, ds.classes, res, truths, dets, dd, ds.splits[split])
    return {"data": str(data), "split": split, "images": len(truths),
            **{k: v for k, v in res.items() if k not in ("pr50", "recall_points")}}


def write_outputs(out: str | Path, dets: list[Detection], classes: list[str], *, save_txt=False, save_json=False,
                  sources: dict | None = None) -> list[Record]:
    """Drawn images, predictions.csv (file, class, confidence, x1, y1, x2, y2, error), optional YOLO
    txt and COCO json, all under `out`. Returns one Record per detection (or per failed/empty file)."""
    out = Path(out)
    records, stems = [], {}
    for d in dets:
        if d.error:
            records.append(Record(d.file, {}, d.error))
            continue
        stem = Path(d.file).stem
        stems[stem] = stems.get(stem, 0) + 1
        if stems[stem] > 1:
            stem = f"{stem}-{stems[stem]}"
        if not len(d.scores):
            records.append(Record(d.file, {}))
        for b, s, c in zip(d.boxes.tolist(), d.scores.tolist(), d.classes.tolist()):
            records.append(Record(d.file, {"class": classes[c], "confidence": s, "x1": b[0], "y1": b[1], "x2": b[2],
                                            "y2": b[3]}))
        if sources is not None and d.file in sources:
            src = sources[d.file]
            img = read_image(src.source() if isinstance(src, InputFile) else src, "RGB", name=d.file)
            save_image(out / f"{stem}.png",
                       draw_boxes(img, np.concatenate([d.boxes, d.scores[:, None], d.classes[:, None]], 1), classes))
        if save_txt:
            lines = [f"{c} {(b[0] + b[2]) / 2 / d.width:.6f} {(b[1] + b[3]) / 2 / d.height:.6f} "
                     f"{(b[2] - b[0]) / d.width:.6f} {(b[3] - b[1]) / d.height:.6f} {s:.5f}"
                     for b, s, c in zip(d.boxes.tolist(), d.scores.tolist(), d.classes.tolist())]
            write_text(out / "labels" / f"{stem}.txt", "\n".join(lines) + ("\n" if lines else ""))
    write_records_csv(out / "predictions.csv", records, ["class", "confidence", "x1", "y1", "x2", "y2"])
    if save_json:
        ok = [d for d in dets if not d.error]
        doc = {"images": [{"id": i, "file_name": d.file, "width": d.width, "height": d.height} for i, d in enumerate(ok, 1)],
               "categories": [{"id": i + 1, "name": c} for i, c in enumerate(classes)],
               "annotations": [a | {"id": j} for j, a in enumerate(
                   (p for p in predictions_json([np.concatenate([d.boxes, d.scores[:, None], d.classes[:, None]], 1)
                                                 for d in ok])), 1)]}
        write_json(out / "predictions.coco.json", doc)
    print(f"wrote {out}/predictions.csv ({sum(1 for r in records if r.values)} boxes)", file=sys.stderr)
    return records
