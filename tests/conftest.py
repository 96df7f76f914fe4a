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


@pytest.fixture(scope="module")
def torch_fp32():
    """PyTorch in fp32 for a whole module, also on CPUs where lensforge picks bf16 (AVX512-BF16/AMX):
    for tests that compare PyTorch's outputs with fp32 ONNX graphs to 1e-4."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr("lensforge.engine.device.cpu_has_fast_bf16", lambda: False)
        yield


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


def png_bytes(arr: np.ndarray) -> bytes:
    """An image array encoded as PNG, as a browser would upload it."""
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, "PNG")
    return buf.getvalue()


def b64_image(b64: str) -> np.ndarray:
    """A base64 image from a server answer, decoded to an array."""
    import base64

    from PIL import Image

    return np.asarray(Image.open(io.BytesIO(base64.b64decode(b64))))


def astronaut_face_pair(root: Path) -> tuple[Path, Path]:
    """Two tiny face sets for face swap tests. A: faces extracted (with alignments.json) from turned
    and scaled copies of scikit-image's astronaut; B: her crops mirrored and recoloured (bare crops)."""
    import cv2
    from PIL import Image
    from skimage import data as skdata

    from lensforge.tasks import faceswap

    rng = np.random.default_rng(0)
    (root / "photos").mkdir()
    for i in range(6):
        m = cv2.getRotationMatrix2D((256, 140), rng.uniform(-12, 12), rng.uniform(0.9, 1.1))
        m[:, 2] += rng.uniform(-15, 15, 2)
        img = cv2.warpAffine(skdata.astronaut(), m, (512, 512), borderMode=cv2.BORDER_REFLECT101)
        Image.fromarray(cv2.resize(img, (256, 256), interpolation=cv2.INTER_AREA)).save(root / "photos" / f"a{i}.png")
    assert faceswap.extract([root / "photos"], root / "a", face_size=64, largest=True).summary["faces_written"] == 6
    (root / "b").mkdir()
    for i in range(6):
        crop = np.asarray(Image.open(root / "a" / f"a{i}_0.png")).astype(np.float32)
        other = (0.6 * crop[:, ::-1] * [0.6, 0.9, 1.3]).clip(0, 255).astype(np.uint8)
        Image.fromarray(other).save(root / "b" / f"b{i}.png")
    return root / "a", root / "b"
