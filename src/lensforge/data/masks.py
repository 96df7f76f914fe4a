"""Segmentation masks: reading every common mask format into class indices, and pairing masks with
their images.

Users bring masks in three encodings, and all of them become one (H, W) uint8 array of class
indices here:
 - class indices (0, 1, 2, ...) in a grey or palette PNG;
 - binary 0/255 masks, thresholded at half so anti-aliased edge values (1..254) fall on the
   nearer side;
 - colour-coded masks with a class-to-colour table, from `--classes classes.csv` (name,r,g,b per
   line) or from a VOC-style palette PNG (class i = palette entry i).
A palette ("P" mode) PNG is an index mask whatever its palette says: the indices are the classes.

Pairing: `images/` + `masks/` folders (also `image/`+`label/`, ISBI-2012's names) matched by file
stem, any extension on either side, optionally under `train/`, `val/`, `test/`, in a folder or a
`.zip`. Every problem is one `DataError` line naming the file.
"""
from __future__ import annotations

import csv
import io
import os
import warnings
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

import numpy as np
from PIL import Image

from ..errors import DataError
from .imageio import IMAGE_EXTENSIONS, MAX_PIXELS
from .sources import Source
from .sources import open_source as open_any_source

IMAGE_DIRS = ("images", "image", "imgs", "img")
MASK_DIRS = ("masks", "mask", "labels", "label", "annotations", "gt", "groundtruth")
SPLITS = {"train": "train", "training": "train", "val": "val", "valid": "val", "validation": "val", "test": "test"}
#: mask file stems may carry one of these after the image's stem (cat.jpg <-> cat_mask.png)
MASK_SUFFIXES = ("", "_mask", "-mask", "_label", "-label", "_gt")
#: colour masks saved as JPEG or resampled drift a few levels; a pixel matches a table colour within this
COLOUR_TOLERANCE = 12

MODES = ("auto", "index", "binary", "colour")


# ----------------------------------------------------------------------------- class tables

@dataclass
class ClassTable:
    """Class names in index order and (optionally) the RGB colour that encodes each in a mask."""

    names: list[str]
    colours: list[tuple[int, int, int]] | None = None

    def __len__(self) -> int:
        return len(self.names)

    def to_dict(self) -> dict:
        return {"names": list(self.names), "colours": [list(c) for c in self.colours] if self.colours else None}

    @classmethod
    def from_dict(cls, d: dict) -> "ClassTable":
        cols = d.get("colours")
        return cls(list(d["names"]), [tuple(int(v) for v in c) for c in cols] if cols else None)


def default_colours(n: int) -> list[tuple[int, int, int]]:
    """The Pascal VOC palette (bit-interleaved class index), so masks look the way users know them."""
    out = []
    for i in range(n):
        r = g = b = 0
        c = i
        for j in range(8):
            r |= ((c >> 0) & 1) << (7 - j)
            g |= ((c >> 1) & 1) << (7 - j)
            b |= ((c >> 2) & 1) << (7 - j)
            c >>= 3
        out.append((r, g, b))
    if n == 2:  # binary: black background, white foreground reads better than VOC's dark red
        out = [(0, 0, 0), (255, 255, 255)]
    return out


