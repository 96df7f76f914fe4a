"""Segmentation data layer: mask formats, pairing, one-line errors, joint augmentation, weight maps."""
from __future__ import annotations

import io
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from lensforge.data.masks import default_colours, read_class_table
from lensforge.data.segdata import (Augmentation, CropBatches, augment_pair, border_weight_map,
                                    load_segmentation)
from lensforge.errors import DataError

SHARED = Path(__file__).resolve().parents[2] / "shared" / "datasets"
COLOURS = [(0, 0, 0), (200, 30, 30), (30, 60, 220)]


def class_mask(rng, h=40, w=52, k=3) -> np.ndarray:
    """Blocky mask with every class present."""
    m = np.zeros((h, w), np.uint8)
    for c in range(1, k):
        for _ in range(2):
            y, x = rng.integers(0, h - 10), rng.integers(0, w - 10)
            m[y:y + rng.integers(5, 10), x:x + rng.integers(5, 10)] = c
    m[0, 0], m[-1, -1], m[0, -1] = 0, 1, k - 1
    return m


def save(arr, path: Path, **kw) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    img = arr if isinstance(arr, Image.Image) else Image.fromarray(arr)
    img.save(path, **kw)


def photo(rng, h, w) -> np.ndarray:
    return rng.integers(0, 255, (h, w, 3)).astype(np.uint8)


def write_pairs(root: Path, masks: dict[str, np.ndarray | Image.Image], rng, image_ext=".jpg") -> None:
    for stem, m in masks.items():
        h, w = (m.size[1], m.size[0]) if isinstance(m, Image.Image) else m.shape[:2]
        save(photo(rng, h, w), root / "images" / f"{stem}{image_ext}", **({"quality": 90} if image_ext == ".jpg" else {}))
        save(m, root / "masks" / f"{stem}.png")


def palette_image(m: np.ndarray, colours) -> Image.Image:
    img = Image.fromarray(m, mode="P")
    pal = [v for c in colours for v in c]
    img.putpalette(pal + [0] * (768 - len(pal)))
    return img


def loaded_masks(root, **kw) -> dict[str, np.ndarray]:
    d = load_segmentation(root, test_fraction=0, **kw)
    return {Path(n).stem: m.numpy() for n, m in zip(d.train.names, d.train.masks)}, d


# ----------------------------------------------------------------------------- formats round-trip


def test_index_palette_and_colour_masks_round_trip(tmp_path):
    rng = np.random.default_rng(0)
    truth = {f"im{i}": class_mask(rng) for i in range(3)}
    # class indices in a grey PNG
    write_pairs(tmp_path / "index", truth, rng)
    got, d = loaded_masks(tmp_path / "index")
    assert d.mask_mode == "index" and d.num_classes == 3
    assert all(np.array_equal(got[s], truth[s]) for s in truth)
    # palette PNG (VOC style): the indices are the classes whatever the palette colours
    write_pairs(tmp_path / "pal", {s: palette_image(m, COLOURS) for s, m in truth.items()}, rng)
    got, d = loaded_masks(tmp_path / "pal")
    assert all(np.array_equal(got[s], truth[s]) for s in truth)
    # colour-coded RGB masks with classes.csv (header + name,r,g,b)
    csv = tmp_path / "classes.csv"
    csv.write_text("name,r,g,b\nbackground,0,0,0\nscratch,200,30,30\ndent,30,60,220\n")
    lut = np.array(COLOURS, np.uint8)
    write_pairs(tmp_path / "rgb", {s: lut[m] for s, m in truth.items()}, rng)
    got, d = loaded_masks(tmp_path / "rgb", classes=str(csv))
    assert d.mask_mode == "colour" and d.classes.names == ["background", "scratch", "dent"]
    assert all(np.array_equal(got[s], truth[s]) for s in truth)
    # the same colour masks with the class table given as a VOC-style palette PNG
    table_png = tmp_path / "palette.png"
    palette_image(np.array([[0, 1, 2]], np.uint8), COLOURS).save(table_png)
    assert read_class_table(table_png).colours == COLOURS
    got, _ = loaded_masks(tmp_path / "rgb", classes=str(table_png))
    assert all(np.array_equal(got[s], truth[s]) for s in truth)


