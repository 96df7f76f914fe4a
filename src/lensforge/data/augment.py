"""Batched augmentation on whole uint8 batches, on the training device.

One indexing op per transform for the whole batch instead of a Python call per image: this is
what lets a 2-core CPU keep a CNN fed without DataLoader workers.
"""
from __future__ import annotations

import torch


def random_translate(x: torch.Tensor, pad: int, generator: torch.Generator | None = None) -> torch.Tensor:
    """Shift every image by its own random (dy, dx) in [-pad, pad], filling with zeros."""
    if pad <= 0:
        return x
    n, c, h, w = x.shape
    padded = torch.nn.functional.pad(x, (pad, pad, pad, pad))
    dy = torch.randint(0, 2 * pad + 1, (n,), generator=generator, device="cpu").to(x.device)
    dx = torch.randint(0, 2 * pad + 1, (n,), generator=generator, device="cpu").to(x.device)
    rows = (dy[:, None] + torch.arange(h, device=x.device))[:, None, :, None]
    cols = (dx[:, None] + torch.arange(w, device=x.device))[:, None, None, :]
    batch = torch.arange(n, device=x.device)[:, None, None, None]
    chan = torch.arange(c, device=x.device)[None, :, None, None]
    return padded[batch, chan, rows, cols]


def random_flip(x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
    """Mirror a random half of the batch left-right."""
    mask = torch.rand(x.shape[0], generator=generator, device="cpu").to(x.device) < 0.5
    return torch.where(mask[:, None, None, None], x.flip(-1), x)


def cutout(x: torch.Tensor, size: int, generator: torch.Generator | None = None) -> torch.Tensor:
    """Zero one random size x size square per image (centre may lie near the border)."""
    if size <= 0:
        return x
    n, _, h, w = x.shape
    cy = torch.randint(0, h, (n,), generator=generator, device="cpu").to(x.device)
    cx = torch.randint(0, w, (n,), generator=generator, device="cpu").to(x.device)
    ys = torch.arange(h, device=x.device)[None, :, None]
    xs = torch.arange(w, device=x.device)[None, None, :]
    half = size // 2
    inside = ((ys - cy[:, None, None]).abs() <= half) & ((xs - cx[:, None, None]).abs() <= half)
    return x.masked_fill(inside[:, None], 0)


def augment_batch(x: torch.Tensor, *, translate: int = 0, flip: bool = False, cutout_size: int = 0,
                  generator: torch.Generator | None = None) -> torch.Tensor:
    x = random_translate(x, translate, generator)
    if flip:
        x = random_flip(x, generator)
    return cutout(x, cutout_size, generator)
