"""`lensforge detect train|eval|predict`: options and verbs (torch-free)."""
from __future__ import annotations

from dataclasses import dataclass

from ..engine.config import RunOptions, TrainConfig
from ..recipes import RECIPES
from ..options import REQUIRED, TaskCLI, Verb, option
from .common import DATA, device_option, inputs_option, json_option, weights_option

MODEL = "model"
AUG = "augmentation"



@dataclass
class DetectOptions:
    data: str = option(REQUIRED, "detection data set: Pascal VOC, YOLO (data.yaml) or COCO json, folder or .zip",
                       group=DATA)
    model: str = option("n", "detector size (YOLOv8-style n/s/m) or sq (SqueezeNet 1.1 backbone)",
                        choices=("n", "s", "m", "sq"), group=MODEL)
    backbone_weights: str | None = option(None, "ImageNet SqueezeNet 1.1 features file for --model sq", group=MODEL,
                                          metavar="PTH", default_help="random initialisation")
    image_size: int = option(320, "letterboxed training/inference side (multiple of 32)", low=64, high=1280,
                             metavar="SIZE", group=DATA)
    train_splits: str = option("train,val", "comma-separated splits trained on (those present)", group=DATA)
    val_split: str | None = option(None, "split scored each epoch to pick best.pt (then not trained on)", group=DATA,
                                   default_help="none: final weights")
    test_split: str = option("test", "split evaluated at the end (falls back to val when absent)", group=DATA)
    mosaic: float = option(1.0, "probability of a 4-image mosaic", low=0.0, high=1.0, group=AUG)
    close_mosaic: int = option(10, "train the last N epochs without mosaic", low=0, high=10000, group=AUG)
    scale: float = option(0.5, "random scale range +-", low=0.0, high=0.9, group=AUG)
    translate: float = option(0.1, "random translation, fraction of the image", low=0.0, high=0.5, group=AUG)
    hsv_h: float = option(0.015, "hue jitter", low=0.0, high=0.5, group=AUG)
    hsv_s: float = option(0.7, "saturation jitter", low=0.0, high=1.0, group=AUG)
    hsv_v: float = option(0.4, "value jitter", low=0.0, high=1.0, group=AUG)
    flip: float = option(0.5, "horizontal flip probability", low=0.0, high=1.0, group=AUG)
    conf: float = option(0.001, "score threshold for mAP evaluation", low=0.0, high=1.0, group=MODEL)
    iou: float = option(0.7, "NMS IoU threshold", low=0.05, high=1.0, group=MODEL)

    def validate(self) -> None:
        from ..errors import UsageError

        if self.image_size % 32:
            raise UsageError(f"--image-size {self.image_size}: must be a multiple of 32 (the coarsest stride)")
        if self.backbone_weights and self.model != "sq":
            raise UsageError("--backbone-weights applies to --model sq only")


@dataclass(kw_only=True)
class EvalOptions:
    weights: str = weights_option()
    data: str | None = option(None, "detection data set", group=DATA, default_help="the data the run was trained on")
    split: str = option("test", "which split")
    conf: float = option(0.001, "score threshold", low=0.0, high=1.0)
    iou: float = option(0.7, "NMS IoU threshold", low=0.05, high=1.0)
    out: str | None = option(None, "folder for the COCO json files and figures", metavar="DIR")
    device: str = device_option()
    json: bool = json_option()


@dataclass(kw_only=True)
class PredictOptions:
    weights: str = weights_option()
    inputs: list[str] = inputs_option()
    conf: float = option(0.25, "score threshold", low=0.0, high=1.0)
    iou: float = option(0.7, "NMS IoU threshold", low=0.05, high=1.0)
    out: str = option("predictions", "output folder: drawn images and predictions.csv", metavar="DIR")
    save_txt: bool = option(False, "also write YOLO txt labels (class cx cy w h conf) per image")
    save_json: bool = option(False, "also write predictions.coco.json")
    device: str = device_option()


CLI = TaskCLI("detect", "object detection (YOLO-style, anchor-free)", (
    Verb("train", "train a detector and write a run folder with mAP, PR curves, confusion matrix",
         (DetectOptions, TrainConfig, RunOptions), "lensforge.cli.detect:train", RECIPES["detect"]),
    Verb("eval", "COCO-evaluate saved weights on a data set split", (EvalOptions,), "lensforge.cli.detect:evaluate"),
    Verb("predict", "detect objects in image files, folders or zips", (PredictOptions,), "lensforge.cli.detect:predict"),
))
