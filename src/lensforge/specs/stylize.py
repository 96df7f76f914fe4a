"""`lensforge stylize run|train|apply`: options and verbs (torch-free).

`run CONTENT STYLE` is Gatys' optimisation (slow, any style, no training); `train` fits a fast
feed-forward network to one style and `apply` runs it on any number of photos. `run` is the
default verb: `lensforge stylize CONTENT STYLE --out OUT` is the same command.
"""
from __future__ import annotations

from dataclasses import dataclass

from ..engine.config import RunOptions, TrainConfig
from ..options import REQUIRED, TaskCLI, Verb, option
from ..recipes import RECIPES
from .common import DATA, device_option, inputs_option, weights_option

FEATURES = "feature network"
LOSS = "loss"
MODEL = "model"
#: torchvision's published ImageNet files the feature network can be downloaded as (checksummed).
KNOWN_FEATURES = ("squeezenet1_1", "vgg16", "vgg19")
DEFAULT_FEATURES = "squeezenet1_1"
FEATURES_ENV = "LENSFORGE_FEATURE_WEIGHTS"


def features_option() -> str | None:
    return option(None, "ImageNet weights of the loss network: a .pth state_dict file (SqueezeNet 1.1, VGG16 or "
                  f"VGG19) or {'/'.join(KNOWN_FEATURES)} to download torchvision's file once (sha256-checked) into "
                  "~/.cache/lensforge/weights", metavar="WEIGHTS", group=FEATURES,
                  default_help=f"${FEATURES_ENV}, else {DEFAULT_FEATURES}")


def convention_option() -> str | None:
    return option(None, "input convention of the weights", choices=("caffe", "torchvision"), group=FEATURES,
                  default_help="torchvision, caffe for a SqueezeNet file not named like torchvision's")


def feature_download_option() -> bool:
    return option(True, "never download feature weights; fail with the URL and where to put the file",
                  negative="--no-download", group=FEATURES)


def loss_weight_option(default: float, help_: str) -> float:
    # A negative weight turns a loss term into a reward: training would run and diverge silently.
    return option(default, help_, low=0.0, group=LOSS)


@dataclass(kw_only=True)
class GatysOptions:
    content: str = option(REQUIRED, "the photo whose layout is kept", positional=True, metavar="CONTENT")
    style: str = option(REQUIRED, "the image whose textures and colours are painted in", positional=True,
                        metavar="STYLE")
    out: str | None = option(REQUIRED, "output image (.png/.jpg)")
    # 32 px: below it SqueezeNet's deepest style layer has no pixels left; 4096 px: L-BFGS keeps 100
    # image-sized vectors, ~20 GB at 4096x4096 (the memory check refuses what this machine cannot hold).
    long_side: int = option(256, "longer side of the output in px", low=32, high=4096, metavar="PX")
    steps: int = option(200, "optimiser iterations", low=1, high=100_000)
    style_weight: float = loss_weight_option(1e4, "style vs content balance")
    content_weight: float = loss_weight_option(1.0, "content term weight")
    tv_weight: float = loss_weight_option(1e-3, "total-variation smoothing")
    optimizer: str = option("lbfgs", "pixel optimiser", choices=("lbfgs", "adam"))
    init: str = option("colour", "start image: colour = the photo recoloured to the style's palette, content = "
                       "the photo as is, noise = random", choices=("colour", "content", "noise"))
    report: str | None = option(None, "also write time and losses to this JSON file", metavar="JSON")
    device: str = device_option()
    seed: int = option(0, "random seed (noise start)", low=0, high=2 ** 63 - 1)
    features: str | None = features_option()
    convention: str | None = convention_option()
    download: bool = feature_download_option()

    def validate(self) -> None:
        from pathlib import Path

        from ..errors import UsageError

        if self.out is not None and Path(self.out).suffix.lower() not in (".png", ".jpg", ".jpeg"):
            raise UsageError(f"--out {self.out}: give a .png or .jpg file name")


@dataclass
class StyleOptions:
    """The fast network's task options on top of TrainConfig; all land in config.yaml and the checkpoint."""

    data: str = option(REQUIRED, "folder or .zip of content photos (any layout, labels ignored)", group=DATA)
    style: str = option(REQUIRED, "the style image", group=DATA)
    image_size: int = option(128, "photos are resized to SIZE x SIZE for training; a multiple of 4", low=32,
                             high=1024, metavar="SIZE", group=DATA)
    style_long_side: int | None = option(None, "longer side of the style image in px", low=32, high=4096,
                                         metavar="PX", group=DATA, default_help="2 x --image-size")
    base: int = option(16, "network width (Johnson et al. used 32)", low=4, high=128, group=MODEL)
    blocks: int = option(3, "residual blocks (Johnson et al. used 5)", low=1, high=16, group=MODEL)
    # Gatys starts from the photo, so content survives a huge style weight; a network trained from
    # scratch does not: measured on 800 crops x 5 epochs, 3 keeps the subject, 10+ paints it over.
    style_weight: float = loss_weight_option(3.0, "style vs content balance (far below Gatys' 1e4: the network does "
                                              "not start from the photo)")
    content_weight: float = loss_weight_option(1.0, "content term weight")
    tv_weight: float = loss_weight_option(1e-3, "total-variation smoothing")
    val_images: int = option(8, "validation photos scored each epoch", low=1, high=1000, group=DATA)
    features: str | None = features_option()
    convention: str | None = convention_option()
    download: bool = feature_download_option()

    def validate(self) -> None:
        from ..errors import UsageError

        if self.image_size % 4:
            raise UsageError(f"--image-size {self.image_size}: must be a multiple of 4")


@dataclass(kw_only=True)
class ApplyOptions:
    weights: str = weights_option()
    inputs: list[str] = inputs_option()
    out: str = option(REQUIRED, "folder for the <name>.png outputs", metavar="DIR")
    # 16 px is the network's smallest useful input (two stride-2 stages); 4096 px needs ~4 GB at the default width.
    long_side: int | None = option(None, "resize so the longer side is PX before stylising", low=16, high=4096,
                                   metavar="PX", default_help="as is")
    device: str = device_option()

    def validate(self) -> None:
        from pathlib import Path

        from ..errors import UsageError

        if Path(self.out).exists() and not Path(self.out).is_dir():
            raise UsageError(f"--out {self.out}: exists and is not a folder")


CLI = TaskCLI("stylize", "neural style transfer (Gatys optimisation, fast feed-forward network)", (
    Verb("run", "Gatys et al.: optimise one image to CONTENT's layout in STYLE's textures (the default verb: "
         "`lensforge stylize CONTENT STYLE --out OUT` is the same)", (GatysOptions,), "lensforge.cli.stylize:run"),
    Verb("train", "train a fast style network for one STYLE image on a folder of photos",
         (StyleOptions, TrainConfig, RunOptions), "lensforge.cli.stylize:train", RECIPES["stylize"]),
    Verb("apply", "stylise image files, folders or zips with a trained fast network", (ApplyOptions,),
         "lensforge.cli.stylize:apply"),
), default_verb="run")
