"""Decoding of arbitrary user images into plain uint8 arrays.

Users point lensforge at their own photos: phone JPEGs rotated by an EXIF tag, CMYK scans,
palette PNGs with transparency, 16-bit microscope TIFFs, half-uploaded files, text files with
an image extension. Every one of those must either become a sensible 8-bit array or a one-line
`DataError` naming the file; a PIL traceback or warning reaching the user would look like a
lensforge bug. Everything PIL-specific is therefore funnelled through `_pil_guard`.
"""
from __future__ import annotations

import contextlib
import io
import os
import re
import warnings
from pathlib import Path
from typing import IO, Iterator, Union

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from lensforge.errors import DataError

__all__ = ["IMAGE_EXTENSIONS", "MAX_PIXELS", "image_size", "read_image"]

#: Same as PIL's default `Image.MAX_IMAGE_PIXELS`, but owned here so that a library or user
#: changing PIL's global cannot silently disable the protection (and tests can lower it).
MAX_PIXELS = 89_478_485

#: File name extensions (lower case, with dot) that `read_image` can decode; used to pick
#: images out of folders that also hold notes, CSVs and thumbnails databases.
IMAGE_EXTENSIONS = frozenset(
    {".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp",
     ".pgm", ".ppm", ".pbm", ".pnm"}
)

# Only these PIL plugins may identify a file. Restricting them keeps exotic decoders (EPS runs
# Ghostscript, for one) away from untrusted files and makes "not an image file" mean the same
# thing as "extension not in IMAGE_EXTENSIONS". JPEG also covers MPO (multi-picture phone JPEGs).
_FORMATS = ("JPEG", "PNG", "BMP", "GIF", "TIFF", "WEBP", "PPM")
_FORMAT_NAMES = "JPEG, PNG, BMP, GIF, TIFF, WebP, PNM"

_SIXTEEN_BIT = ("I;16", "I;16L", "I;16B", "I;16N")
_ALPHA_MODES = ("LA", "La", "PA", "RGBA", "RGBa")

Source = Union[str, os.PathLike, bytes, bytearray, memoryview]


def read_image(path_or_bytes: Source, mode: str = "RGB", *, name: str | None = None) -> np.ndarray:
    """Decode an image file (or its bytes) the way a person looking at it would see it.

    Returns a fresh, writable uint8 array: HxW for mode "L", HxWx3 for mode "RGB". Orientation
    follows the EXIF tag, transparency is shown over white (how viewers display it), high bit
    depths are stretched over their actual range so a dim 12-bit sensor image is not black, and
    only the first frame of an animation or multi-page file is used. `name` labels errors when
    bytes are given (e.g. a member of a zip archive).
    """
    if mode not in ("L", "RGB"):
        raise ValueError(f"mode must be 'L' or 'RGB', not {mode!r}")
    label = _label(path_or_bytes, name)
    with _open_binary(path_or_bytes, label) as fp, _pil_guard(label):
        with Image.open(fp, formats=_FORMATS) as img:
            _check_pixels(img.size, label)
            img.load()  # decode now: truncation must surface here, not as garbage pixels later
            img = _upright(img)
            img = _to_l_or_rgb(img, label)
            if img.mode != mode:
                img = img.convert(mode)
            return np.array(img, dtype=np.uint8)


def image_size(path_or_bytes: Source, name: str | None = None) -> tuple[int, int, str]:
    """Return (width, height, PIL mode) reading only the header, to probe large folders cheaply.

    Width and height are swapped for EXIF orientations that rotate by 90 degrees, so they match
    the shape `read_image` will return. Decompression bombs are reported here already, so a
    dataset scan flags them before anything tries to decode them.
    """
    label = _label(path_or_bytes, name)
    with _open_binary(path_or_bytes, label) as fp, _pil_guard(label):
        with Image.open(fp, formats=_FORMATS) as img:
            _check_pixels(img.size, label)
            width, height = img.size
            if _exif_orientation(img) in (5, 6, 7, 8):
                width, height = height, width
            return width, height, img.mode


# --------------------------------------------------------------------------- sources & errors


def _label(source: Source, name: str | None) -> str:
    """The name users will recognise in an error message: theirs if given, else the path."""
    if name is not None:
        return str(name)
    if isinstance(source, (bytes, bytearray, memoryview)):
        return "<image bytes>"
    if isinstance(source, (str, os.PathLike)):
        return os.fspath(source)
    raise TypeError(f"expected a path or bytes, not {type(source).__name__}")


@contextlib.contextmanager
def _open_binary(source: Source, label: str) -> Iterator[IO[bytes]]:
    """Yield a binary stream, turning file-system problems into messages a user can act on."""
    if isinstance(source, (bytes, bytearray, memoryview)):
        if len(source) == 0:
            raise DataError(f"{label}: empty file")
        yield io.BytesIO(bytes(source))
        return
    path = Path(os.fspath(source))
    if path.is_dir():  # checked first: Windows reports directories as PermissionError
        raise DataError(f"{label}: is a directory, not an image file")
    try:
        fp = open(path, "rb")
    except FileNotFoundError:
        raise DataError(f"{label}: no such file") from None
    except PermissionError:
        raise DataError(f"{label}: permission denied") from None
    except OSError as exc:
        raise DataError(f"{label}: cannot read file ({exc.strerror or exc})") from None
    with fp:
        if os.fstat(fp.fileno()).st_size == 0:
            raise DataError(f"{label}: empty file")
        yield fp


