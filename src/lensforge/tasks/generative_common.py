"""What the autoencoder, VAE and GAN tasks share and classify does not.

 - `GenerativeTask`: the lifecycle hooks the three tasks have in common: unlabelled folders are
   fine (labels only colour plots and condition a GAN), a held-out split to measure and show,
   fp32 on CPUs, and the preprocessing/classes stored in the checkpoint;
 - `read_inputs`: a user's images prepared exactly as in training, one `Record` per file, with the
   one case where that preparation hides what an image is (a digit-style model reading a photo
   finds no ink and would see a blank canvas) made explicit;
 - small numeric helpers (`map_batches`, `psnr`).
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable, ClassVar, Sequence

import numpy as np
import torch

from ..data import Dataset, load_dataset
from ..data.loader import Batches
from ..data.preprocess import PreprocessSpec, load_and_prepare
from ..engine.checkpoint import load_checkpoint
from ..engine.device import Runtime, select_runtime
from ..errors import DataError, UsageError
from .apply import InputFile, Record, expand_inputs
from .common import restore_model, split_sizes
from .lifecycle import TrainableTask


class GenerativeTask(TrainableTask):
    """Base of autoencode, vae and gan: data from `opts.data`, a held-out split, fp32 on CPUs."""

    # Measured on the project's CPU (2 cores, bf16 reported as fast), one training step at batch 128,
    # 28x28, fp32 vs bf16 autocast in ms: conv AE 74 vs 1299, conv VAE 74 vs 163, dense VAE 7 vs 21,
    # DCGAN generator 58 vs 184. bf16 likelihoods are coarse too. A GPU keeps the runtime's choice.
    cpu_auto_precision: ClassVar[str] = "fp32"

    def setup(self) -> None:
        opts, cfg = self.opts, self.cfg
        self.ds = load_images(opts.data, data_dir=opts.data_dir, download=opts.download, image_size=opts.image_size,
                              val_fraction=getattr(opts, "val_fraction", 0.0), seed=cfg.seed)
        self.train_batches = Batches(self.ds.train, cfg.batch_size, device=self.rt.device, shuffle=True,
                                     drop_last=True, seed=cfg.seed)
        self.eval_split, self.eval_name = held_out(self.ds)
        c, h, w = self.ds.train.shape
        self.model_name, self.model_kwargs = self.network(c, [h, w])

    def network(self, channels: int, size: list[int]) -> tuple[str, dict]:
        """(registered model name, its keyword arguments) for images of this shape."""
        raise NotImplementedError

    def has_validation(self) -> bool:
        return self.ds.val is not None

    @torch.no_grad()
    def evaluate(self, model) -> dict[str, float]:
        """`held_out_metrics` in eval mode, named after the split (val_mse, test_neg_elbo...)."""
        was = model.training
        model.eval()
        try:
            return {f"{self.eval_name}_{k}": v for k, v in self.held_out_metrics(model).items()}
        finally:
            model.train(was)

    def held_out_metrics(self, model) -> dict[str, float]:
        return {}

    def config_extra(self) -> dict:
        return {"preprocess": self.ds.spec.to_dict(), "splits": split_sizes(self.ds)}

    def extra_meta(self) -> dict:
        return {"classes": list(self.ds.classes) if self.ds.classes else None, "preprocess": self.ds.spec.to_dict()}


def load_images(data: str, *, data_dir=None, download=True, image_size=None, val_fraction=0.0, seed=0,
                channels=None) -> Dataset:
    """Named dataset or a user's folder/zip; class sub-folders are optional."""
    ds = load_dataset(data, data_dir=data_dir, download=download, image_size=image_size, channels=channels,
                      val_fraction=val_fraction, seed=seed, require_labels=False)
    if image_size is not None and tuple(ds.train.shape[1:]) != (image_size, image_size):
        raise UsageError(f"--image-size applies to image folders; {data} images are fixed at "
                         f"{ds.train.shape[1]}x{ds.train.shape[2]}")
    if len(ds.train) < 2:
        raise DataError(f"{data}: needs at least 2 training images, found {len(ds.train)}")
    return ds


def held_out(ds: Dataset):
    """(split, name) to measure on: validation if carved, else test, else train."""
    if ds.val is not None:
        return ds.val, "val"
    if ds.test is not None:
        return ds.test, "test"
    return ds.train, "train"


