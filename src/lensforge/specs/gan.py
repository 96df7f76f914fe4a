"""`lensforge gan train|sample`: options and verbs (torch-free)."""
from __future__ import annotations

from dataclasses import dataclass

from ..engine.config import RunOptions, TrainConfig
from ..options import TaskCLI, Verb, option
from ..recipes import RECIPES
from .autoencode import MODEL, latent_dim_option, sample_count_option, width_option
from .common import data_dir_option, data_option, device_option, download_option, image_size_option, weights_option

QUALITY = "quality measurement"
PRECISION_NOTE = ("--precision auto runs bf16 autocast on a CPU with AMX-BF16 (1.4x faster per isolated GAN step, "
                  "1.1x per MNIST epoch, 1.3x on 64 px faces, 2-core Xeon) and fp32 on other CPUs (bf16 emulation "
                  "made the generator 3x slower); on a GPU auto means "
                  "bf16 (fp16 without bf16 support).")


@dataclass
class GANOptions:
    """Task options on top of TrainConfig; all of them land in config.yaml and the checkpoint."""

    data: str = data_option(what="images (class sub-folders optional; needed for --conditional)")
    data_dir: str | None = data_dir_option()
    download: bool = download_option()
    model: str = option("dcgan", "network", choices=("dcgan",), group=MODEL)
    conditional: bool = option(False, "condition G and D on the class (needs labels)", group=MODEL)
    latent_dim: int = latent_dim_option(64, "noise dimension")
    width: int = width_option(32, "base channel count of G and D")
    spectral_norm: bool = option(False, "spectral normalisation on every D layer, and no batch norm in D (SNGAN); "
                                        "with --loss auto it also selects the hinge loss", group=MODEL)
    d_arch: str = option("dcgan", "discriminator: dcgan (strided convs) or resnet (SNGAN residual blocks, always "
                                  "spectrally normalised; a projection discriminator with --conditional)",
                         choices=("dcgan", "resnet"), group=MODEL)
    loss: str = option("auto", "adversarial loss: hinge (SNGAN/BigGAN) or bce (DCGAN, non-saturating); auto = hinge "
                               "with a spectral-norm D, else bce", choices=("auto", "hinge", "bce"), group=MODEL)
    d_lr: float | None = option(None, "discriminator learning rate (two time-scale update rule when it differs from "
                                      "--lr)", low=1e-9, high=10.0, group=MODEL,
                                default_help="2x --lr with a spectral-norm D, else --lr")
    augment: str = option("auto", "DiffAugment (translate + cutout on all D inputs); auto = on for training sets "
                                  "under 10,000 images, where D otherwise memorises the data",
                          choices=("auto", "on", "off"), group=MODEL)
    image_size: int | None = image_size_option()
    fd_classifier: str = option("auto", "lensforge classifier whose features define the Frechet distance: a "
                                        "classify run folder or weights, 'auto' (train a small CNN on the same data "
                                        "first) or 'none'", metavar="RUN_OR_WEIGHTS", group=QUALITY)
    fd_samples: int = option(2000, "samples per Frechet distance", low=10, high=100_000, group=QUALITY)


@dataclass(kw_only=True)
class SampleOptions:
    weights: str = weights_option()
    n: int = sample_count_option(64)
    label: str | None = option(None, "class name to generate (conditional models)", default_help="cycle the classes")
    seed: int = option(0, "random seed of the draws", low=0, high=2 ** 63 - 1)
    out: str = option("gan_samples.png", "PNG grid to write")
    each: str | None = option(None, "also write every sample as DIR/sample_NNNN.png", metavar="DIR")
    device: str = device_option()


CLI = TaskCLI("gan", "generative adversarial networks (DCGAN, SNGAN-style D), with a Frechet-distance score", (
    Verb("train", "train a DCGAN and write a run folder with per-epoch samples and report",
         (GANOptions, TrainConfig, RunOptions), "lensforge.cli.gan:train", RECIPES["gan"],
         description="train a DCGAN and write a run folder with per-epoch samples and report. The GAN has no "
                     "validation split: best.pt is the epoch with the lowest Frechet distance to training images, "
                     "and --early-stop is refused. The recipe's lr 6e-4 (both players) was measured on MNIST; a training "
                     "set under 10,000 images trains at 2e-4 unless --lr is given. " + PRECISION_NOTE),
    Verb("sample", "generate N images into a PNG grid (and optionally one file each)", (SampleOptions,),
         "lensforge.cli.gan:sample"),
))