def test_binary_masks_threshold_at_half_including_antialiased_edges(tmp_path):
    rng = np.random.default_rng(1)
    truth = (class_mask(rng, k=2) > 0).astype(np.uint8)
    m255 = truth * 255
    # anti-aliased edge: values just either side of half stay on their side
    edge = np.where(truth == 1, 200, 60).astype(np.uint8)
    border = np.zeros_like(truth, bool)
    border[::3] = True
    m255 = np.where(border, edge, m255).astype(np.uint8)
    assert len(np.unique(m255)) == 4
    write_pairs(tmp_path / "bin", {"a": m255}, rng)
    got, d = loaded_masks(tmp_path / "bin")
    assert d.mask_mode == "binary" and d.classes.names == ["background", "foreground"]
    assert np.array_equal(got["a"], truth)
    # 0/255 saved as an RGB PNG is still grey
    write_pairs(tmp_path / "binrgb", {"a": np.repeat((truth * 255)[..., None], 3, 2)}, rng)
    got, _ = loaded_masks(tmp_path / "binrgb")
    assert np.array_equal(got["a"], truth)


def test_splits_zip_and_wrapper_folder(tmp_path):
    rng = np.random.default_rng(2)
    buf = {}
    for split, n in (("train", 3), ("val", 1), ("test", 2)):
        for i in range(n):
            m = class_mask(rng)
            for sub, arr, ext in (("images", photo(rng, *m.shape), ".jpg"), ("masks", m, ".png")):
                b = io.BytesIO()
                Image.fromarray(arr).save(b, format="JPEG" if ext == ".jpg" else "PNG")
                buf[f"wrap/{split}/{sub}/{split}{i}{ext}"] = b.getvalue()
    z = tmp_path / "data.zip"
    with zipfile.ZipFile(z, "w") as zf:
        for k, v in buf.items():
            zf.writestr(k, v)
    d = load_segmentation(z, val_fraction=0.1)
    assert (len(d.train), len(d.val), len(d.test)) == (3, 1, 2)
    assert d.channels == 3 and d.train.images[0].shape[0] == 3


@pytest.mark.skipif(not (SHARED / "isbi2012-membrane.zip").exists(), reason="needs ../shared/datasets")
def test_isbi_layout_reads_as_binary_membrane_data():
    d = load_segmentation(SHARED / "isbi2012-membrane.zip", test_fraction=0.2)
    assert d.channels == 1 and d.mask_mode == "binary"
    assert len(d.train) + len(d.test) == 30              # test/image has no labels: not used
    fg = torch.cat([m.flatten() for m in d.train.masks]).float().mean()
    assert 0.6 < float(fg) < 0.9                         # cell interior (255) is the larger class


# ----------------------------------------------------------------------------- one-line errors


def _one_line(exc) -> str:
    msg = str(exc.value)
    assert "\n" not in msg
    return msg


def test_size_mismatch_names_the_mask(tmp_path):
    rng = np.random.default_rng(3)
    write_pairs(tmp_path, {"a": class_mask(rng), "b": class_mask(rng)}, rng)
    save(class_mask(rng, 30, 30), tmp_path / "masks" / "b.png")
    with pytest.raises(DataError) as e:
        load_segmentation(tmp_path, test_fraction=0)
    msg = _one_line(e)
    assert "masks/b.png" in msg and "30x30" in msg and "52x40" in msg


def test_unknown_colour_names_file_and_colour(tmp_path):
    rng = np.random.default_rng(4)
    lut = np.array(COLOURS, np.uint8)
    m = lut[class_mask(rng)]
    m[5, 5] = (0, 255, 0)
    write_pairs(tmp_path / "d", {"a": lut[class_mask(rng)], "bad": m}, rng)
    csv = tmp_path / "classes.csv"
    csv.write_text("background,0,0,0\nscratch,200,30,30\ndent,30,60,220\n")
    with pytest.raises(DataError) as e:
        load_segmentation(tmp_path / "d", classes=str(csv), test_fraction=0)
    msg = _one_line(e)
    assert "masks/bad.png" in msg and "(0, 255, 0)" in msg and "not in the class table" in msg
    # a colour mask without a table is also one line
    with pytest.raises(DataError) as e:
        load_segmentation(tmp_path / "d", test_fraction=0)
    assert "--classes" in _one_line(e)


