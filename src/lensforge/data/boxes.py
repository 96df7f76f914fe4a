"""Object-detection annotations: Pascal VOC, YOLO txt (+ data.yaml) and COCO json, folder or zip.

All three formats read into the same `DetectionData`: class names, and per split a list of
`DetSample` (image file, its size, boxes as float32 `xyxy` pixel corners, integer labels). Boxes
use pixel-edge coordinates (0..width), which is what VOC's integer corners, YOLO's normalised
centres and COCO's `[x, y, w, h]` all map to without an off-by-one, so the three formats of one
data set read to identical boxes (tests/test_detect_data.py checks this on BCCD).

Annotations are sanitised once, here: boxes sticking out of the image are clipped, inverted
boxes (x2 < x1) and boxes under `MIN_SIDE` pixels after clipping are dropped, and the counts
go into one summary line (BCCD: 2 zero-size boxes dropped). A class the data set does not
name, or a malformed line, is one `DataError` naming the file and line; an annotation whose
image is missing, or whose image cannot be decoded, is a counted skip.
"""
from __future__ import annotations

import json
import os
import re
import xml.etree.ElementTree as ET
import zipfile
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Callable

import numpy as np

from ..errors import DataError, UsageError
from .imageio import IMAGE_EXTENSIONS, image_size

#: Boxes narrower or shorter than this (pixels, after clipping) carry no learnable object.
MIN_SIDE = 1.0

SPLIT_ALIASES = {"train": "train", "val": "val", "valid": "val", "validation": "val", "test": "test",
                 "trainval": "trainval"}


@dataclass
class DetSample:
    """One image and its boxes; `read()` returns the encoded file bytes."""

    name: str  # path relative to the data set root (posix); COCO `file_name` on export
    read: Callable[[], bytes]
    width: int
    height: int
    boxes: np.ndarray  # (N, 4) float32 x1, y1, x2, y2 in pixels
    labels: np.ndarray  # (N,) int64 class indices


@dataclass
class Sanity:
    """Counts of what sanitising changed; `line()` is the one summary line shown to the user."""

    boxes: int = 0
    images: int = 0
    clipped: int = 0
    dropped: Counter = field(default_factory=Counter)
    skipped: Counter = field(default_factory=Counter)
    examples: dict = field(default_factory=dict)

    def line(self, source: str) -> str:
        text = f"{source}: {self.images} images, {self.boxes} boxes kept"
        parts = []
        if self.clipped:
            parts.append(f"{self.clipped} clipped to the image")
        parts += [f"{n} {why} dropped" for why, n in sorted(self.dropped.items())]
        parts += [f"{n} skipped ({why}, e.g. {self.examples.get(why, '?')})" for why, n in sorted(self.skipped.items())]
        return text + ("; " + ", ".join(parts) if parts else "; all boxes valid")

    def skip(self, why: str, example: str) -> None:
        self.skipped[why] += 1
        self.examples.setdefault(why, example)


@dataclass
class DetectionData:
    classes: list[str]
    splits: dict[str, list[DetSample]]
    format: str
    sanity: Sanity

    def summary(self, source: str | os.PathLike) -> str:
        return self.sanity.line(str(source))


def sanitise(boxes: np.ndarray, labels: np.ndarray, width: int, height: int, sanity: Sanity) -> tuple[np.ndarray, np.ndarray]:
    """Clip boxes to the image, drop inverted and degenerate ones; count both in `sanity`."""
    boxes = np.asarray(boxes, np.float32).reshape(-1, 4)
    labels = np.asarray(labels, np.int64).reshape(-1)
    if len(boxes) == 0:
        return boxes, labels
    finite = np.isfinite(boxes).all(1)
    inverted = finite & ((boxes[:, 2] < boxes[:, 0]) | (boxes[:, 3] < boxes[:, 1]))
    clipped = boxes.copy()
    clipped[:, [0, 2]] = clipped[:, [0, 2]].clip(0, width)
    clipped[:, [1, 3]] = clipped[:, [1, 3]].clip(0, height)
    changed = finite & ~inverted & (np.abs(clipped - boxes) > 1e-3).any(1)
    w, h = clipped[:, 2] - clipped[:, 0], clipped[:, 3] - clipped[:, 1]
    tiny = finite & ~inverted & ((w < MIN_SIDE) | (h < MIN_SIDE))
    keep = finite & ~inverted & ~tiny
    sanity.dropped["non-finite"] += int((~finite).sum())
    sanity.dropped["inverted"] += int(inverted.sum())
    sanity.dropped[f"zero-size/under {MIN_SIDE:g} px"] += int(tiny.sum())
    sanity.dropped = +sanity.dropped  # forget zero counts
    sanity.clipped += int((changed & keep).sum())
    return clipped[keep], labels[keep]


