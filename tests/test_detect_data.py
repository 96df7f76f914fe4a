"""Detection data: VOC, YOLO txt and COCO json read to the same boxes; bad annotations fail in one line."""
from __future__ import annotations

import io
import json
import zipfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from conftest import SHARED
from lensforge.data.boxes import load_detection, sanitise, Sanity
from lensforge.errors import DataError, UsageError

BCCD = SHARED / "bccd-voc.zip"
needs_bccd = pytest.mark.skipif(not BCCD.exists(), reason="shared BCCD data absent")


def to_yolo(data, root: Path, splits=("train", "test")) -> Path:
    """Write a DetectionData as a Ultralytics/Roboflow-style YOLO folder (data.yaml beside split folders)."""
    import yaml
    for split in splits:
        for s in data.splits[split]:
            name = Path(s.name).name
            (root / split / "images").mkdir(parents=True, exist_ok=True)
            (root / split / "labels").mkdir(parents=True, exist_ok=True)
            (root / split / "images" / name).write_bytes(s.read())
            b = s.boxes
            lines = [f"{c} {(x1 + x2) / 2 / s.width:.7f} {(y1 + y2) / 2 / s.height:.7f} "
                     f"{(x2 - x1) / s.width:.7f} {(y2 - y1) / s.height:.7f}" for c, (x1, y1, x2, y2) in zip(s.labels, b)]
            (root / split / "labels" / Path(name).with_suffix(".txt")).write_text("\n".join(lines))
    cfg = {"names": {i: n for i, n in enumerate(data.classes)}, "nc": len(data.classes)}
    cfg.update({k: f"../{k}/images" for k in splits})
    (root / "data.yaml").write_text(yaml.safe_dump(cfg))
    return root


def to_coco(data, root: Path, splits=("train", "test")) -> Path:
    (root / "annotations").mkdir(parents=True, exist_ok=True)
    aid = 1
    for split in splits:
        images, anns = [], []
        for i, s in enumerate(data.splits[split], 1):
            name = Path(s.name).name
            (root / split).mkdir(exist_ok=True)
            (root / split / name).write_bytes(s.read())
            images.append({"id": i, "file_name": name, "width": s.width, "height": s.height})
            for c, (x1, y1, x2, y2) in zip(s.labels, s.boxes.tolist()):
                anns.append({"id": aid, "image_id": i, "category_id": int(c) + 1, "bbox": [x1, y1, x2 - x1, y2 - y1],
                             "area": (x2 - x1) * (y2 - y1), "iscrowd": 0})
                aid += 1
        cats = [{"id": i + 1, "name": n} for i, n in enumerate(data.classes)]
        (root / "annotations" / f"instances_{split}.json").write_text(
            json.dumps({"images": images, "annotations": anns, "categories": cats}))
    return root


def subset(data, n=12):
    for k in list(data.splits):
        data.splits[k] = data.splits[k][:n]
    return data


def assert_same(a, b, split):
    sa = {Path(s.name).name: s for s in a.splits[split]}
    sb = {Path(s.name).name: s for s in b.splits[split]}
    assert sa.keys() == sb.keys() and len(sa) > 0
    for k in sa:
        assert (sa[k].width, sa[k].height) == (sb[k].width, sb[k].height)
        np.testing.assert_array_equal(sa[k].labels, sb[k].labels)
        np.testing.assert_allclose(sa[k].boxes, sb[k].boxes, atol=1e-3)


@needs_bccd
def test_bccd_voc_reads_with_one_summary_line():
    d = load_detection(BCCD)
    assert d.classes == ["Platelets", "RBC", "WBC"]
    assert {k: len(v) for k, v in d.splits.items()} == {"train": 205, "val": 87, "test": 72, "trainval": 292}
    # the README's two zero-size boxes (BloodImage_00338, _00343) are dropped and counted
    assert d.summary("bccd") == "bccd: 364 images, 4886 boxes kept; 2 zero-size/under 1 px dropped"
    s = next(s for s in d.splits["train"] + d.splits["val"] + d.splits["test"] if s.name.endswith("00338.jpg"))
    assert len(s.boxes) == 13 and (s.boxes[:, 2:] > s.boxes[:, :2]).all()


@needs_bccd
@pytest.mark.parametrize("fmt", ["yolo", "coco"])
@pytest.mark.parametrize("zipped", [False, True])
def test_bccd_converted_reads_to_identical_boxes(tmp_path, fmt, zipped):
    voc = subset(load_detection(BCCD))
    root = (to_yolo if fmt == "yolo" else to_coco)(voc, tmp_path / "ds")
    if zipped:
        z = tmp_path / "ds.zip"
        with zipfile.ZipFile(z, "w") as zf:
            for p in sorted(root.rglob("*")):
                if p.is_file():
                    zf.write(p, "wrapper/" + p.relative_to(root).as_posix())
        root = z
    other = load_detection(root)
    assert other.format == fmt and other.classes == voc.classes
    for split in ("train", "test"):
        assert_same(voc, other, split)


def _img(path: Path, w=64, h=48):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.zeros((h, w, 3), np.uint8)).save(path)


