"""Data layer: named datasets, a user's folders and zips, in-memory batches, augmentation."""
from __future__ import annotations

from pathlib import Path

from ..errors import DataError, UsageError
from .catalog import NAMED, Augment, Dataset, is_named, load_named
from .sets import split_off


def load_dataset(data: str | Path, *, data_dir=None, download: bool = True, image_size=None, channels=None,
                 style: str | None = None, val_fraction: float = 0.0, seed: int = 0,
                 require_labels: bool = True) -> Dataset:
    """Resolve a dataset name or a folder/.zip path into splits, with an optional validation split
    carved from train with `seed` (the test split is never touched)."""
    from .folders import load_folder

    data = str(data)
    if is_named(data):
        ds = load_named(data, data_dir=data_dir, download=download)
    elif Path(data).exists():
        ds = load_folder(data, size=image_size, channels=channels, style=style or "resize",
                         require_labels=require_labels)
    else:
        raise UsageError(f"--data {data}: not a known dataset ({', '.join(NAMED)}) nor an existing folder or .zip")
    if val_fraction:
        if ds.val is not None:
            raise UsageError(f"--val-fraction given but {data} already has a val/ split")
        try:
            ds.train, ds.val = split_off(ds.train, val_fraction, seed)
        except ValueError as e:
            raise UsageError(f"--val-fraction: {e}") from None
    return ds


__all__ = ["Augment", "Dataset", "DataError", "load_dataset", "NAMED"]