# --------------------------------------------------------------------------- sources


class _Files:
    """Uniform read access to a folder or a zip: posix names relative to the root."""

    def __init__(self, root: Path):
        self.root = root
        if root.is_dir():
            self.names = sorted(p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file()
                                and not any(s.startswith(".") for s in p.relative_to(root).parts))
            self._zip = None
        elif root.is_file() and root.suffix.lower() == ".zip":
            try:
                self._zip = zipfile.ZipFile(root)
            except (zipfile.BadZipFile, OSError) as e:
                raise DataError(f"{root}: not a readable zip file ({e})") from None
            self.names = sorted(n for n in self._zip.namelist() if not n.endswith("/")
                                and not any(p.startswith((".", "__MACOSX")) for p in PurePosixPath(n).parts))
        elif not root.exists():
            raise UsageError(f"{root}: no such file or folder")
        else:
            raise DataError(f"{root}: not a folder or .zip of a detection data set")
        self.set = set(self.names)

    def read(self, name: str) -> bytes:
        try:
            return self._zip.read(name) if self._zip is not None else (self.root / name).read_bytes()
        except (KeyError, OSError, zipfile.BadZipFile) as e:
            raise DataError(f"{self.root}/{name}: cannot read ({e})") from None

    def reader(self, name: str) -> Callable[[], bytes]:
        return lambda: self.read(name)

    def text(self, name: str) -> str:
        try:
            return self.read(name).decode("utf-8-sig")
        except UnicodeDecodeError:
            raise DataError(f"{self.root}/{name}: not a UTF-8 text file") from None


def _is_image(name: str) -> bool:
    return PurePosixPath(name).suffix.lower() in IMAGE_EXTENSIONS


def load_detection(path: str | os.PathLike) -> DetectionData:
    """Read a detection data set, recognising its format from its files."""
    files = _Files(Path(path).expanduser())
    if any(re.search(r"(^|/)Annotations/[^/]+\.xml$", n) for n in files.names):
        data = _read_voc(files)
    elif any(PurePosixPath(n).suffix.lower() in (".yaml", ".yml") for n in files.names):
        data = _read_yolo(files)
    elif any(n.lower().endswith(".json") for n in files.names):
        data = _read_coco(files)
    else:
        raise DataError(f"{files.root}: no detection annotations found (expected Pascal VOC Annotations/*.xml, "
                        "a YOLO data.yaml with images/ and labels/, or COCO instances_*.json)")
    if not any(data.splits.values()):
        raise DataError(f"{files.root}: no annotated images found ({data.sanity.line(str(files.root))})")
    return data


# --------------------------------------------------------------------------- Pascal VOC