def read_class_table(path: str | os.PathLike) -> ClassTable:
    """A `classes.csv` (lines `name,r,g,b`, optional header, optional leading index column) or a
    palette PNG whose palette entries are the class colours (VOC style)."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: no such classes file")
    if path.suffix.lower() in IMAGE_EXTENSIONS:
        return _palette_table(path)
    try:
        text = path.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as e:
        raise DataError(f"{path}: cannot read classes table ({e})") from None
    names, colours = [], []
    for lineno, row in enumerate(csv.reader(io.StringIO(text)), 1):
        row = [c.strip() for c in row if c.strip() != ""]
        if not row or row[0].startswith("#"):
            continue
        if len(row) == 5 and row[0].isdigit():       # index,name,r,g,b
            if int(row[0]) != len(names):
                raise DataError(f"{path}:{lineno}: class index {row[0]} out of order (expected {len(names)})")
            row = row[1:]
        if len(row) != 4:
            raise DataError(f"{path}:{lineno}: expected 'name,r,g,b', got {','.join(row)!r}")
        try:
            rgb = tuple(int(v) for v in row[1:])
        except ValueError:
            if lineno == 1 and not names:   # a header line
                continue
            raise DataError(f"{path}:{lineno}: colour {','.join(row[1:])!r} is not three whole numbers") from None
        if not all(0 <= v <= 255 for v in rgb):
            raise DataError(f"{path}:{lineno}: colour {rgb} outside 0-255")
        if rgb in colours:
            raise DataError(f"{path}:{lineno}: colour {rgb} is already class '{names[colours.index(rgb)]}'")
        names.append(row[0])
        colours.append(rgb)
    if len(names) < 2:
        raise DataError(f"{path}: needs at least two classes (one line 'name,r,g,b' each)")
    return ClassTable(names, colours)


def _palette_table(path: Path) -> ClassTable:
    """VOC style: the PNG's palette gives the colours; classes are the indices it uses (0..max),
    leaving out 255, VOC's 'void' border index."""
    with _quiet():
        try:
            with Image.open(path) as img:
                if img.mode != "P":
                    raise DataError(f"{path}: a classes image must be a palette PNG (mode P), not mode {img.mode}")
                pal = img.getpalette()[:768]
                used = np.unique(np.asarray(img))
        except DataError:
            raise
        except Exception as e:  # noqa: BLE001 -- PIL's many failure types
            raise DataError(f"{path}: unreadable palette image ({type(e).__name__})") from None
    used = used[used != 255]
    n = int(used.max()) + 1 if used.size else 0
    if n < 2:
        raise DataError(f"{path}: palette image uses fewer than two class indices")
    pal = pal + [0] * (768 - len(pal))
    colours = [tuple(pal[3 * i:3 * i + 3]) for i in range(n)]
    return ClassTable([f"class{i}" for i in range(n)], colours)


# ----------------------------------------------------------------------------- decoding


class _quiet:
    def __enter__(self):
        self._w = warnings.catch_warnings()
        self._w.__enter__()
        warnings.simplefilter("ignore")

    def __exit__(self, *exc):
        self._w.__exit__(*exc)


def read_mask_raw(data: bytes, name: str) -> np.ndarray:
    """Undecoded mask values: (H,W) for palette/grey files (palette = indices), (H,W,3) for colour
    ones. 16-bit index masks keep their values (checked against the classes later)."""
    if not data:
        raise DataError(f"{name}: empty mask file")
    with _quiet():
        try:
            with Image.open(io.BytesIO(data)) as img:
                if img.size[0] * img.size[1] > MAX_PIXELS:
                    raise DataError(f"{name}: mask has {img.size[0] * img.size[1]} pixels, over the safety limit")
                img.load()
                mode = img.mode
                if mode == "P":
                    return np.asarray(img, dtype=np.uint8).copy()
                if mode in ("1", "L", "I", "I;16", "I;16L", "I;16B", "I;16N", "F"):
                    arr = np.asarray(img.convert("I") if mode == "1" else img)
                    arr = arr.astype(np.int64) * (255 if mode == "1" else 1)
                    return arr
                if mode in ("LA", "La"):
                    return np.asarray(img.getchannel(0)).astype(np.int64)
                arr = np.asarray(img.convert("RGB"), dtype=np.uint8)
        except DataError:
            raise
        except Exception as e:  # noqa: BLE001 -- PIL raises many types on broken files
            raise DataError(f"{name}: unreadable mask file ({type(e).__name__}: {str(e)[:100]})") from None
    if (arr[..., 0] == arr[..., 1]).all() and (arr[..., 1] == arr[..., 2]).all():
        return arr[..., 0].astype(np.int64)        # grey saved as RGB
    return arr


def decode_mask(raw: np.ndarray, mode: str, classes: ClassTable, name: str) -> np.ndarray:
    """Raw mask values -> (H,W) uint8 class indices under `mode` ('index', 'binary', 'colour')."""
    k = len(classes)
    if raw.ndim == 3:
        if not classes.colours:
            raise DataError(f"{name}: colour mask, but no class colours are known (give --classes classes.csv "
                            f"or a palette PNG)")
        return _decode_colour(raw, classes, name)
    if mode == "binary":
        if raw.min() < 0 or raw.max() > 255:
            raise DataError(f"{name}: mask value {int(raw.max())} outside 0-255 for a binary mask")
        return (raw >= 128).astype(np.uint8)
    bad = (raw < 0) | (raw >= k)
    if bad.any():
        v = int(raw[bad].flat[0])
        names = ", ".join(f"{i}={n}" for i, n in enumerate(classes.names[:6])) + (" ..." if k > 6 else "")
        raise DataError(f"{name}: mask value {v} outside the {k} declared classes ({names})")
    return raw.astype(np.uint8)