def test_value_outside_declared_classes(tmp_path):
    rng = np.random.default_rng(5)
    write_pairs(tmp_path, {"a": class_mask(rng, k=3)}, rng)
    with pytest.raises(DataError) as e:
        load_segmentation(tmp_path, num_classes=2, test_fraction=0)
    msg = _one_line(e)
    assert "masks/a.png" in msg and "mask value 2 outside the 2 declared classes" in msg


def test_missing_mask_is_an_error_or_a_counted_skip(tmp_path):
    rng = np.random.default_rng(6)
    write_pairs(tmp_path, {"a": class_mask(rng), "b": class_mask(rng), "c": class_mask(rng)}, rng)
    (tmp_path / "masks" / "b.png").unlink()
    with pytest.raises(DataError) as e:
        load_segmentation(tmp_path, test_fraction=0)
    msg = _one_line(e)
    assert "images/b.jpg" in msg and "--skip-unmatched" in msg
    d = load_segmentation(tmp_path, test_fraction=0, skip_unmatched=True)
    assert len(d.train) == 2 and d.skipped == {"train": 1}


def test_no_layout_is_one_line(tmp_path):
    save(photo(np.random.default_rng(0), 10, 10), tmp_path / "x" / "a.jpg")
    with pytest.raises(DataError) as e:
        load_segmentation(tmp_path, test_fraction=0)
    assert "images/ and masks/" in _one_line(e)


# ----------------------------------------------------------------------------- augmentation


def test_geometry_moves_image_and_mask_together():
    """Image = mask value / 2 per pixel, so after joint augmentation the mask must still be
    recoverable from the image: exactly for flips/rot90, and on all but edge pixels for elastic."""
    g = torch.Generator().manual_seed(0)
    rng = np.random.default_rng(7)
    y = torch.from_numpy(np.stack([class_mask(rng, 64, 64) for _ in range(6)])).long()
    x = (y.float() / 2)[:, None].repeat(1, 3, 1, 1)
    aug = Augmentation(elastic=0, brightness=0, contrast=0)
    xa, ya, _ = augment_pair(x, y, None, aug, g)
    assert torch.equal((xa[:, 0] * 2).round().long(), ya)
    assert not torch.equal(ya, y)                       # something actually moved
    aug = Augmentation(flip=False, rotate=False, elastic=6, elastic_p=1.0, brightness=0, contrast=0)
    w = torch.rand(6, 64, 64)
    xa, ya, wa = augment_pair(x, y, w, aug, g)
    agree = ((xa[:, 0] * 2).round().long() == ya).float().mean()
    assert agree > 0.95 and not torch.equal(ya, y)
    assert set(ya.unique().tolist()) <= {0, 1, 2}         # nearest: no invented class values
    assert wa.shape == ya.shape


def test_crop_batches_are_reproducible_and_pad_small_images():
    from lensforge.data.segdata import SegSplit

    rng = np.random.default_rng(8)
    masks = [torch.from_numpy(class_mask(rng, 40, 52)), torch.from_numpy(class_mask(rng, 100, 90))]
    imgs = [torch.from_numpy(photo(rng, *m.shape)).permute(2, 0, 1).contiguous() for m in masks]
    split = SegSplit(imgs, masks, ["a", "b"])
    b = CropBatches(split, 3, 64, Augmentation(), seed=5)
    (x1, (y1, _)), (x2, (y2, _)) = next(b.epoch(1, 0)), next(b.epoch(1, 0))
    assert x1.shape == (3, 3, 64, 64) and torch.equal(x1, x2) and torch.equal(y1, y2)
    assert len(b) == max(1, round((40 * 52 + 100 * 90) / (64 * 64 * 3)))


def test_border_weight_map_peaks_in_gaps_between_touching_objects():
    m = np.zeros((40, 60), np.uint8)
    m[5:35, 5:28] = 1
    m[5:35, 30:55] = 1          # 2-px gap at columns 28-29
    w = border_weight_map(m, w0=10, sigma=5)
    assert np.all(w[m > 0] == 1.0)
    gap = w[20, 28]
    assert gap > 1 + 10 * np.exp(-(1 + 2) ** 2 / 50) - 0.5     # d1 ~ 1, d2 ~ 2
    assert w[20, 2] < gap - 3                                    # outside edge: only one object near
    assert w[38, 1] < 2


def test_default_colours_binary_and_voc():
    assert default_colours(2) == [(0, 0, 0), (255, 255, 255)]
    assert default_colours(3)[1:] == [(128, 0, 0), (0, 128, 0)]  # VOC palette