def _read_voc(files: _Files) -> DetectionData:
    xmls = [n for n in files.names if re.search(r"(^|/)Annotations/[^/]+\.xml$", n)]
    base = xmls[0][: xmls[0].rindex("Annotations/")]
    images = {PurePosixPath(n).stem: n for n in files.names if _is_image(n) and n.startswith(base)}
    sanity, parsed, names = Sanity(), {}, set()
    for x in xmls:
        stem = PurePosixPath(x).stem
        try:
            root = ET.fromstring(files.read(x))
        except ET.ParseError as e:
            raise DataError(f"{files.root}/{x}: not valid XML ({e})") from None
        objs = []
        for i, o in enumerate(root.iter("object")):
            try:
                name = o.findtext("name").strip()
                b = o.find("bndbox")
                v = [float(b.findtext(k)) for k in ("xmin", "ymin", "xmax", "ymax")]
            except (AttributeError, TypeError, ValueError):
                raise DataError(f"{files.root}/{x}: object {i + 1} lacks a name or a numeric bndbox") from None
            objs.append((name, v))
            names.add(name)
        size = root.find("size")
        wh = None
        if size is not None:
            try:
                wh = (int(float(size.findtext("width"))), int(float(size.findtext("height"))))
            except (TypeError, ValueError):
                wh = None
        parsed[stem] = (x, objs, wh)
    classes = sorted(names)
    index = {c: i for i, c in enumerate(classes)}
    split_files = {}
    for n in files.names:
        m = re.search(r"(^|/)ImageSets/Main/([A-Za-z]+)\.txt$", n)
        if m and m.group(2).lower() in SPLIT_ALIASES:
            split_files[SPLIT_ALIASES[m.group(2).lower()]] = files.text(n).split()
    if not split_files:
        split_files = {"train": sorted(parsed)}
    splits = {}
    for split, stems in split_files.items():
        # trainval repeats train + val: count its images once, unless it is the only training list
        overlapping = split == "trainval" and bool({"train", "val"} & set(split_files))
        samples = []
        for stem in stems:
            if stem not in parsed:
                sanity.skip("listed in ImageSets but no annotation", stem)
                continue
            x, objs, wh = parsed[stem]
            s = _make_sample(files, images.get(stem), x, wh, [index[o[0]] for o in objs],
                             [o[1] for o in objs], sanity, count=not overlapping)
            if s is not None:
                samples.append(s)
        splits[split] = samples
    return DetectionData(classes, splits, "voc", sanity)


def _make_sample(files: _Files, image: str | None, ann: str, wh, labels, boxes, sanity: Sanity, *, count=True,
                 normalised=False) -> DetSample | None:
    """Common tail of every reader: find the image, its size, sanitise boxes."""
    scratch = sanity if count else Sanity()
    if image is None or image not in files.set:
        scratch.skip("annotation without image", ann)
        return None
    if wh is None or normalised or min(wh) <= 0:
        try:
            w, h, _ = image_size(files.read(image), name=f"{files.root}/{image}")
        except DataError:
            scratch.skip("unreadable image", image)
            return None
        wh = (w, h)
    w, h = wh
    b = np.asarray(boxes, np.float32).reshape(-1, 4)
    if normalised and len(b):  # YOLO cx, cy, w, h in 0..1
        cx, cy, bw, bh = b[:, 0] * w, b[:, 1] * h, b[:, 2] * w, b[:, 3] * h
        b = np.stack([cx - bw / 2, cy - bh / 2, cx + bw / 2, cy + bh / 2], 1)
    b, lab = sanitise(b, labels, w, h, scratch)
    if count:
        sanity.images += 1
        sanity.boxes += len(b)
    return DetSample(image, files.reader(image), int(w), int(h), b, lab)


# --------------------------------------------------------------------------- YOLO txt


def _yaml_file(files: _Files) -> str:
    yamls = [n for n in files.names if PurePosixPath(n).suffix.lower() in (".yaml", ".yml")]
    yamls.sort(key=lambda n: (n.count("/"), PurePosixPath(n).name != "data.yaml", n))
    return yamls[0]