def _decode_colour(raw: np.ndarray, classes: ClassTable, name: str) -> np.ndarray:
    table = np.asarray(classes.colours, dtype=np.int32)                   # (K,3)
    flat = raw.reshape(-1, 3).astype(np.int32)
    # unique colours first: a mask has a handful, so matching them is cheap even for 12 MP images
    colours, inverse = np.unique(flat, axis=0, return_inverse=True)
    dist = np.abs(colours[:, None, :] - table[None, :, :]).max(-1)        # (U,K) Chebyshev distance
    best = dist.argmin(1)
    far = dist[np.arange(len(colours)), best] > COLOUR_TOLERANCE
    if far.any():
        c = tuple(int(v) for v in colours[far][0])
        raise DataError(f"{name}: colour {c} is not in the class table ({len(classes)} colours; "
                        f"{int(far.sum())} unknown colour(s) in this mask)")
    return best[inverse.reshape(-1)].reshape(raw.shape[:2]).astype(np.uint8)


def infer_mode(raws: list[np.ndarray], classes: ClassTable | None, num_classes: int | None) -> str:
    """Pick the encoding from the masks themselves: colour if any mask has colour, else binary when
    the values reach into the upper half of 0-255 and at most two classes are declared (0/255 masks,
    with anti-aliased edges), else class indices."""
    if any(r.ndim == 3 for r in raws):
        return "colour"
    top = max(int(r.max()) for r in raws) if raws else 0
    declared = len(classes) if classes is not None else num_classes
    if top >= 128 and (declared is None or declared == 2):
        return "binary"
    return "index"


def encode_colour(mask: np.ndarray, colours: list[tuple[int, int, int]]) -> np.ndarray:
    """(H,W) class indices -> (H,W,3) uint8 colour view."""
    lut = np.zeros((256, 3), np.uint8)
    lut[:len(colours)] = np.asarray(colours, np.uint8)
    return lut[mask]


# ----------------------------------------------------------------------------- pairing


def open_source(root: str | os.PathLike) -> Source:
    return open_any_source(root, what="images and masks")


@dataclass
class Pairs:
    """(image name, mask name) per split; `unmatched` lists images that have no mask."""

    splits: dict[str, list[tuple[str, str]]] = field(default_factory=dict)
    unmatched: dict[str, list[str]] = field(default_factory=dict)
    unlabelled_splits: list[str] = field(default_factory=list)


def _role(part: str) -> str | None:
    p = part.lower()
    if p in IMAGE_DIRS:
        return "image"
    if p in MASK_DIRS:
        return "mask"
    return None


def pair_files(source: Source, *, skip_unmatched: bool = False) -> Pairs:
    """Find `[split/]images|masks/...` folders anywhere under wrapper folders and match by stem.

    Files keep their sub-folder inside images/ (images/a/1.png <-> masks/a/1.png). A split that has
    images but no masks folder (ISBI-2012's unlabelled test/) is reported, not an error.
    """
    groups: dict[tuple[str, str], dict[str, dict[str, str]]] = {}
    for n in source.names:
        parts = PurePosixPath(n).parts
        idx = next((i for i, p in enumerate(parts[:-1]) if _role(p)), None)
        if idx is None:
            continue
        split = next((SPLITS[p.lower()] for p in reversed(parts[:idx]) if p.lower() in SPLITS), "train")
        prefix = "/".join(parts[:idx])
        key = (prefix, split)
        rel = PurePosixPath(*parts[idx + 1:])
        stem = str(rel.with_suffix(""))
        bucket = groups.setdefault(key, {"image": {}, "mask": {}})[_role(parts[idx])]
        if stem in bucket:
            raise DataError(f"{source.root}: {bucket[stem]} and {n} have the same name stem; "
                            f"keep one file per stem in {parts[idx]}/")
        bucket[stem] = n
    if not groups:
        raise DataError(f"{source.root}: no images/ and masks/ folders found (expected root/images/*.jpg with "
                        f"root/masks/*.png, optionally under train/ val/ test/)")
    pairs = Pairs()
    for (prefix, split), g in sorted(groups.items()):
        if not g["image"]:
            continue
        if not g["mask"]:
            pairs.unlabelled_splits.append(split)
            continue
        for stem, img in sorted(g["image"].items()):
            mask = next((g["mask"][stem + s] for s in MASK_SUFFIXES if stem + s in g["mask"]), None)
            if mask is None:
                if not skip_unmatched:
                    raise DataError(f"{img}: no mask named '{stem}.*' in the masks folder beside it; add one, "
                                    f"or pass --skip-unmatched to skip images without masks")
                pairs.unmatched.setdefault(split, []).append(img)
                continue
            pairs.splits.setdefault(split, []).append((img, mask))
    if not pairs.splits:
        raise DataError(f"{source.root}: no image has a matching mask")
    return pairs
