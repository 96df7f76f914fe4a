"""The single path from a decoded image to model input.

Training, evaluation and prediction all call `prepare` with the `PreprocessSpec` stored in the
checkpoint, so a model never sees differently prepared pixels at predict time than it saw in
training (the classic silent accuracy drop). The spec is kept as a plain dict inside
checkpoints so they load with `torch.load(weights_only=True)`.
"""
from __future__ import annotations

import numbers
import os
from dataclasses import dataclass
from typing import Any, Mapping

import numpy as np
from PIL import Image
from scipy import ndimage

from lensforge.data.imageio import read_image

__all__ = ["PreprocessSpec", "STYLES", "load_and_prepare", "prepare"]

#: "resize": squash the whole image to the model's size (natural images).
#: "digit": MNIST-style normalisation of a photographed or scanned handwritten digit.
STYLES = ("resize", "digit")

_MAX_SIDE = 8192  # far beyond any model input; larger values in a checkpoint mean corruption
_SPEC_KEYS = frozenset({"size", "channels", "style"})

# MNIST geometry: the digit's bounding box is scaled so its longer side fills 20 of 28 pixels,
# then the digit is placed so its centre of mass sits at pixel (14, 14), i.e. at size / 2.
_BOX_FRACTION = 20 / 28

# Digit-style tuning. Grey levels are 0..255 throughout.
_WORK_SIDE = 1024      # photos are analysed at most this large: speed, and JPEG noise averages out
_MIN_CONTRAST = 32.0   # ink must stand this far out of the paper, else the image counts as blank
_SPECK_FRACTION = 0.05  # ink blobs lighter than this share of the main stroke are dust or texture
_MIN_STROKE = 2.0      # thinner strokes (in output pixels) are thickened; MNIST pens are 2-3 px


@dataclass(frozen=True)
class PreprocessSpec:
    """How images are turned into input for one model; saved with its weights."""

    size: tuple[int, int]  # (height, width) the model expects
    channels: int          # 1 or 3
    style: str = "resize"  # one of STYLES

    def __post_init__(self) -> None:
        object.__setattr__(self, "size", _check_size(self.size))
        object.__setattr__(self, "channels", _check_channels(self.channels))
        if self.style not in STYLES:
            raise ValueError(f"preprocess style must be one of {STYLES}, not {self.style!r}")

    def to_dict(self) -> dict:
        """Plain built-in types only, so a checkpoint holding it passes weights_only loading."""
        return {"size": [self.size[0], self.size[1]], "channels": self.channels, "style": self.style}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "PreprocessSpec":
        """Rebuild a spec from a checkpoint, refusing anything we would have to guess about."""
        if not isinstance(d, Mapping):
            raise ValueError(f"preprocess spec must be a dict, not {type(d).__name__}")
        unknown = set(d) - _SPEC_KEYS
        if unknown:
            raise ValueError(f"preprocess spec has unknown keys: {sorted(map(str, unknown))}")
        missing = {"size", "channels"} - set(d)
        if missing:
            raise ValueError(f"preprocess spec lacks keys: {sorted(missing)}")
        style = d.get("style", "resize")
        if not isinstance(style, str):
            raise ValueError(f"preprocess style must be a string, not {style!r}")
        return cls(size=d["size"], channels=d["channels"], style=style)


def _is_int(value: Any) -> bool:
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def _check_size(size: Any) -> tuple[int, int]:
    if isinstance(size, (str, bytes)) or not hasattr(size, "__len__") or len(size) != 2:
        raise ValueError(f"preprocess size must be (height, width), not {size!r}")
    if not all(_is_int(v) and 1 <= v <= _MAX_SIDE for v in size):
        raise ValueError(f"preprocess size must be two integers in 1..{_MAX_SIDE}, not {size!r}")
    return int(size[0]), int(size[1])


def _check_channels(channels: Any) -> int:
    if not _is_int(channels) or channels not in (1, 3):
        raise ValueError(f"preprocess channels must be 1 or 3, not {channels!r}")
    return int(channels)


# --------------------------------------------------------------------------- entry points