def _yolo(tmp_path, label_text, names="[a, b]"):
    _img(tmp_path / "images" / "train" / "x.png")
    _img(tmp_path / "images" / "train" / "bg.png")  # no label file: a background image
    (tmp_path / "labels" / "train").mkdir(parents=True)
    (tmp_path / "labels" / "train" / "x.txt").write_text(label_text)
    (tmp_path / "data.yaml").write_text(f"path: .\ntrain: images/train\nnames: {names}\n")
    return tmp_path


def test_yolo_background_and_sanitising(tmp_path):
    # one good box, one sticking out (clipped), one inverted (w<0 cannot be: use zero width), one zero-size
    d = load_detection(_yolo(tmp_path, "0 0.5 0.5 0.25 0.25\n1 0.95 0.5 0.2 0.2\n0 0.5 0.5 0 0.1\n"))
    samples = {Path(s.name).name: s for s in d.splits["train"]}
    assert len(samples["bg.png"].boxes) == 0
    x = samples["x.png"]
    np.testing.assert_allclose(x.boxes, [[24, 18, 40, 30], [54.4, 19.2, 64, 28.8]], atol=1e-3)
    assert d.summary("ds") == "ds: 2 images, 2 boxes kept; 1 clipped to the image, 1 zero-size/under 1 px dropped"


def test_sanitise_counts_inverted_boxes():
    s = Sanity()
    b, l = sanitise(np.array([[10, 10, 5, 20], [0, 0, 5, 5], [-3, 2, 8, 60]]), [0, 1, 2], 40, 30, s)
    assert l.tolist() == [1, 2] and b[1].tolist() == [0, 2, 8, 30]
    assert s.dropped == {"inverted": 1} and s.clipped == 1


@pytest.mark.parametrize("text,msg", [
    ("7 0.5 0.5 0.1 0.1\n", r"labels/train/x.txt line 1: class 7 does not exist \(data.yaml names 2: 0..1 = a, b\)"),
    ("0 0.5 0.5 0.1\n", r"labels/train/x.txt line 1: expected 'class cx cy w h', got 4 fields"),
    ("0 0.5 zz 0.1 0.1\n", r"labels/train/x.txt line 1: not numbers"),
])
def test_bad_yolo_labels_give_one_line(tmp_path, text, msg):
    with pytest.raises(DataError, match=msg) as e:
        load_detection(_yolo(tmp_path, text))
    assert "\n" not in str(e.value)


def test_coco_missing_image_is_counted_and_unknown_category_is_an_error(tmp_path):
    _img(tmp_path / "images" / "a.png")
    doc = {"images": [{"id": 1, "file_name": "a.png", "width": 64, "height": 48},
                      {"id": 2, "file_name": "gone.png", "width": 64, "height": 48}],
           "annotations": [{"id": 1, "image_id": 1, "category_id": 3, "bbox": [1, 2, 10, 10]},
                           {"id": 2, "image_id": 2, "category_id": 3, "bbox": [1, 2, 10, 10]}],
           "categories": [{"id": 3, "name": "cell"}]}
    (tmp_path / "annotations").mkdir()
    (tmp_path / "annotations" / "instances_train.json").write_text(json.dumps(doc))
    d = load_detection(tmp_path)
    assert [s.name for s in d.splits["train"]] == ["images/a.png"]
    assert d.splits["train"][0].boxes.tolist() == [[1, 2, 11, 12]]
    assert "1 skipped (annotation without image, e.g. annotations/instances_train.json: gone.png)" in d.summary("ds")
    doc["annotations"][0]["category_id"] = 9
    (tmp_path / "annotations" / "instances_train.json").write_text(json.dumps(doc))
    with pytest.raises(DataError, match=r"instances_train.json: annotation 1 names category_id 9, which is not in"):
        load_detection(tmp_path)


def test_voc_broken_xml_and_missing_folder(tmp_path):
    (tmp_path / "Annotations").mkdir()
    (tmp_path / "Annotations" / "a.xml").write_text("<annotation><object>")
    with pytest.raises(DataError, match=r"Annotations/a.xml: not valid XML"):
        load_detection(tmp_path)
    with pytest.raises(UsageError, match="no such file or folder"):
        load_detection(tmp_path / "nope")


def test_voc_corrupt_image_is_counted_skip(tmp_path):
    (tmp_path / "Annotations").mkdir()
    (tmp_path / "JPEGImages").mkdir()
    for stem in ("a", "b"):
        (tmp_path / "Annotations" / f"{stem}.xml").write_text(
            f"<annotation><filename>{stem}.jpg</filename><object><name>cell</name><bndbox><xmin>1</xmin>"
            "<ymin>2</ymin><xmax>9</xmax><ymax>12</ymax></bndbox></object></annotation>")
    _img(tmp_path / "JPEGImages" / "a.jpg")
    (tmp_path / "JPEGImages" / "b.jpg").write_bytes(b"not a jpeg at all")
    d = load_detection(tmp_path)
    assert [Path(s.name).name for s in d.splits["train"]] == ["a.jpg"]
    assert "1 skipped (unreadable image, e.g. JPEGImages/b.jpg)" in d.summary("ds")
