"""Readers for the official binary dataset formats (IDX for MNIST-style sets, CIFAR-10 binary).

Both are parsed with numpy from the bytes themselves -- never with pickle -- and every header is
checked, so a truncated or mislabelled download fails with a message naming the file instead of
producing a silently wrong tensor.
"""
from __future__ import annotations

import gzip
import tarfile
import zlib
from pathlib import Path

import numpy as np

from ..errors import DataError

_IDX_DTYPES = {0x08: np.uint8, 0x09: np.int8, 0x0B: np.dtype(">i2"), 0x0C: np.dtype(">i4"),
               0x0D: np.dtype(">f4"), 0x0E: np.dtype(">f8")}


def _read_maybe_gzip(path: Path) -> bytes:
    try:
        raw = path.read_bytes()
    except OSError as e:
        raise DataError(f"{path}: cannot read ({e.strerror or e})") from None
    if raw[:2] == b"\x1f\x8b":
        try:
            return gzip.decompress(raw)
        except (OSError, EOFError, zlib.error) as e:
            raise DataError(f"{path}: corrupt gzip data ({e})") from None
    return raw


def read_idx(path: str | Path) -> np.ndarray:
    """Parse an IDX file (optionally gzipped): 2 zero bytes, dtype code, ndim, big-endian dims."""
    path = Path(path)
    data = _read_maybe_gzip(path)
    if len(data) < 4 or data[0] != 0 or data[1] != 0 or data[2] not in _IDX_DTYPES:
        raise DataError(f"{path}: not an IDX file (bad magic number)")
    dtype = np.dtype(_IDX_DTYPES[data[2]])
    ndim = data[3]
    header = 4 + 4 * ndim
    if len(data) < header:
        raise DataError(f"{path}: truncated IDX header")
    dims = tuple(int.from_bytes(data[4 + 4 * i: 8 + 4 * i], "big") for i in range(ndim))
    expected = header + int(np.prod(dims, dtype=np.int64)) * dtype.itemsize
    if len(data) != expected:
        raise DataError(f"{path}: IDX size mismatch (header says {dims}, "
                        f"expected {expected} bytes, file has {len(data)})")
    return np.frombuffer(data, dtype=dtype, offset=header).reshape(dims).astype(dtype.newbyteorder("="))


def read_idx_pair(images_path: Path, labels_path: Path) -> tuple[np.ndarray, np.ndarray]:
    """Images (N,1,H,W) uint8 and labels (N,) int64 from an IDX image/label file pair."""
    images = read_idx(images_path)
    labels = read_idx(labels_path)
    if images.ndim != 3 or images.dtype != np.uint8:
        raise DataError(f"{images_path}: expected a 3-D uint8 IDX image file, got shape {images.shape}")
    if labels.ndim != 1:
        raise DataError(f"{labels_path}: expected a 1-D IDX label file, got shape {labels.shape}")
    if len(images) != len(labels):
        raise DataError(f"{labels_path}: {len(labels)} labels for {len(images)} images in {images_path.name}")
    return images[:, None], labels.astype(np.int64)


CIFAR10_RECORD = 1 + 3 * 32 * 32


def read_cifar10_binary(path: str | Path) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Read `cifar-10-binary.tar.gz`: {"train": (x, y), "test": (x, y)}, x (N,3,32,32) uint8."""
    path = Path(path)
    train_names = [f"data_batch_{i}.bin" for i in range(1, 6)]
    parts: dict[str, bytes] = {}
    try:
        with tarfile.open(path, "r:*") as tar:
            for member in tar:
                base = Path(member.name).name
                if member.isfile() and (base in train_names or base == "test_batch.bin"):
                    f = tar.extractfile(member)
                    parts[base] = f.read() if f else b""
    except (tarfile.TarError, OSError, EOFError, zlib.error) as e:
        raise DataError(f"{path}: not a readable CIFAR-10 binary archive ({e})") from None
    missing = [n for n in train_names + ["test_batch.bin"] if n not in parts]
    if missing:
        raise DataError(f"{path}: archive lacks {', '.join(missing)} (is it cifar-10-binary.tar.gz?)")

    def decode(names: list[str]) -> tuple[np.ndarray, np.ndarray]:
        blobs = []
        for n in names:
            if len(parts[n]) % CIFAR10_RECORD:
                raise DataError(f"{path}: {n} has a partial record (size {len(parts[n])})")
            blobs.append(np.frombuffer(parts[n], np.uint8).reshape(-1, CIFAR10_RECORD))
        rec = np.concatenate(blobs)
        labels = rec[:, 0].astype(np.int64)
        if labels.max(initial=0) > 9:
            raise DataError(f"{path}: label {labels.max()} out of range 0-9")
        return rec[:, 1:].reshape(-1, 3, 32, 32).copy(), labels

    return {"train": decode(train_names), "test": decode(["test_batch.bin"])}