def prepare(image: np.ndarray, spec: PreprocessSpec) -> np.ndarray:
    """Turn a decoded uint8 image (HxW, HxWx1 or HxWx3) into a uint8 (C, H, W) model input."""
    pixels = _as_pixels(image)
    if spec.style == "digit":
        grey = _digit(_to_grey(pixels), spec.size)
        planes = grey[None]
    else:
        planes = _resize(pixels, spec)
    if planes.shape[0] != spec.channels:
        planes = np.repeat(planes, spec.channels, axis=0)
    return np.ascontiguousarray(planes)


def load_and_prepare(
    path_or_bytes: str | os.PathLike | bytes, spec: PreprocessSpec, name: str | None = None
) -> np.ndarray:
    """Decode a file straight into model input, in the colour mode the spec needs."""
    mode = "L" if spec.channels == 1 or spec.style == "digit" else "RGB"
    return prepare(read_image(path_or_bytes, mode, name=name), spec)


def _as_pixels(image: np.ndarray) -> np.ndarray:
    """Accept only what read_image produces, so a float or BGR-ish array fails loudly here
    instead of being silently mis-scaled."""
    image = np.asarray(image)
    if image.dtype != np.uint8:
        raise ValueError(f"expected a uint8 image, got dtype {image.dtype}")
    if image.ndim == 3 and image.shape[2] == 1:
        image = image[:, :, 0]
    if image.ndim not in (2, 3) or (image.ndim == 3 and image.shape[2] != 3):
        raise ValueError(f"expected an HxW or HxWx3 image, got shape {image.shape}")
    if image.shape[0] == 0 or image.shape[1] == 0:
        raise ValueError(f"image has no pixels (shape {image.shape})")
    return image


def _to_grey(pixels: np.ndarray) -> np.ndarray:
    """PIL's luma conversion, identical to read_image(mode="L"), so both routes agree."""
    if pixels.ndim == 2:
        return pixels
    return np.asarray(Image.fromarray(pixels).convert("L"))


def _resize(pixels: np.ndarray, spec: PreprocessSpec) -> np.ndarray:
    """Plain whole-image resize; PIL's bilinear widens its kernel when shrinking (antialiased,
    like torchvision's default), and reducing_gap makes large photos cheap."""
    img = Image.fromarray(pixels).convert("L" if spec.channels == 1 else "RGB")
    height, width = spec.size
    if img.size != (width, height):
        img = img.resize((width, height), Image.Resampling.BILINEAR, reducing_gap=3.0)
    planes = np.asarray(img)
    return planes[None] if planes.ndim == 2 else planes.transpose(2, 0, 1)


# --------------------------------------------------------------------------- digit style