def _read_yolo(files: _Files) -> DetectionData:
    import yaml

    yname = _yaml_file(files)
    where = f"{files.root}/{yname}"
    try:
        cfg = yaml.safe_load(files.text(yname))
    except yaml.YAMLError as e:
        raise DataError(f"{where}: not valid YAML ({str(e).splitlines()[0]})") from None
    if not isinstance(cfg, dict) or "names" not in cfg:
        raise DataError(f"{where}: a YOLO data.yaml needs 'names' (the class names) and split folders")
    names = cfg["names"]
    if isinstance(names, dict):
        try:
            ids = sorted(int(k) for k in names)
        except ValueError:
            raise DataError(f"{where}: 'names' keys must be class numbers 0..n-1") from None
        if ids != list(range(len(ids))):
            raise DataError(f"{where}: 'names' keys must be 0..{len(ids) - 1} without gaps")
        names = [str(names[k] if k in names else names[str(k)]) for k in ids]
    elif isinstance(names, list):
        names = [str(n) for n in names]
    else:
        raise DataError(f"{where}: 'names' must be a list or a {{number: name}} mapping")
    # Ultralytics resolves split entries against `path` (itself relative to the yaml's folder here,
    # as there is no global datasets dir) and, failing that, retries a leading "../" dropped, which is
    # what makes Roboflow exports (`train: ../train/images` beside data.yaml) work.
    ydir = PurePosixPath(yname).parent
    root = _norm(ydir / str(cfg.get("path") or "."))
    sanity, splits = Sanity(), {}
    for key in ("train", "val", "test"):
        entries = cfg.get(key)
        if not entries:
            continue
        entries = entries if isinstance(entries, list) else [entries]
        imgs = []
        for e in entries:
            imgs += _yolo_split_images(files, root, str(e), where, key)
        samples = []
        for img in imgs:
            lab = _label_path(img)
            labels, boxes = _read_label_file(files, lab, len(names), names) if lab in files.set else ([], [])
            s = _make_sample(files, img, lab, None, labels, boxes, sanity, normalised=True)
            if s is not None:
                samples.append(s)
        splits[key] = samples
    if not splits:
        raise DataError(f"{where}: names no split (expected train:, val: and/or test: entries)")
    return DetectionData(names, splits, "yolo", sanity)


def _norm(p: PurePosixPath) -> str:
    """Collapse `a/../b` lexically (zip members have no filesystem to resolve against)."""
    out: list[str] = []
    for part in p.parts:
        if part == "..":
            if out:
                out.pop()
        elif part not in (".", ""):
            out.append(part)
    return "/".join(out)


def _yolo_split_images(files: _Files, root: str, entry: str, where: str, key: str) -> list[str]:
    tries = [_norm(PurePosixPath(root) / entry)]
    if entry.startswith("../"):
        tries.append(_norm(PurePosixPath(root) / entry[3:]))
    for t in tries:
        prefix = t + "/" if t else ""
        if t in files.set and t.endswith(".txt"):  # a list of image paths, relative to the list's folder
            base = PurePosixPath(t).parent
            out = []
            for line in files.text(t).splitlines():
                line = line.strip()
                if line:
                    out.append(_norm(PurePosixPath(root) / line) if line.startswith("./") else _norm(base / line))
            return out
        imgs = [n for n in files.names if n.startswith(prefix) and _is_image(n)]
        if imgs:
            return imgs
    raise DataError(f"{where}: {key}: '{entry}' is neither an image folder nor a list file in {files.root}")


def _label_path(img: str) -> str:
    """Ultralytics' rule: the last `/images/` becomes `/labels/`, the extension `.txt`."""
    p = "/" + img
    i = p.rfind("/images/")
    if i >= 0:
        p = p[:i] + "/labels/" + p[i + len("/images/"):]
    return str(PurePosixPath(p[1:]).with_suffix(".txt"))


def _read_label_file(files: _Files, lab: str, nc: int, names: list[str]) -> tuple[list[int], list[list[float]]]:
    labels, boxes = [], []
    for ln, line in enumerate(files.text(lab).splitlines(), 1):
        parts = line.split()
        if not parts:
            continue
        if len(parts) != 5:
            raise DataError(f"{files.root}/{lab} line {ln}: expected 'class cx cy w h', got {len(parts)} fields "
                            "(segmentation polygons are not supported)")
        try:
            c = float(parts[0])
            v = [float(p) for p in parts[1:]]
        except ValueError:
            raise DataError(f"{files.root}/{lab} line {ln}: not numbers: {line.strip()[:60]!r}") from None
        if c != int(c) or not 0 <= c < nc:
            raise DataError(f"{files.root}/{lab} line {ln}: class {parts[0]} does not exist "
                            f"(data.yaml names {nc}: 0..{nc - 1} = {', '.join(names[:8])}{'...' if nc > 8 else ''})")
        labels.append(int(c))
        boxes.append(v)
    return labels, boxes


