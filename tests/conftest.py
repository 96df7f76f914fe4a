"""Shared fixtures: small synthetic datasets in the official on-disk formats."""
from __future__ import annotations

import gzip
import io
import tarfile
from pathlib import Path

import numpy as np
import pytest

SHARED = Path(__file__).resolve().parents[2] / "shared" / "datasets"


@pytest.fixture(autouse=True)
def _isolated_cache(tmp_path_factory, monkeypatch):
    """Keep every test away from the user's real cache and data directories."""
    cache = tmp_path_factory.mktemp("cache")
    monkeypatch.setenv("XDG_CACHE_HOME", str(cache))
    monkeypatch.delenv("LENSFORGE_DATA_DIR", raising=False)


def idx_bytes(array: np.ndarray) -> bytes:
    codes = {np.dtype(np.uint8): 0x08}
    header = bytes([0, 0, codes[array.dtype], array.ndim]) + b"".join(int(d).to_bytes(4, "big") for d in array.shape)
    return header + array.tobytes()


def blob_digits(n: int, rng: np.random.Generator, size: int = 28) -> tuple[np.ndarray, np.ndarray]:
    """Learnable synthetic 'digits': class k is a bright blob at one of 10 positions, plus noise."""
    labels = rng.integers(0, 10, n)
    images = rng.integers(0, 40, (n, size, size)).astype(np.uint8)
    for i, k in enumerate(labels):
        r, c = 4 + (k // 5) * 12, 3 + (k % 5) * 5
        images[i, r:r + 8, c:c + 4] = 230
    return images, labels.astype(np.uint8)


def write_idx_dataset(folder: Path, n_train=600, n_test=200, seed=0) -> Path:
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    for prefix, n in (("train", n_train), ("t10k", n_test)):
        x, y = blob_digits(n, rng)
        (folder / f"{prefix}-images-idx3-ubyte.gz").write_bytes(gzip.compress(idx_bytes(x)))
        (folder / f"{prefix}-labels-idx1-ubyte.gz").write_bytes(gzip.compress(idx_bytes(y)))
    return folder


@pytest.fixture
def mnist_dir(tmp_path) -> Path:
    """A data dir holding a tiny learnable 'mnist' in the official IDX .gz layout."""
    write_idx_dataset(tmp_path / "data" / "mnist")
    return tmp_path / "data"


def write_cifar_binary(path: Path, n_per_batch=20, seed=0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    buf = io.BytesIO()
    all_x, all_y = [], []
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        for name in [f"data_batch_{i}.bin" for i in range(1, 6)] + ["test_batch.bin"]:
            y = rng.integers(0, 10, n_per_batch).astype(np.uint8)
            x = rng.integers(0, 256, (n_per_batch, 3, 32, 32)).astype(np.uint8)
            rec = np.concatenate([y[:, None], x.reshape(n_per_batch, -1)], axis=1).tobytes()
            info = tarfile.TarInfo(f"cifar-10-batches-bin/{name}")
            info.size = len(rec)
            tar.addfile(info, io.BytesIO(rec))
            all_x.append(x)
            all_y.append(y)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(buf.getvalue())
    return np.concatenate(all_x), np.concatenate(all_y)


def write_image_folder(root: Path, classes=("cat", "dog"), n=12, size=(20, 16), ext=".png", seed=0) -> Path:
    from PIL import Image

    rng = np.random.default_rng(seed)
    for ci, c in enumerate(classes):
        (root / c).mkdir(parents=True, exist_ok=True)
        for i in range(n):
            arr = rng.integers(0, 60, (size[1], size[0], 3)).astype(np.uint8)
            arr[..., ci % 3] += 150
            Image.fromarray(arr).save(root / c / f"{i}{ext}")
    return root