def _digit(grey: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Normalise a digit the way MNIST was built, so photos look like the training data.

    Steps: bright ink on black, paper texture removed, crop to the ink, scale the longer side
    to 20/28 of the canvas, centre by mass. An image without ink yields a black canvas.
    """
    blank = np.zeros(size, dtype=np.uint8)
    ink = _ink_map(_working_copy(grey))
    if ink is None:
        return blank
    ink = _drop_specks(ink)
    crop = _crop_to_ink(ink)
    if crop is None:
        return blank
    box = _box_size(size)
    crop = _thicken(crop, _scale_into(crop.shape, box))
    glyph = _resize_float(crop, _fitted_shape(crop.shape, box))
    return _paste_centred(glyph, size)


def _working_copy(grey: np.ndarray) -> np.ndarray:
    """Float copy, shrunk if huge: a 12-megapixel photo holds no more digit than 1024 px."""
    height, width = grey.shape
    longest = max(height, width)
    if longest <= _WORK_SIDE:
        return grey.astype(np.float32)
    scale = _WORK_SIDE / longest
    shape = (max(1, round(height * scale)), max(1, round(width * scale)))
    img = Image.fromarray(grey).resize(shape[::-1], Image.Resampling.BILINEAR, reducing_gap=2.0)
    return np.asarray(img, dtype=np.float32)


def _frame(grey: np.ndarray) -> np.ndarray:
    """The outer border pixels, where a photo shows paper rather than the digit."""
    height, width = grey.shape
    t = max(1, round(0.02 * min(height, width)))
    if 2 * t >= min(height, width):
        return grey.ravel()
    return np.concatenate(
        [grey[:t].ravel(), grey[-t:].ravel(), grey[t:-t, :t].ravel(), grey[t:-t, -t:].ravel()]
    )


def _ink_map(grey: np.ndarray) -> np.ndarray | None:
    """Bright-on-black ink intensities 0..255 with the paper at exactly 0, or None if blank.

    The paper level and its texture are measured on the border; everything within three
    (robust) standard deviations of the paper becomes 0, and the rest is stretched so typical
    ink is white. Anti-aliased stroke edges survive because the floor sits just above the
    paper, not at a hard mid-grey threshold.
    """
    grey = _flatten_light(grey)
    border = _frame(grey)
    paper = float(np.median(border))
    noise = 1.4826 * float(np.median(np.abs(border - paper)))
    if _ink_is_dark(grey, paper):
        grey, paper = 255.0 - grey, 255.0 - paper
    floor = paper + 3.0 * noise
    inky = grey[grey > floor + max(_MIN_CONTRAST / 2, 3.0 * noise)]
    if inky.size == 0:
        return None
    level = float(np.percentile(inky, 90))
    if level - paper < max(_MIN_CONTRAST, 6.0 * noise):
        return None
    return np.clip((grey - floor) * (255.0 / (level - floor)), 0.0, 255.0)


def _flatten_light(grey: np.ndarray) -> np.ndarray:
    """Even out the light across a photo of paper, so one paper level holds everywhere.

    A phone photo of a page is lit unevenly: a gradient from the window, a vignette. Measured on
    bench/digit_photos.py's renders, the border's spread under a 30-50% fall-off put the "paper"
    threshold above the ink and 26 of the first 64 photos came out blank. The light is modelled
    as a smooth quadratic surface fitted to the border (robustly: a second fit without the pixels
    the first one left far off, e.g. ink touching the edge); bright paper is divided by it (light
    scales ink and paper alike), dark paper has it subtracted (the quotient is unstable near 0).
    A flat page comes back unchanged up to the fit's rounding.
    """
    height, width = grey.shape
    t = max(1, round(0.02 * min(height, width)))
    if 2 * t >= min(height, width) or min(height, width) < 8:
        return grey
    ring = np.zeros(grey.shape, dtype=bool)
    ring[:t], ring[-t:], ring[:, :t], ring[:, -t:] = True, True, True, True
    ys, xs = np.nonzero(ring)
    values = grey[ring].astype(np.float64)

    def design(y: np.ndarray, x: np.ndarray) -> np.ndarray:
        v, u = 2.0 * y / max(height - 1, 1) - 1.0, 2.0 * x / max(width - 1, 1) - 1.0
        return np.stack([np.ones_like(u), u, v, u * u, v * v, u * v], axis=1)

    a = design(ys.astype(np.float64), xs.astype(np.float64))
    keep = np.ones(len(values), dtype=bool)
    for _ in range(2):
        coef, *_ = np.linalg.lstsq(a[keep], values[keep], rcond=None)
        resid = values - a @ coef
        spread = 1.4826 * float(np.median(np.abs(resid[keep]))) + 1.0
        keep = np.abs(resid) <= 3.0 * spread
        if keep.sum() < 6 * a.shape[1]:
            return grey
    v = (2.0 * np.arange(height) / max(height - 1, 1) - 1.0)[:, None]
    u = (2.0 * np.arange(width) / max(width - 1, 1) - 1.0)[None, :]
    c = coef.astype(np.float32)
    surface = c[0] + c[1] * u + c[2] * v + c[3] * u * u + c[4] * v * v + c[5] * u * v   # design(), broadcast
    level = float(np.median(values[keep]))
    if level > 64.0:
        flat = grey * (level / np.maximum(surface, 1.0))
    else:
        flat = grey - surface + level
    return np.clip(flat, 0.0, 255.0).astype(np.float32)


def _ink_is_dark(grey: np.ndarray, paper: float) -> bool:
    """Decide polarity by which side of the paper level the outliers lie on; fall back to
    "light paper means dark ink" when the digit is too small or faint to tell."""
    darkest, brightest = np.percentile(grey, [0.1, 99.9])
    dark, bright = paper - darkest, brightest - paper
    if max(dark, bright) >= _MIN_CONTRAST:
        if dark > 1.5 * bright:
            return True
        if bright > 1.5 * dark:
            return False
    return paper > 127


def _drop_specks(ink: np.ndarray) -> np.ndarray:
    """Remove dust and texture blobs so they cannot stretch the bounding box."""
    labels, count = ndimage.label(ink > 0, structure=np.ones((3, 3)))
    if count <= 1:
        return ink
    mass = ndimage.sum_labels(ink, labels, index=np.arange(1, count + 1))
    keep = np.concatenate([[False], mass >= _SPECK_FRACTION * mass.max()])
    return np.where(keep[labels], ink, 0.0)


def _crop_to_ink(ink: np.ndarray) -> np.ndarray | None:
    rows = np.flatnonzero(ink.any(axis=1))
    cols = np.flatnonzero(ink.any(axis=0))
    if rows.size == 0:
        return None
    return ink[rows[0] : rows[-1] + 1, cols[0] : cols[-1] + 1]


def _box_size(size: tuple[int, int]) -> tuple[int, int]:
    return max(1, round(size[0] * _BOX_FRACTION)), max(1, round(size[1] * _BOX_FRACTION))


def _scale_into(shape: tuple[int, int], box: tuple[int, int]) -> float:
    return min(box[0] / shape[0], box[1] / shape[1])


def _fitted_shape(shape: tuple[int, int], box: tuple[int, int]) -> tuple[int, int]:
    """Aspect-preserving size whose longer side fills the box (MNIST's 20x20 for 28x28)."""
    scale = _scale_into(shape, box)
    return (
        min(box[0], max(1, round(shape[0] * scale))),
        min(box[1], max(1, round(shape[1] * scale))),
    )


def _thicken(crop: np.ndarray, scale: float) -> np.ndarray:
    """Widen pen strokes that would shrink to hairlines: a ballpoint digit filling a photo
    becomes a faint 0.3 px line at 28x28, unlike anything a MNIST model was trained on."""
    if scale >= 0.75:
        return crop
    width = _stroke_width(crop)
    grow = int(np.ceil((_MIN_STROKE / scale - width) / 2))
    if width * scale >= 0.75 * _MIN_STROKE or grow <= 0:
        return crop
    padded = np.pad(crop, grow)
    return ndimage.maximum_filter(padded, size=2 * grow + 1)


def _stroke_width(ink: np.ndarray) -> float:
    """Mean stroke width as area / half the outline: a stroke of width w and length L has
    area w*L and about 2*L boundary pixels."""
    solid = ink >= 128
    area = int(solid.sum())
    if area == 0:
        return 1.0
    outline = int((solid & ~ndimage.binary_erosion(solid)).sum())
    return 2.0 * area / max(outline, 1)


def _resize_float(ink: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """Resize in float so faint edges are not lost to rounding.

    Shrinking averages areas (BOX): that is how MNIST's grey edges arose from pen coverage, and
    unlike Lanczos it leaves no ringing halo around strokes. The result is rescaled so the
    brightest stroke pixel is white again, as in MNIST, where averaging had dimmed it.
    """
    if ink.shape == shape:
        return ink.astype(np.float32)
    shrinking = shape[0] < ink.shape[0] or shape[1] < ink.shape[1]
    method = Image.Resampling.BOX if shrinking else Image.Resampling.BILINEAR
    img = Image.fromarray(ink.astype(np.float32)).resize(shape[::-1], method)
    glyph = np.clip(np.asarray(img, dtype=np.float32), 0.0, 255.0)
    peak = float(glyph.max())
    return glyph * (255.0 / peak) if peak > 0 else glyph


def _paste_centred(glyph: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Place the glyph so its centre of mass lands on the canvas centre (MNIST puts it at
    pixel 14 of 28), shifting it back inside if the mass is very lopsided."""
    height, width = size
    gh, gw = glyph.shape
    if not glyph.sum() > 0:
        return np.zeros(size, dtype=np.uint8)
    cy, cx = ndimage.center_of_mass(glyph)
    top = int(np.clip(np.floor(height / 2 - cy + 0.5), 0, height - gh))
    left = int(np.clip(np.floor(width / 2 - cx + 0.5), 0, width - gw))
    canvas = np.zeros(size, dtype=np.float32)
    canvas[top : top + gh, left : left + gw] = glyph
    return np.rint(canvas).astype(np.uint8)
