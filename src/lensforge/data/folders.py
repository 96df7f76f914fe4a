"""A user's own images: `root/<class>/*.jpg`, optionally under `train/`, `test/` or `val/`,
given as a folder or as a `.zip` of one.

Class rule: an image's class is the folder that directly holds it, so nested layouts such as
`faces94/{female,male}/<person>/*.jpg` give one class per person (153), not per top folder.
Where two such folders share a name (`a/cat`, `b/cat`), their paths below the split keep them apart
(`a/cat`, `b/cat`). Images directly in the root (or split) folder have no class.
Unreadable files are skipped and reported (`Dataset.skipped`), never silently dropped.

Small sets are decoded once into memory (a .zip's decoded images are also cached under the cache
directory, keyed by file identity and size, so the second run skips JPEG decoding; folders are
decoded on each run); large ones stream from disk.
"""
from __future__ import annotations

import hashlib
import os
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path, PurePosixPath

import numpy as np
import torch

from ..errors import DataError, UsageError
from ..fileio import atomic_open
from .catalog import Augment, Dataset
from .imageio import IMAGE_EXTENSIONS, image_size
from .preprocess import PreprocessSpec, load_and_prepare
from .sets import FileSet, TensorSet, split_off
from .sources import Source, open_source

SPLIT_NAMES = {"train": "train", "test": "test", "val": "val", "valid": "val", "validation": "val"}
MEMORY_LIMIT = int(os.environ.get("LENSFORGE_MEMORY_LIMIT", 4 << 30))




def _layout(names: list[str]) -> tuple[dict[str, list[str]], dict[str, list[str | None]]]:
    """Group files into splits and classes, skipping wrapper folders like `orl_faces/`."""
    parts = [PurePosixPath(n).parts for n in names]
    depth = 0
    while (all(len(p) > depth + 1 for p in parts) and len({p[depth] for p in parts}) == 1
           and parts[0][depth].lower() not in SPLIT_NAMES):
        depth += 1
    splits: dict[str, list[str]] = {}
    labels: dict[str, list[str | None]] = {}
    has_splits = any(len(p) > depth + 1 and p[depth].lower() in SPLIT_NAMES for p in parts)
    for name, p in zip(names, parts):
        p = p[depth:]
        split = "train"
        if has_splits:
            if p[0].lower() not in SPLIT_NAMES:
                continue  # stray files next to train/ and test/
            split, p = SPLIT_NAMES[p[0].lower()], p[1:]
        splits.setdefault(split, []).append(name)
        labels.setdefault(split, []).append("/".join(p[:-1]) if len(p) > 1 else None)
    return splits, _leaf_names(labels)


def _leaf_names(labels: dict[str, list[str | None]]) -> dict[str, list[str | None]]:
    """Class folder paths -> their last component, unless two different paths share it."""
    paths = {l for ls in labels.values() for l in ls if l is not None}
    leaf_count = Counter(PurePosixPath(l).name for l in paths)
    short = {l: (PurePosixPath(l).name if leaf_count[PurePosixPath(l).name] == 1 else l) for l in paths}
    return {split: [short.get(l) if l is not None else None for l in ls] for split, ls in labels.items()}


