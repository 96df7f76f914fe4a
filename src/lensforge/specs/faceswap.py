"""`lensforge faceswap extract|train|convert`: options and verbs (torch-free)."""
from __future__ import annotations

from dataclasses import dataclass

from ..engine.config import RunOptions, TrainConfig
from ..recipes import RECIPES
from ..options import REQUIRED, TaskCLI, Verb, option
from .common import DATA, device_option, inputs_option, weights_option

MODEL = "model"
DETECT = "detection"
BLEND = "blending"


_DETECTORS = ("auto", "mtcnn", "haar")


def _detector_option() -> str:
    return option("auto", "face detector: mtcnn (5 landmarks, default when installed) or haar (OpenCV cascades, "
                  "landmarks estimated)", choices=_DETECTORS, group=DETECT)


def _min_size_option(default: int = 24) -> int:
    return option(default, "smallest face side in pixels of the photo or frame", low=8, high=4096, group=DETECT)


def _min_score_option() -> float:
    return option(0.95, "smallest MTCNN face probability kept", low=0.0, high=1.0, group=DETECT)


@dataclass(kw_only=True)
class ExtractOptions:
    inputs: list[str] = inputs_option("photos, videos, folders or .zip archives")
    out: str = option(REQUIRED, "folder for the aligned face crops and alignments.json", metavar="FACES_DIR")
    face_size: int = option(256, "side of the aligned face crops in pixels", low=16, high=2048, group=DATA)
    margin: float = option(0.2, "fraction of the crop left around the face on each side", low=0.0, high=0.45,
                           group=DATA)
    largest: bool = option(False, "only the largest face of each photo or frame (default: all faces)", group=DETECT)
    min_size: int = _min_size_option()
    min_score: float = _min_score_option()
    every: int = option(1, "use every Nth video frame", low=1, high=100_000, metavar="N", group=DATA)
    detector: str = _detector_option()


@dataclass
class FaceswapOptions:
    """Task options on top of TrainConfig; all of them land in config.yaml and the checkpoint."""

    a: str = option(REQUIRED, "faces of person A: a folder or .zip written by `faceswap extract`", metavar="FACES_A",
                    group=DATA)
    b: str = option(REQUIRED, "faces of person B, likewise", metavar="FACES_B", group=DATA)
    model: str = option("faceswap-original", "network", choices=("faceswap-original",), group=MODEL)
    image_size: int = option(96, "side of the faces the network sees; a multiple of 16", low=16, high=512,
                             metavar="SIZE", group=DATA)
    margin: float = option(0.1, "margin of the faces the network sees (extracted crops are re-cut; smaller = more "
                           "face detail, less context)", low=0.0, high=0.45, group=DATA)
    width: int = option(32, "channels of the first encoder convolution (the encoder doubles it 3 times)", low=4,
                        high=256, group=MODEL)
    latent: int = option(256, "size of the shared bottleneck", low=8, high=4096, group=MODEL)
    loss: str = option("l1", "pixel loss", choices=("l1", "mse"), group=MODEL)
    ssim_weight: float = option(1.0, "weight of the (1 - SSIM) term", low=0.0, high=100.0, group=MODEL)
    mask_weight: float = option(1.0, "weight of the learned mask's error against the landmark mask", low=0.0,
                                high=100.0, group=MODEL)
    perceptual_weight: float = option(0.0, "weight of a perceptual term: feature distance in a frozen ImageNet "
                                      "network (--features)", low=0.0, high=100.0, group=MODEL)
    features: str | None = option(None, "feature network weights for the perceptual term (VGG16/19 or SqueezeNet "
                                  "1.1 features, e.g. ../shared/weights/squeezenet1_1-features-caffe.pth)",
                                  group=MODEL, default_help="$LENSFORGE_FEATURE_WEIGHTS, else torchvision's "
                                  "SqueezeNet 1.1 downloaded once")
    steps: int = option(100, "batches per epoch (from each identity)", low=1, high=1_000_000, group=DATA)
    holdout: int = option(4, "faces per identity held out for previews and validation metrics", low=1,
                          high=10_000, group=DATA)
    warp: float = option(0.04, "strength of the random warp of the inputs (0 = off)", low=0.0, high=0.3, group=DATA)
    flip: bool = option(True, "no random mirroring", negative="--no-flip", group=DATA)

    def validate(self) -> None:
        from ..errors import UsageError

        if self.image_size % 16:
            raise UsageError(f"--image-size {self.image_size}: must be a multiple of 16")


@dataclass(kw_only=True)
class ConvertOptions:
    weights: str = weights_option()
    inputs: list[str] = inputs_option("photos, videos, folders or .zip archives")
    out: str = option(REQUIRED, "folder for the converted photos and videos", metavar="DIR")
    direction: str = option("a2b", "a2b puts B's face on A's photos; b2a the reverse", choices=("a2b", "b2a"))
    all_faces: bool = option(False, "swap every face (default: the largest of each photo or frame)", group=DETECT)
    min_size: int = _min_size_option()
    min_score: float = _min_score_option()
    detector: str = _detector_option()
    mask: str = option("learned", "blend mask: the network's learned mask or the landmark ellipse",
                       choices=("learned", "landmarks"), group=BLEND)
    color: bool = option(True, "no colour matching (Lab mean/std) to the target face", negative="--no-color",
                         group=BLEND)
    seamless: bool = option(False, "Poisson (seamless) cloning into the photo", group=BLEND)
    feather: int | None = option(None, "feather width of the mask edge in pixels of the network's face", low=0,
                                 high=256, group=BLEND, default_help="image size / 16")
    label: bool = option(False, "stamp a visible SYNTHETIC mark on every output")
    format: str = option("png", "format of converted photos (png keeps untouched pixels exact)",
                         choices=("png", "jpg"))
    device: str = device_option()


CLI = TaskCLI("faceswap", "face swap: extract and align faces, train a two-identity autoencoder, convert photos "
              "and video", (
                  Verb("extract", "detect, align and save the faces of photos, folders, zips and videos",
                       (ExtractOptions,), "lensforge.cli.faceswap:extract"),
                  Verb("train", "train the shared-encoder / two-decoder autoencoder on two face sets",
                       (FaceswapOptions, TrainConfig, RunOptions), "lensforge.cli.faceswap:train", RECIPES["faceswap"]),
                  Verb("convert", "swap faces in photos and videos; outputs carry a provenance tag",
                       (ConvertOptions,), "lensforge.cli.faceswap:convert"),
              ))