# --------------------------------------------------------------------------- COCO json


def _read_coco(files: _Files) -> DetectionData:
    jsons = [n for n in files.names if n.lower().endswith(".json")]
    by_base: dict[str, list[str]] = {}
    for n in files.names:
        if _is_image(n):
            by_base.setdefault(PurePosixPath(n).name, []).append(n)
    sanity, splits, classes = Sanity(), {}, None
    for j in sorted(jsons):
        stem = PurePosixPath(j).stem.lower()
        split = next((SPLIT_ALIASES[a] for a in sorted(SPLIT_ALIASES, key=len, reverse=True)
                      if re.search(rf"(^|[_\-.]){a}(\d*)$", stem)), None)
        if split is None:
            split = "train" if len(jsons) == 1 else None
        if split is None:
            continue
        try:
            doc = json.loads(files.text(j))
        except json.JSONDecodeError as e:
            raise DataError(f"{files.root}/{j}: not valid JSON ({e})") from None
        if not isinstance(doc, dict) or not all(k in doc for k in ("images", "annotations", "categories")):
            continue  # some other json (a results file, a config): not an annotation file
        cats = sorted(doc["categories"], key=lambda c: c["id"])
        names = [str(c["name"]) for c in cats]
        if classes is None:
            classes = names
        elif names != classes:
            raise DataError(f"{files.root}/{j}: categories differ from another split's ({names} vs {classes})")
        cat_index = {c["id"]: i for i, c in enumerate(cats)}
        anns: dict = {}
        for a in doc["annotations"]:
            if a.get("category_id") not in cat_index:
                raise DataError(f"{files.root}/{j}: annotation {a.get('id')} names category_id "
                                f"{a.get('category_id')}, which is not in 'categories' ({sorted(cat_index)})")
            if a.get("iscrowd", 0):
                continue  # crowd regions are 'ignore' areas in COCO evaluation, not objects to learn
            anns.setdefault(a["image_id"], []).append(a)
        jdir = PurePosixPath(j).parent
        samples = []
        for im in doc["images"]:
            fname = str(im.get("file_name", ""))
            path = _find_image(files, by_base, fname, jdir, {split, stem.removeprefix("instances_")})
            a = anns.get(im["id"], [])
            boxes = [[x, y, x + w, y + h] for x, y, w, h in (b["bbox"] for b in a)]
            wh = (int(im["width"]), int(im["height"])) if "width" in im and "height" in im else None
            s = _make_sample(files, path, f"{j}: {fname}", wh, [cat_index[b["category_id"]] for b in a], boxes, sanity)
            if s is not None:
                samples.append(s)
        splits[split] = samples
    if classes is None:
        raise DataError(f"{files.root}: no COCO annotation json (with images, annotations, categories) found")
    return DetectionData(classes, splits, "coco", sanity)


def _find_image(files: _Files, by_base: dict, fname: str, jdir: PurePosixPath, split_names: set) -> str | None:
    """COCO's file_name is relative to an image folder the json does not name: try the split's
    usual folders (`train2017/`, `images/train/`, ...) beside the json's folder, then the json's
    folder and its parent, then a file of that name anywhere, preferring one under a folder named
    after the split (so `train/0.png` and `test/0.png` are not confused)."""
    root = jdir.parent
    bases = [b for s in sorted(split_names) for b in (root / s, root / "images" / s, jdir / s)]
    for base in bases + [jdir, root, root / "images", PurePosixPath(".")]:
        cand = _norm(base / fname)
        if cand in files.set:
            return cand
    hits = [n for n in by_base.get(PurePosixPath(fname).name, []) if n.endswith(fname)]
    if len(hits) > 1:
        hits = [n for n in hits if split_names & set(PurePosixPath(n).parts)]
    return hits[0] if len(hits) == 1 else None
