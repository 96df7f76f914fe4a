"""`lensforge colorize train|apply|calibrate`: options and verbs (torch-free)."""
from __future__ import annotations

from dataclasses import dataclass

from ..engine.config import RunOptions, TrainConfig
from ..options import REQUIRED, TaskCLI, Verb, option
from ..recipes import RECIPES
from .common import DATA, data_dir_option, device_option, download_option, image_size_option, inputs_option, \
    val_fraction_option, weights_option

MODEL = "model"
#: The named datasets with colour images; the grey ones (digits, MNIST, Fashion-MNIST) cannot teach colour.
COLOUR_DATASETS = ("cifar10",)
GREY_DATASETS = ("digits", "mnist", "fashion-mnist")


@dataclass
class ColorizeOptions:
    """Task options on top of TrainConfig; all of them land in config.yaml and the checkpoint."""

    data: str = option("cifar10", f"colour images: a named dataset ({', '.join(COLOUR_DATASETS)}) or a folder/.zip "
                       "of colour images (any layout, labels ignored)", group=DATA)
    data_dir: str | None = data_dir_option()
    download: bool = download_option()
    image_size: int | None = image_size_option("resize folder images to SIZE x SIZE for training and the model; "
                                               "a multiple of 2**depth", "probed; cifar10 is 32")
    base: int = option(32, "U-Net width of the first level", low=4, high=256, group=MODEL)
    # 6 levels already take a 512 px image down to 8 px; deeper would need inputs larger than the range allows.
    depth: int = option(3, "U-Net down-sampling levels", low=1, high=6, group=MODEL)
    rebalance: float = option(0.5, "weight rare saturated colours up: 0 off, 1 full inverse frequency", low=0.0,
                              high=1.0, group=MODEL)
    val_fraction: float = val_fraction_option(0.05)
    eval_images: int = option(0, "evaluate on the first N test images, 0 = all", low=0, high=10_000_000, group=DATA)

    def validate(self) -> None:
        from ..errors import UsageError

        if self.data in GREY_DATASETS:  # refused before anything is downloaded or decoded
            raise UsageError(f"--data {self.data}: a grey dataset cannot teach colour; use "
                             f"{' or '.join(COLOUR_DATASETS)} or a folder/.zip of colour images")
        m = 2 ** self.depth
        if self.image_size is not None and self.image_size % m:
            raise UsageError(f"--image-size {self.image_size}: must be a multiple of {m} (2**depth)")


@dataclass(kw_only=True)
class ApplyOptions:
    weights: str = weights_option()
    inputs: list[str] = inputs_option()
    out: str = option(REQUIRED, "folder for the <name>.png outputs", metavar="DIR")
    # Chroma is smooth: above ~1024 px nothing visible is gained, and each megapixel costs ~3 GB (224 bins of logits).
    image_size: int | None = option(None, "shorter side at which chroma is predicted (lightness stays at full "
                                    "resolution)", low=8, high=1024, metavar="SIZE", default_help="the training size")
    temperature: float | None = option(None, "decode temperature: lower = more vivid", low=0.01, high=10.0,
                                       default_help="chosen at training")
    device: str = device_option()

    def validate(self) -> None:
        from pathlib import Path

        from ..errors import UsageError

        if Path(self.out).exists() and not Path(self.out).is_dir():
            raise UsageError(f"--out {self.out}: exists and is not a folder")


@dataclass(kw_only=True)
class CalibrateOptions:
    weights: str = option(REQUIRED, "run folder written by colorize train", metavar="RUN_DIR")


CLI = TaskCLI("colorize", "colourise grey photos (U-Net in Lab space)", (
    Verb("train", "train a colouriser on colour images and write a run folder with report",
         (ColorizeOptions, TrainConfig, RunOptions), "lensforge.cli.colorize:train", RECIPES["colorize"]),
    Verb("apply", "colourise image files, folders or zips of any size", (ApplyOptions,),
         "lensforge.cli.colorize:apply"),
    Verb("calibrate", "re-pick the decoding on validation and re-evaluate a finished run (same final step as train)",
         (CalibrateOptions,), "lensforge.cli.colorize:calibrate"),
))
