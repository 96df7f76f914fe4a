"""Batches for training and evaluation, sliced from a split and augmented on the device.

Shuffling and augmentation draw from generators seeded by (seed, epoch, step), so an
interrupted run can restart at any step and see exactly the batches it would have seen.

Distributed training (`shard(rank, world)`, called by the engine): every rank draws the same
seeded permutation per epoch and takes its own slice of each *global* batch, so the ranks together
see exactly the batches a single process would (no image twice per epoch, none skipped beyond the
last partial batch), `--batch-size` keeps meaning the global batch, and a folder dataset
(FileSet) decodes only its rank's files.
"""
from __future__ import annotations

from typing import Iterator

import torch

from .augment import augment_batch
from .catalog import Augment


def _gen(*keys: int) -> torch.Generator:
    seed = 0
    for k in keys:
        seed = (seed * 1_000_003 + int(k) + 1) % (2 ** 63 - 1)
    return torch.Generator().manual_seed(seed)


class Batches:
    """Iterates (images float in [0,1] on `device`, labels or None) over a TensorSet/FileSet."""

    def __init__(self, data, batch_size: int, *, device: torch.device | str = "cpu", shuffle: bool = False,
                 drop_last: bool = False, augment: Augment | None = None, seed: int = 0):
        if batch_size < 1:
            raise ValueError(f"batch size must be >= 1, got {batch_size}")
        self.data, self.batch_size, self.device = data, batch_size, torch.device(device)
        self.shuffle, self.augment, self.seed = shuffle, augment, seed
        self.drop_last = drop_last and len(data) > batch_size
        self.rank, self.world = 0, 1
        self._phase: torch.Tensor | None = None   # per-image flip phase (alternating flips)

    def shard(self, rank: int, world: int) -> "Batches":
        """Give this process (rank of world) its slice of every global batch; the global batch
        must split evenly so every rank's gradient weighs the same."""
        if world > 1 and self.batch_size % world:
            raise ValueError(f"the batch size {self.batch_size} does not split evenly over {world} processes")
        if world > 1 and len(self) == 0:
            raise ValueError(f"{len(self.data)} training images are fewer than one batch per process")
        self.rank, self.world = rank, world
        return self

    def __len__(self) -> int:
        n = len(self.data)
        steps = n // self.batch_size if self.drop_last else -(-n // self.batch_size)
        if self.world > 1 and not self.drop_last and 0 < n % self.batch_size < self.world:
            steps -= 1   # a last batch smaller than the process count would leave a rank without images
        return steps

    def epoch(self, epoch: int = 0, start: int = 0) -> Iterator[tuple[torch.Tensor, torch.Tensor | None]]:
        """Batches of one epoch, beginning at batch index `start` (for exact mid-epoch resume)."""
        n = len(self.data)
        order = torch.randperm(n, generator=_gen(self.seed, epoch)) if self.shuffle else torch.arange(n)
        for step in range(start, len(self)):
            idx = order[step * self.batch_size:(step + 1) * self.batch_size]
            if self.world > 1:
                idx = idx.tensor_split(self.world)[self.rank]
            x, y = self.data.take(idx)
            x = x.to(self.device, non_blocking=True)
            if self.augment is not None and self.augment.flip and self.augment.alternating_flip:
                x = self._alternate_flip(x, idx, epoch)
            if self.augment is not None:
                keys = (self.seed, epoch, step, 7) if self.world == 1 else (self.seed, epoch, step, 7, self.rank)
                x = augment_batch(x, **self.augment.batch_kwargs(), generator=_gen(*keys))
            x = x.float().div_(255)
            yield x, (y.to(self.device, non_blocking=True) if y is not None else None)

    def _alternate_flip(self, x: torch.Tensor, idx: torch.Tensor, epoch: int) -> torch.Tensor:
        """Mirror image i in epoch e iff its seeded phase bit differs from e's parity."""
        if self._phase is None:
            self._phase = torch.randint(0, 2, (len(self.data),), generator=_gen(self.seed, 11))
        mirror = (self._phase[idx] ^ (epoch % 2)).bool().to(x.device)
        return torch.where(mirror[:, None, None, None], x.flip(-1), x)

    def __iter__(self):
        return self.epoch(0)
