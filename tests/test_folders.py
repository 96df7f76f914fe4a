"""A user's image folders and zips are read with the layout rules users expect."""
from __future__ import annotations

import zipfile

import pytest

from conftest import write_image_folder
from lensforge.data import load_dataset
from lensforge.errors import DataError, UsageError


def test_class_folders_get_a_seeded_test_split(tmp_path):
    root = write_image_folder(tmp_path / "pets", n=10)
    ds = load_dataset(root)
    assert ds.classes == ["cat", "dog"]
    assert len(ds.train) == 16 and len(ds.test) == 4
    assert ds.train.images.shape[1:] == (3, 16, 20)  # probed (h, w) from the files
    assert ds.augment.flip


def test_train_test_splits_and_val(tmp_path):
    write_image_folder(tmp_path / "d" / "train", n=8)
    write_image_folder(tmp_path / "d" / "val", n=3, seed=1)
    ds = load_dataset(tmp_path / "d", image_size=12)
    assert len(ds.train) == 16 and len(ds.test) == 6  # val/ alone serves as the test split
    assert ds.train.images.shape[2:] == (12, 12)


def test_zip_with_wrapper_folder_and_junk(tmp_path):
    root = write_image_folder(tmp_path / "src" / "wrapper", n=5)
    (root / "notes.txt").write_text("not an image")
    (root / "cat" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n garbage")
    zpath = tmp_path / "pets.zip"
    with zipfile.ZipFile(zpath, "w") as z:
        for f in (tmp_path / "src").rglob("*"):
            if f.is_file():
                z.write(f, f.relative_to(tmp_path / "src").as_posix())
    ds = load_dataset(zpath)
    assert ds.classes == ["cat", "dog"]
    assert len(ds.train) + len(ds.test) == 10  # the broken file is skipped, not fatal
    again = load_dataset(zpath)  # second load comes from the decoded cache
    assert again.train.images.equal(ds.train.images)


def test_unlabelled_folder(tmp_path):
    write_image_folder(tmp_path / "flat", classes=("only",), n=4)
    for f in (tmp_path / "flat" / "only").iterdir():
        f.rename(tmp_path / "flat" / f.name)
    (tmp_path / "flat" / "only").rmdir()
    with pytest.raises(DataError, match="sub-folder per class"):
        load_dataset(tmp_path / "flat")
    ds = load_dataset(tmp_path / "flat", require_labels=False, image_size=8)
    assert ds.classes is None and ds.train.labels is None and len(ds.train) + len(ds.test) == 4


def test_errors(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="contains no image files"):
        load_dataset(tmp_path / "empty")
    with pytest.raises(UsageError, match="not a known dataset"):
        load_dataset(tmp_path / "nope")
    (tmp_path / "bad.zip").write_bytes(b"PK not a zip")
    with pytest.raises(DataError, match="not a readable zip"):
        load_dataset(tmp_path / "bad.zip")


def test_streaming_when_over_memory_limit(tmp_path, monkeypatch):
    import lensforge.data.folders as folders
    import torch

    monkeypatch.setattr(folders, "MEMORY_LIMIT", 10)
    ds = load_dataset(write_image_folder(tmp_path / "big", n=6), image_size=8)
    assert type(ds.train).__name__ == "FileSet"
    x, y = ds.train.take(torch.tensor([0, 1, 2]))
    assert x.shape == (3, 3, 8, 8) and x.dtype == torch.uint8 and y.shape == (3,)