def first_images(split, n: int) -> tuple[torch.Tensor, torch.Tensor | None]:
    """The first n images of a split as floats in [0, 1] (a fixed, reproducible showcase)."""
    x, y = split.take(torch.arange(min(n, len(split))))
    return x.float() / 255, y


@torch.no_grad()
def map_batches(fn: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor, device, batch_size: int = 512) -> torch.Tensor:
    """fn over x in chunks on `device`, results concatenated on the CPU."""
    outs = [fn(x[i:i + batch_size].to(device)).float().cpu() for i in range(0, len(x), batch_size)]
    return torch.cat(outs) if outs else torch.empty(0)


def save_grid(images, path: str | Path, ncols: int) -> None:
    """Images tiled into one PNG with exact pixels, doubled below 64 px so digits can be seen. For
    untitled grids: one matplotlib axes per image (report.image_grid) took 26 of a tiny VAE run's
    43 s (a 15 x 15 manifold, measured on the loaded 2-core machine); this takes milliseconds."""
    from ..report import save_image_grid_png

    save_image_grid_png(images, path, ncols=ncols, scale=2 if max(images.shape[-2:]) < 64 else 1)


def psnr(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Peak signal-to-noise ratio in dB per image, for pixels in [0, 1] (peak 1)."""
    mse = (pred.float() - target.float()).pow(2).flatten(1).mean(1)
    return 10 * torch.log10(1.0 / mse.clamp_min(1e-10))


# ----------------------------------------------------------------------------- loaded models

def load_generative(weights: str | Path, task: str, device: str = "auto") -> tuple[dict, torch.nn.Module, Runtime]:
    """(checkpoint, model in eval mode on its device, runtime) via the safe weights_only loader."""
    ckpt = load_checkpoint(weights, task=task)
    rt = select_runtime(device, "fp32")
    return ckpt, restore_model(ckpt).to(rt.device).eval(), rt


def no_ink(pixels: np.ndarray, spec: PreprocessSpec) -> bool:
    """True when a digit-style reading found no ink: the canvas is all zero. A real digit never is
    (the digit preprocessing scales its brightest stroke to 255), so the canvas says nothing about
    the image: photos of scenes end up here (all four skimage test photos do)."""
    return spec.style == "digit" and not pixels.any()


NO_INK = "no ink found: the model reads images as digits (MNIST-style) and finds none in this one"


@dataclass
class Inputs:
    """A user's images for an apply verb: one record per file, and the readable ones as a batch."""

    records: list[Record]
    x: torch.Tensor            # (N, C, H, W) floats in [0, 1] of the readable files
    index: list[int]           # x[j] belongs to records[index[j]]


def as_inputs(inputs: Sequence[InputFile | str | Path]) -> list[InputFile]:
    """InputFiles as given; paths expanded like every apply verb's (folders, zips; missing = one error)."""
    paths = [f for f in inputs if not isinstance(f, InputFile)]
    return [f for f in inputs if isinstance(f, InputFile)] + (expand_inputs(paths) if paths else [])


def read_inputs(files: Sequence[InputFile], spec: PreprocessSpec,
                blank: Callable[[InputFile], np.ndarray | None] | None = None) -> Inputs:
    """Prepare each file exactly as in training. An unreadable file becomes an error record.

    A file the digit preprocessing finds no ink in is an error record too, unless `blank` gives a
    replacement reading for it (score reads such images with a plain resize instead: see
    autoencode.score); the record's `reading` value says which reading was used.
    """
    records, arrays, index = [], [], []
    for f in files:
        rec = Record(f.name, {"reading": spec.style})
        records.append(rec)
        try:
            arr = load_and_prepare(f.source(), spec, name=f.name)
            if no_ink(arr, spec):
                arr = blank(f) if blank is not None else None
                if arr is None:
                    rec.error = f"{f.name}: {NO_INK}"
                    continue
                rec.values["reading"] = "resize (no ink found)"
        except (DataError, OSError) as e:
            rec.error = str(e) if f.name in str(e) else f"{f.name}: {e}"
            continue
        arrays.append(arr)
        index.append(len(records) - 1)
    x = torch.from_numpy(np.stack(arrays)).float() / 255 if arrays else torch.empty(0)
    return Inputs(records, x, index)
