"""`lensforge vae train|sample|interpolate|manifold`: options and verbs (torch-free)."""
from __future__ import annotations

from dataclasses import dataclass

from ..engine.config import RunOptions, TrainConfig
from ..options import REQUIRED, TaskCLI, Verb, option
from ..recipes import RECIPES
from .autoencode import MODEL, PRECISION_NOTE, LatentOptions, sample_count_option
from .common import device_option, weights_option


@dataclass
class VAEOptions(LatentOptions):
    beta: float = option(1.0, "weight of the KL term in the training loss (the reported ELBO always uses 1)",
                         low=0.0, high=1000.0, group=MODEL)
    likelihood: str = option("bernoulli", "p(x|z): bernoulli for binary-ish images such as digits, gaussian "
                                          "for photos", choices=("bernoulli", "gaussian"), group=MODEL)


@dataclass(kw_only=True)
class SampleOptions:
    weights: str = weights_option()
    n: int = sample_count_option(64)
    seed: int = option(0, "random seed of the draws", low=0, high=2 ** 63 - 1)
    out: str = option("vae_samples.png", "PNG grid to write")
    device: str = device_option()


@dataclass(kw_only=True)
class InterpolateOptions:
    weights: str = weights_option()
    a: str = option(REQUIRED, "first image", positional=True, metavar="IMAGE_A")
    b: str = option(REQUIRED, "second image", positional=True, metavar="IMAGE_B")
    steps: int = option(10, "images along the path, ends included", low=2, high=256)
    out: str = option("vae_interpolation.png", "PNG strip to write")
    device: str = device_option()


@dataclass(kw_only=True)
class ManifoldOptions:
    weights: str = weights_option()
    n: int = option(15, "grid side", low=2, high=64)
    out: str = option("vae_manifold.png", "PNG grid to write")
    device: str = device_option()


CLI = TaskCLI("vae", "variational autoencoders: ELBO, sampling, interpolation", (
    Verb("train", "train a VAE and write a run folder with report", (VAEOptions, TrainConfig, RunOptions),
         "lensforge.cli.vae:train", RECIPES["vae"],
         description="train a VAE and write a run folder with report. " + PRECISION_NOTE),
    Verb("sample", "decode N draws from the prior into a PNG grid", (SampleOptions,), "lensforge.cli.vae:sample"),
    Verb("interpolate", "decode the latent path between two images into a PNG strip", (InterpolateOptions,),
         "lensforge.cli.vae:interpolate"),
    Verb("manifold", "decode an N x N grid over a 2-D latent (models with --latent-dim 2)", (ManifoldOptions,),
         "lensforge.cli.vae:manifold"),
))
