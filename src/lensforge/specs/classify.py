"""`lensforge classify train|eval|predict`: options and verbs (torch-free)."""
from __future__ import annotations

from dataclasses import dataclass

from ..engine.config import RunOptions, TrainConfig
from ..options import TaskCLI, Verb, option
from ..recipes import RECIPES
from .common import (DATA, data_dir_option, data_option, device_option, download_option, image_size_option,
                     inputs_option, json_option, val_fraction_option, weights_option)

MODEL = "model"


@dataclass
class ClassifyOptions:
    """Task options on top of TrainConfig; all of them land in config.yaml and the checkpoint."""

    data: str = data_option()
    data_dir: str | None = data_dir_option()
    download: bool = download_option()
    model: str = option("auto", "network; auto = whitenet for 32x32 colour images, else cnn",
                        choices=("auto", "mlp", "cnn", "resnet", "whitenet"), group=MODEL)
    width: int | None = option(None, "channels of the first stage (cnn, resnet, whitenet)", low=4, high=512,
                               group=MODEL, default_help="64 cnn and whitenet, 32 resnet")
    blocks: int | None = option(None, "residual blocks per stage (resnet)", low=1, high=16, group=MODEL,
                                default_help="1")
    image_size: int | None = image_size_option()
    val_fraction: float = val_fraction_option()
    label_smoothing: float = option(0.1, "label smoothing", low=0.0, high=0.99, group=MODEL)
    translate: int | None = option(None, "max random shift in px", low=0, high=64, group=DATA,
                                   default_help="per dataset and network")
    flip: bool | None = option(None, "random horizontal flips", group=DATA, default_help="per dataset and network")
    cutout: int | None = option(None, "cutout square size in px, 0 = off", low=0, high=256, group=DATA,
                                default_help="per dataset and network")
    stroke: float | None = option(None, "share of images drawn with a thicker or thinner pen", low=0.0, high=1.0,
                                  group=DATA, default_help="0.5 for mnist and digits, else 0")
    scale: float | None = option(None, "random scale range +-", low=0.0, high=0.9, group=DATA,
                                 default_help="0.15 for mnist and digits, else 0")
    rotate: float | None = option(None, "max random rotation in degrees", low=0.0, high=180.0, group=DATA,
                                  default_help="15 for mnist and digits, else 0")
    blur: float | None = option(None, "share of images Gaussian-blurred", low=0.0, high=1.0, group=DATA,
                                default_help="0.5 for mnist and digits, else 0")
    tta: bool = option(True, "no test-time augmentation (flip where the data has flips, plus shifts for whitenet)",
                       negative="--no-tta", group=MODEL)

    def validate(self) -> None:
        from ..errors import UsageError

        if self.model == "mlp" and (self.width is not None or self.blocks is not None):
            raise UsageError("--width/--blocks apply to the cnn, resnet and whitenet models, not mlp")
        if self.model in ("cnn", "whitenet") and self.blocks is not None:
            raise UsageError("--blocks applies to the resnet model only")


@dataclass(kw_only=True)
class EvalOptions:
    weights: str = weights_option()
    data: str | None = option(None, "dataset name or folder/.zip", group=DATA, default_help="the data the run was trained on")
    data_dir: str | None = option(None, "where named datasets live", group=DATA,
                                  default_help="the run's data directory, else $LENSFORGE_DATA_DIR")
    download: bool = download_option()
    split: str = option("test", "which split", choices=("test", "train", "val"))
    device: str = device_option()
    json: bool = json_option()


@dataclass(kw_only=True)
class PredictOptions:
    weights: str = weights_option()
    inputs: list[str] = inputs_option()
    top_k: int = option(1, "also list the K most likely classes", low=1, high=1000)
    out: str | None = option(None, "write predictions to this CSV (file,label,confidence,[top_k,]error)", metavar="CSV")
    device: str = device_option()


CLI = TaskCLI("classify", "image classification (MLP, CNN, ResNet)", (
    Verb("train", "train a classifier and write a run folder with report", (ClassifyOptions, TrainConfig, RunOptions),
         "lensforge.cli.classify:train", RECIPES["classify"]),
    Verb("eval", "evaluate saved weights on a dataset", (EvalOptions,), "lensforge.cli.classify:evaluate"),
    Verb("predict", "predict labels for image files, folders or zips", (PredictOptions,),
         "lensforge.cli.classify:predict"),
))
