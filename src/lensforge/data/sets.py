"""The two shapes a dataset split can take, behind one `take(indices)` method.

Small datasets live in memory as uint8 tensors (slicing a batch costs microseconds); large image
folders stay on disk and are decoded batch by batch. The training loop only ever calls
`take`, so it does not care which one it got.
"""
from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Callable, Sequence

import numpy as np
import torch

from .preprocess import PreprocessSpec, load_and_prepare


@dataclass
class TensorSet:
    """A split held in memory: images uint8 (N,C,H,W), labels int64 (N,) or None if unlabelled."""

    images: torch.Tensor
    labels: torch.Tensor | None = None
    names: Sequence[str] | None = None

    def __post_init__(self):
        if self.images.dtype != torch.uint8 or self.images.dim() != 4:
            raise ValueError(f"images must be uint8 (N,C,H,W), got {self.images.dtype} {tuple(self.images.shape)}")
        if self.labels is not None and len(self.labels) != len(self.images):
            raise ValueError(f"{len(self.labels)} labels for {len(self.images)} images")

    def __len__(self) -> int:
        return len(self.images)

    @property
    def shape(self) -> tuple[int, int, int]:
        return tuple(self.images.shape[1:])

    def take(self, idx: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        return self.images[idx], (self.labels[idx] if self.labels is not None else None)

    def subset(self, idx: torch.Tensor) -> "TensorSet":
        names = [self.names[i] for i in idx.tolist()] if self.names is not None else None
        return TensorSet(self.images[idx], self.labels[idx] if self.labels is not None else None, names)


@dataclass
class FileSet:
    """A split left on disk (or in a zip) and decoded per batch, for folders too big for memory."""

    names: Sequence[str]
    labels: torch.Tensor | None
    spec: PreprocessSpec
    read: Callable[[str], bytes | str] = field(repr=False, default=lambda n: n)
    threads: int = 2

    def __len__(self) -> int:
        return len(self.names)

    @property
    def shape(self) -> tuple[int, int, int]:
        return (self.spec.channels, *self.spec.size)

    def take(self, idx: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        names = [self.names[i] for i in idx.tolist()]
        decode = lambda n: load_and_prepare(self.read(n), self.spec, name=n)  # noqa: E731
        with ThreadPoolExecutor(self.threads) as pool:
            arrays = list(pool.map(decode, names))
        images = torch.from_numpy(np.stack(arrays))
        return images, (self.labels[idx] if self.labels is not None else None)

    def subset(self, idx: torch.Tensor) -> "FileSet":
        return FileSet([self.names[i] for i in idx.tolist()],
                       self.labels[idx] if self.labels is not None else None, self.spec, self.read, self.threads)


def split_off(data, fraction: float, seed: int):
    """Carve a seeded random `fraction` of a split off as a second split (e.g. validation)."""
    if not 0.0 < fraction < 1.0:
        raise ValueError(f"fraction must be between 0 and 1, got {fraction}")
    n = len(data)
    k = max(1, int(round(n * fraction)))
    if k >= n:
        raise ValueError(f"cannot carve {fraction:.0%} out of {n} images and keep any for training")
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(seed))
    return data.subset(perm[k:].sort().values), data.subset(perm[:k].sort().values)
