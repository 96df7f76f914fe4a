"""What the autoencoder, VAE and GAN tasks share: data, run folders, loaded models, image I/O.

The three tasks differ only in their model and loss; everything around them (options parsing,
unlabelled folders, run folder + results.json + report.html, resume, reading a user's images with
the preprocessing stored in the checkpoint, writing image files atomically) lives here once.
"""
from __future__ import annotations

from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import torch

from ..data import Dataset, load_dataset
from ..data.preprocess import PreprocessSpec, load_and_prepare
from ..engine.checkpoint import load_checkpoint
from ..engine.device import Runtime, select_runtime
from ..errors import DataError, UsageError
from .common import (Run, base_results, expand_images, finish_run, restore_model, resume_checkpoint,  # noqa: F401
                     run_name, save_png, split_sizes, train_run, write_csv)
from .common import split_options as _split_options


def split_options(options: dict, opts_cls, **fixed):
    """common.split_options plus the generative precision policy."""
    opts, cfg = _split_options(options, opts_cls, **fixed)
    if cfg.precision == "auto" and select_runtime(cfg.device, "fp32").device.type == "cpu":
        # Measured on the project's CPU (AMD EPYC, bf16 reported as fast): bf16 autocast makes these
        # small conv/transposed-conv nets 2-15x slower than fp32, and bf16 likelihoods are coarse.
        cfg.precision = "fp32"
    return opts, cfg


def load_images(data: str, *, data_dir=None, download=True, image_size=None, val_fraction=0.0, seed=0,
                channels=None) -> Dataset:
    """Named dataset or a user's folder/zip; class sub-folders are optional (labels are only used
    to colour plots and to condition a GAN)."""
    if image_size is not None and (image_size < 4 or image_size > 512):
        raise UsageError(f"--image-size {image_size}: must be between 4 and 512")
    ds = load_dataset(data, data_dir=data_dir, download=download, image_size=image_size, channels=channels,
                      val_fraction=val_fraction, seed=seed, require_labels=False)
    if image_size is not None and tuple(ds.train.shape[1:]) != (image_size, image_size):
        raise UsageError(f"--image-size applies to image folders; {data} images are fixed at "
                         f"{ds.train.shape[1]}x{ds.train.shape[2]}")
    if len(ds.train) < 2:
        raise DataError(f"{data}: needs at least 2 training images, found {len(ds.train)}")
    return ds


def held_out(ds: Dataset):
    """(split, name) to measure on: validation if carved, else test, else train (with a note)."""
    if ds.val is not None:
        return ds.val, "val"
    if ds.test is not None:
        return ds.test, "test"
    return ds.train, "train"


def first_images(split, n: int) -> tuple[torch.Tensor, torch.Tensor | None]:
    """The first n images of a split as floats in [0, 1] (a fixed, reproducible showcase)."""
    x, y = split.take(torch.arange(min(n, len(split))))
    return x.float() / 255, y


# ----------------------------------------------------------------------------- loaded models

def load_generative(weights: str | Path, task: str, device: str = "auto") -> tuple[dict, torch.nn.Module, Runtime]:
    """(checkpoint, model in eval mode on its device, runtime) via the safe weights_only loader."""
    ckpt = load_checkpoint(weights, task=task)
    rt = select_runtime(device, "fp32")
    return ckpt, restore_model(ckpt).to(rt.device).eval(), rt


def read_images(files: Sequence[str], spec: PreprocessSpec, strict: bool = True) -> tuple[torch.Tensor, list[str], list[str]]:
    """Images prepared exactly as in training, as floats in [0, 1]: (batch, names kept, errors).

    strict: the first unreadable file raises (one line naming it); otherwise it is skipped and
    its message returned, so a batch job over a folder reports bad files but finishes.
    """
    arrays, kept, errors = [], [], []
    for f in files:
        try:
            arrays.append(load_and_prepare(f, spec, name=f))
            kept.append(f)
        except DataError as e:
            if strict:
                raise
            errors.append(str(e))
    if not arrays:
        raise DataError(f"none of the {len(files)} input image(s) could be read: {errors[0] if errors else ''}")
    x = torch.from_numpy(np.stack(arrays)).float() / 255
    return x, kept, errors


@torch.no_grad()
def map_batches(fn: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor, device, batch_size: int = 512) -> torch.Tensor:
    """fn over x in chunks on `device`, results concatenated on the CPU."""
    outs = [fn(x[i:i + batch_size].to(device)).float().cpu() for i in range(0, len(x), batch_size)]
    return torch.cat(outs) if outs else torch.empty(0)


def psnr(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Peak signal-to-noise ratio in dB per image, for pixels in [0, 1] (peak 1)."""
    mse = (pred.float() - target.float()).pow(2).flatten(1).mean(1)
    return 10 * torch.log10(1.0 / mse.clamp_min(1e-10))
