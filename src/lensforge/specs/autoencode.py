"""`lensforge autoencode train|denoise|score`: options and verbs (torch-free).

The option helpers at the top are shared by the three generative tasks (autoencode, vae, gan), so
`--latent-dim`, `--width` and `--precision`'s policy read the same in each.
"""
from __future__ import annotations

from dataclasses import dataclass

from ..engine.config import RunOptions, TrainConfig
from ..options import REQUIRED, TaskCLI, Verb, option
from ..recipes import RECIPES
from .common import (DATA, data_dir_option, data_option, device_option, download_option, image_size_option,
                     inputs_option, val_fraction_option, weights_option)

MODEL = "model"
NETWORKS = ("dense", "conv")

#: What `--precision auto` does for the generative tasks, in every train verb's description.
PRECISION_NOTE = ("--precision auto runs fp32 on a CPU for this task: bf16 autocast made these small conv and "
                  "transposed-conv nets 2-15x slower per step (measured, 2-core CPU with fast bf16); "
                  "on a GPU auto means bf16 (fp16 without bf16 support).")


def network_option(default: str = "conv") -> str:
    return option(default, "network type", choices=NETWORKS, group=MODEL)


def latent_dim_option(default: int, help_: str = "size of the latent code") -> int:
    # 1..1024: a code of 1024 numbers is already larger than a 28x28 image, nothing left to compress
    return option(default, help_, low=1, high=1024, metavar="K", group=MODEL)


def width_option(default: int = 32, help_: str = "base channel count; dense layers use 16x/8x it") -> int:
    return option(default, help_, low=1, high=512, group=MODEL)


def sample_count_option(default: int, high: int = 4096, help_: str = "number of samples") -> int:
    return option(default, help_, low=1, high=high)


@dataclass
class LatentOptions:
    """What autoencode and vae share: data, the encoder/decoder network and its code size. Task
    options sit on top of TrainConfig; all of them land in config.yaml and the checkpoint."""

    data: str = data_option(what="images (class sub-folders optional)")
    data_dir: str | None = data_dir_option()
    download: bool = download_option()
    model: str = network_option()
    latent_dim: int = latent_dim_option(16)
    width: int = width_option()
    image_size: int | None = image_size_option()
    val_fraction: float = val_fraction_option()


@dataclass
class AutoencodeOptions(LatentOptions):
    denoise: float = option(0.0, "train to remove Gaussian noise of this std on [0,1] pixels, e.g. 0.3; 0 = plain "
                                 "autoencoder", low=0.0, high=2.0, metavar="NOISE", group=MODEL)


@dataclass(kw_only=True)
class DenoiseOptions:
    weights: str = weights_option()
    inputs: list[str] = inputs_option()
    out: str = option(REQUIRED, "folder for the cleaned PNGs (<name>.png)", metavar="DIR")
    add_noise: float = option(0.0, "first corrupt the inputs with this noise std (also writes <name>_noisy.png), "
                                   "to see what the model removes", low=0.0, high=2.0, metavar="SIGMA")
    device: str = device_option()


@dataclass(kw_only=True)
class ScoreOptions:
    weights: str = weights_option()
    inputs: list[str] = option([], "image files, folders or .zip archives to score", positional=True, nargs="*",
                               metavar="FILE_OR_DIR")
    data: str | None = option(None, "also score a dataset split (name or folder)", group=DATA)
    data_dir: str | None = data_dir_option()
    download: bool = download_option()
    split: str = option("test", "which split of --data", choices=("test", "train", "val"), group=DATA)
    out: str = option(REQUIRED, "write the ranking here (file,rank,mse,reading,label,error)", metavar="CSV")
    top: int = option(10, "print the N most anomalous", low=0, high=1_000_000)
    device: str = device_option()

    def validate(self) -> None:
        from ..errors import UsageError

        if not self.inputs and self.data is None:
            raise UsageError("give image files/folders, or --data NAME, to score")


CLI = TaskCLI("autoencode", "autoencoders: reconstruction, denoising, anomaly scores", (
    Verb("train", "train a (denoising) autoencoder and write a run folder with report",
         (AutoencodeOptions, TrainConfig, RunOptions), "lensforge.cli.autoencode:train", RECIPES["autoencode"],
         description="train a (denoising) autoencoder and write a run folder with report. " + PRECISION_NOTE),
    Verb("denoise", "apply a trained (denoising) autoencoder to images", (DenoiseOptions,),
         "lensforge.cli.autoencode:denoise"),
    Verb("score", "rank images by reconstruction error (anomaly detection) into a CSV", (ScoreOptions,),
         "lensforge.cli.autoencode:score",
         description="rank images by reconstruction error, most anomalous first, into a CSV. Images the model's "
                     "digit preprocessing finds no ink in are anomalous by definition and ranked first "
                     "(see docs/generative.md)."),
))
