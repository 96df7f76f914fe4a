"""The official binary formats are parsed exactly and malformed files are refused clearly."""
from __future__ import annotations

import gzip

import numpy as np
import pytest

from conftest import idx_bytes, write_cifar_binary
from lensforge.data import load_dataset
from lensforge.data.formats import read_cifar10_binary, read_idx, read_idx_pair
from lensforge.errors import DataError


def test_idx_roundtrip_gz_and_raw(tmp_path):
    x = np.arange(2 * 3 * 4, dtype=np.uint8).reshape(2, 3, 4)
    (tmp_path / "a.gz").write_bytes(gzip.compress(idx_bytes(x)))
    (tmp_path / "a").write_bytes(idx_bytes(x))
    np.testing.assert_array_equal(read_idx(tmp_path / "a.gz"), x)
    np.testing.assert_array_equal(read_idx(tmp_path / "a"), x)


@pytest.mark.parametrize("data, message", [
    (b"\x01\x02\x08\x01", "bad magic"),
    (b"\x00\x00\x08\x03\x00\x00", "truncated"),
    (idx_bytes(np.zeros((5,), np.uint8))[:-1], "size mismatch"),
    (b"\x1f\x8bnot-really-gzip", "corrupt gzip"),
])
def test_idx_malformed(tmp_path, data, message):
    path = tmp_path / "bad.gz"
    path.write_bytes(data)
    with pytest.raises(DataError, match=message) as e:
        read_idx(path)
    assert "bad.gz" in str(e.value) and "\n" not in str(e.value)


def test_idx_pair_count_mismatch(tmp_path):
    (tmp_path / "x").write_bytes(idx_bytes(np.zeros((3, 2, 2), np.uint8)))
    (tmp_path / "y").write_bytes(idx_bytes(np.zeros((4,), np.uint8)))
    with pytest.raises(DataError, match="4 labels for 3 images"):
        read_idx_pair(tmp_path / "x", tmp_path / "y")


def test_cifar_binary(tmp_path):
    x, y = write_cifar_binary(tmp_path / "cifar10" / "cifar-10-binary.tar.gz")
    parts = read_cifar10_binary(tmp_path / "cifar10" / "cifar-10-binary.tar.gz")
    np.testing.assert_array_equal(parts["train"][0], x[:100])
    np.testing.assert_array_equal(parts["test"][1], y[100:])
    ds = load_dataset("cifar10", data_dir=tmp_path, download=False)
    assert ds.train.images.shape == (100, 3, 32, 32) and len(ds.test) == 20
    assert ds.classes[0] == "airplane" and ds.augment.flip


def test_cifar_not_an_archive(tmp_path):
    (tmp_path / "cifar10").mkdir()
    (tmp_path / "cifar10" / "cifar-10-binary.tar.gz").write_bytes(b"garbage")
    with pytest.raises(DataError, match="not a readable CIFAR-10"):
        load_dataset("cifar10", data_dir=tmp_path, download=False)


def test_named_idx_dataset_from_data_dir(mnist_dir):
    ds = load_dataset("mnist", data_dir=mnist_dir, download=False, val_fraction=0.1, seed=3)
    assert ds.train.images.dtype.is_floating_point is False
    assert ds.train.images.shape[1:] == (1, 28, 28)
    assert len(ds.train) + len(ds.val) == 600 and len(ds.val) == 60 and len(ds.test) == 200
    again = load_dataset("mnist", data_dir=mnist_dir, download=False, val_fraction=0.1, seed=3)
    assert again.val.labels.tolist() == ds.val.labels.tolist()  # fixed seed, same split
    assert ds.spec.style == "digit" and not ds.augment.flip


def test_missing_files_offline_names_file_and_place(tmp_path):
    with pytest.raises(DataError) as e:
        load_dataset("fashion-mnist", data_dir=tmp_path, download=False)
    msg = str(e.value)
    assert "train-images-idx3-ubyte.gz" in msg and str(tmp_path / "fashion-mnist") in msg


@pytest.mark.skipif(not (SHARED := __import__("conftest").SHARED / "mnist").exists(), reason="shared data absent")
def test_real_mnist_files():
    ds = load_dataset("mnist", data_dir=SHARED.parent, download=False)
    assert len(ds.train) == 60000 and len(ds.test) == 10000
    assert abs(ds.train.images.float().mean().item() - 33.32) < 0.05
    assert np.bincount(ds.test.labels.numpy()).tolist()[:2] == [980, 1135]