def _probe_spec(source: Source, names: list[str], size, channels, style) -> PreprocessSpec:
    """Pick the model input size and channels from a sample of image headers unless given."""
    sample = names[:: max(1, len(names) // 200)][:200]
    headers = []
    for n in sample:
        try:
            headers.append(image_size(source.read(n), name=n))
        except DataError:
            continue
    if not headers:
        raise DataError(f"{source.root}: none of the sampled files is a readable image")
    if channels is None:
        grey = {"L", "1", "I;16", "I", "F", "LA", "I;16B", "I;16L"}
        channels = 1 if all(m in grey for _, _, m in headers) else 3
    if size is None:
        (w, h), _ = Counter((w, h) for w, h, _ in headers).most_common(1)[0]
        same = all((hw[0], hw[1]) == (w, h) for hw in headers)
        size = (h, w) if same and max(h, w) <= 128 else (64, 64)
    elif isinstance(size, int):
        size = (size, size)
    return PreprocessSpec(tuple(size), int(channels), style)


def _cache_path(source: Source, spec: PreprocessSpec, split: str) -> Path:
    st = source.root.stat()
    key = f"{source.root.resolve()}|{st.st_size}|{st.st_mtime_ns}|{spec.to_dict()}|{split}|v1"
    base = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "lensforge" / "decoded"
    return base / (hashlib.sha1(key.encode()).hexdigest()[:20] + ".pt")


def _decode_all(source: Source, names: list[str], spec: PreprocessSpec, split: str,
                skipped: list[str]) -> tuple[torch.Tensor, list[str]]:
    """Decode every image once; unreadable files are skipped and appended to `skipped`
    ("name: reason"), not a crash."""
    cache = _cache_path(source, spec, split) if source.root.is_file() else None
    if cache is not None and cache.exists():
        try:
            blob = torch.load(cache, weights_only=True)
            if blob["names"] == names:
                return blob["images"], names
        except Exception:  # a stale or damaged cache is just rebuilt
            pass

    def decode(n):
        try:
            return load_and_prepare(source.read(n), spec, name=n)
        except DataError as e:
            return str(e)

    with ThreadPoolExecutor(2) as pool:
        arrays = list(pool.map(decode, names))
    skipped += [a for a in arrays if isinstance(a, str)]
    keep = [i for i, a in enumerate(arrays) if not isinstance(a, str)]
    if not keep:
        raise DataError(f"{source.root}: no readable images in split '{split}'")
    images = torch.from_numpy(np.stack([arrays[i] for i in keep]))
    kept = [names[i] for i in keep]
    if cache is not None and len(keep) == len(names):
        with atomic_open(cache, "wb") as f:
            torch.save({"images": images, "names": kept}, f)
    return images, kept


def load_folder(path: str | Path, *, size=None, channels=None, style: str = "resize",
                test_fraction: float = 0.2, require_labels: bool = True) -> Dataset:
    """Load an image folder or zip as a Dataset (classes = sorted sub-folder names)."""
    root = Path(path)
    if not root.exists():
        raise UsageError(f"{root}: no such file or folder")
    source = open_source(root)
    if not source.names:
        raise DataError(f"{root}: contains no image files ({', '.join(sorted(IMAGE_EXTENSIONS))})")
    splits, split_labels = _layout(source.names)
    if "train" not in splits:
        raise DataError(f"{root}: has {'/'.join(sorted(splits))} but no train/ split")
    all_labels = {l for ls in split_labels.values() for l in ls}
    labelled = None not in all_labels
    if require_labels and not labelled:
        raise DataError(f"{root}: images must sit in one sub-folder per class (root/<class>/image.jpg)")
    classes = sorted(all_labels) if labelled else None
    spec = _probe_spec(source, splits["train"], size, channels, style)
    n_bytes = len(source.names) * spec.channels * spec.size[0] * spec.size[1]
    sets, skipped = {}, []
    for split, names in splits.items():
        label_of = {n: l for n, l in zip(names, split_labels[split])}
        if n_bytes <= MEMORY_LIMIT:
            images, kept = _decode_all(source, names, spec, split, skipped)
            labels = torch.tensor([classes.index(label_of[n]) for n in kept]) if labelled else None
            sets[split] = TensorSet(images, labels, kept)
        else:
            labels = torch.tensor([classes.index(l) for l in split_labels[split]]) if labelled else None
            sets[split] = FileSet(names, labels, spec, source.read)
    train, test = sets["train"], sets.get("test")
    val = sets.get("val")
    if test is None and val is not None:
        test, val = val, None
    if test is None and test_fraction > 0:
        try:
            train, test = split_off(train, test_fraction, seed=0)
        except ValueError as e:
            raise DataError(f"{root}: too few images for a test split ({e}); add more or a test/ folder") from None
    translate = max(1, min(spec.size) // 8)
    return Dataset(root.name, classes, train, test, spec, Augment(translate=translate, flip=True), val=val,
                   skipped=skipped)