@contextlib.contextmanager
def _pil_guard(label: str) -> Iterator[None]:
    """Translate every way PIL can fail on a hostile or broken file into one-line DataErrors.

    PIL's decoders raise a zoo of types (OSError, SyntaxError, EOFError, struct.error,
    ValueError, ...) on malformed input, so anything escaping PIL here counts as a bad file.
    Warnings are silenced: they would be noise on a user's terminal, and the one that matters,
    PIL's bomb warning, fires at the same size `_check_pixels` rejects (with a better message).
    """
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            yield
        except DataError:
            raise
        except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
            raise DataError(_bomb_message(label, str(exc))) from None
        except UnidentifiedImageError:
            raise DataError(_unidentified_message(label)) from None
        except MemoryError:
            raise DataError(f"{label}: not enough memory to decode this image") from None
        except Exception as exc:
            raise DataError(f"{label}: truncated or corrupt image file{_detail(exc)}") from exc


def _unidentified_message(label: str) -> str:
    """A ".jpg" PIL cannot identify is a damaged photo (or an HTML error page saved under that
    name); anything else is most likely a stray non-image file in the folder."""
    if Path(label).suffix.lower() in IMAGE_EXTENSIONS:
        return f"{label}: truncated or corrupt image file (unrecognised header)"
    return f"{label}: not an image file (supported formats: {_FORMAT_NAMES})"


def _detail(exc: BaseException) -> str:
    """PIL's own reason, squeezed onto the same line, because "decoder X not available" and
    "truncated" call for different fixes."""
    text = " ".join(str(exc).split())
    if not text:
        return ""
    return f" ({text[:120]}{'...' if len(text) > 120 else ''})"


def _check_pixels(size: tuple[int, int], label: str) -> None:
    """Refuse absurd sizes using the header alone, before a single pixel is decompressed."""
    width, height = size
    if width <= 0 or height <= 0:
        raise DataError(f"{label}: image has no pixels ({width}x{height})")
    limit = _pixel_limit()
    if width * height > limit:
        raise DataError(
            f"{label}: image too large ({width}x{height} pixels, limit {limit})"
            " - possible decompression bomb"
        )


def _pixel_limit() -> int:
    """MAX_PIXELS, or PIL's global limit if someone deliberately made that stricter."""
    pil_limit = Image.MAX_IMAGE_PIXELS
    return min(MAX_PIXELS, int(pil_limit)) if pil_limit else MAX_PIXELS


def _bomb_message(label: str, pil_message: str) -> str:
    """PIL rejects the worst bombs inside Image.open, before we see the size; recover the
    pixel count from its message to keep the same wording as `_check_pixels`."""
    match = re.search(r"\((\d+) pixels\)", pil_message)
    size = f"{match.group(1)} pixels" if match else "too many pixels"
    return (
        f"{label}: image too large ({size}, limit {_pixel_limit()})"
        " - possible decompression bomb"
    )


# --------------------------------------------------------------------------- pixel conversions


def _exif_orientation(img: Image.Image) -> int:
    """The EXIF orientation tag, or 1 when absent or unreadable: broken metadata should not
    make an otherwise fine photo unusable."""
    try:
        return int(img.getexif().get(0x0112, 1))
    except Exception:
        return 1


def _upright(img: Image.Image) -> Image.Image:
    """Apply the EXIF rotation that phone cameras store instead of rotating pixels."""
    if _exif_orientation(img) == 1:
        return img
    try:
        return ImageOps.exif_transpose(img)
    except Exception:
        return img


def _to_l_or_rgb(img: Image.Image, label: str) -> Image.Image:
    """Reduce any PIL mode to "L" or "RGB", the only modes models are fed."""
    if img.mode in _SIXTEEN_BIT or img.mode in ("I", "F"):
        return _stretch_to_l(img)
    if "transparency" in img.info and img.mode in ("1", "L", "P", "RGB"):
        img = img.convert("LA" if img.mode in ("1", "L") else "RGBA")
    if img.mode in _ALPHA_MODES:
        return _over_white(img)
    if img.mode in ("L", "RGB"):
        return img
    if img.mode == "1":
        return img.convert("L")
    try:
        return img.convert("RGB")  # P, CMYK, YCbCr, HSV, RGBX
    except ValueError:
        raise DataError(f"{label}: unsupported colour mode {img.mode}") from None


def _over_white(img: Image.Image) -> Image.Image:
    """Composite over white, as browsers and viewers show transparent images; a black
    background (PIL's plain convert) would turn dark-on-transparent logos into black squares."""
    base = "L" if img.mode in ("LA", "La") else "RGB"
    img = img.convert("LA" if base == "L" else "RGBA")  # un-premultiply La/RGBa, expand PA
    canvas = Image.new(base, img.size, 255 if base == "L" else (255, 255, 255))
    canvas.paste(img.convert(base), mask=img.getchannel("A"))
    return canvas


def _stretch_to_l(img: Image.Image) -> Image.Image:
    """Map 16/32-bit and float greyscale onto 0..255 by the range actually used.

    Scientific and medical images often use a few thousand levels of a 65535 range; clipping
    (PIL's convert) or dividing by 257 would show them as black.
    """
    values = np.asarray(img, dtype=np.float64)
    finite = values[np.isfinite(values)]
    if finite.size == 0:
        return Image.new("L", img.size, 0)
    lo, hi = float(finite.min()), float(finite.max())
    if hi > lo:
        scaled = (values - lo) * (255.0 / (hi - lo))
    else:
        scaled = np.full(values.shape, _flat_level(lo, img.mode))
    scaled = np.nan_to_num(scaled, nan=0.0, posinf=255.0, neginf=0.0)
    return Image.fromarray(np.clip(np.rint(scaled), 0, 255).astype(np.uint8))


def _flat_level(value: float, mode: str) -> float:
    """A constant image has no range to stretch; place it by its type's nominal range."""
    if mode == "F" and 0.0 <= value <= 1.0:
        return value * 255.0
    if mode == "F":
        return value
    return value * 255.0 / 65535.0
