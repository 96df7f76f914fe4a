"""Provenance: every image or video that face swap alters says so, in its metadata and, on
request, visibly.

- PNG: a `tEXt` chunk `lensforge-provenance` (JSON) plus a human-readable `Comment` chunk.
- JPEG: a COM segment holding the human sentence and the same JSON.
- MP4/MOV/M4V: OpenCV's writer cannot set container metadata, but it writes the `moov` box last
  (after `mdat`), so a QuickTime `udta/©cmt` text atom (what FFmpeg reports as `comment`) is
  appended inside `moov` without moving any media data: only the `moov`/`udta` sizes change and
  every chunk offset stays valid. Other containers, or an MP4 laid out differently, get a
  sidecar `<video>.provenance.json` instead; `tag_video` says which it did.
- `stamp_label` draws a visible "SYNTHETIC" mark (`--label`).

Metadata is easily stripped by re-encoding; it is a courtesy to viewers, not a watermark.
"""
from __future__ import annotations

import io
import json
import os
import struct
from pathlib import Path

import cv2
import numpy as np
from PIL import Image, PngImagePlugin

from ..errors import DataError
from ..fileio import atomic_open, write_bytes, write_json

__all__ = ["KEY", "SENTENCE", "provenance_record", "encode_image", "write_image", "read_provenance",
           "tag_video", "stamp_label", "IMAGE_FORMATS"]

KEY = "lensforge-provenance"
SENTENCE = "Synthetic media: faces altered by lensforge faceswap."
IMAGE_FORMATS = {".png": "PNG", ".jpg": "JPEG", ".jpeg": "JPEG"}
_MP4_LIKE = {".mp4", ".m4v", ".mov"}


def provenance_record(**details) -> dict:
    """The JSON stored in every output: who altered it and how (direction, weights, ...)."""
    from .. import __version__ as version  # noqa: PLC0415 - keep import light at module load

    return {"altered_by": "lensforge faceswap", "synthetic": True, "lensforge_version": version,
            "note": SENTENCE, **details}


def encode_image(rgb: np.ndarray, fmt: str, record: dict, quality: int = 95) -> bytes:
    """PNG or JPEG bytes of an RGB (or grey) uint8 image carrying the provenance record."""
    img = Image.fromarray(np.ascontiguousarray(rgb))
    buf = io.BytesIO()
    text = json.dumps(record, sort_keys=True)
    if fmt == "PNG":
        info = PngImagePlugin.PngInfo()
        info.add_text("Comment", SENTENCE)
        info.add_text(KEY, text)
        info.add_text("Software", "lensforge faceswap")
        img.save(buf, format="PNG", pnginfo=info)
    elif fmt == "JPEG":
        # 4:4:4 chroma keeps the swapped face's colour edges sharp; q95 ~ 1/4 the PNG size.
        img.save(buf, format="JPEG", quality=quality, subsampling=0,
                 comment=f"{SENTENCE} {KEY}={text}".encode())
    else:
        raise ValueError(f"provenance tags are written for PNG and JPEG, not {fmt}")
    return buf.getvalue()


def write_image(path: str | os.PathLike, rgb: np.ndarray, record: dict) -> Path:
    """Write atomically as PNG or JPEG (by extension) with the provenance tag."""
    path = Path(path)
    fmt = IMAGE_FORMATS.get(path.suffix.lower())
    if fmt is None:
        raise ValueError(f"{path}: output images are .png or .jpg")
    write_bytes(path, encode_image(rgb, fmt, record))
    return path


def read_provenance(path: str | os.PathLike) -> dict | None:
    """The provenance record of an image or video written by lensforge, else None."""
    path = Path(path)
    ext = path.suffix.lower()
    if ext in _MP4_LIKE:
        text = _read_mp4_comment(path)
        if text is not None and KEY + "=" in text:
            return json.loads(text.split(KEY + "=", 1)[1])
    if ext in IMAGE_FORMATS:
        try:
            with Image.open(path) as img:
                if KEY in img.info:  # PNG text chunk
                    return json.loads(img.info[KEY])
                comment = img.info.get("comment", b"")
        except OSError as e:
            raise DataError(f"{path}: cannot read ({e})") from None
        if isinstance(comment, bytes):
            comment = comment.decode("utf-8", "replace")
        if KEY + "=" in comment:
            return json.loads(comment.split(KEY + "=", 1)[1])
    sidecar = _sidecar(path)
    if sidecar.is_file():
        return json.loads(sidecar.read_text())
    return None


def tag_video(path: str | os.PathLike, record: dict) -> str:
    """Tag a finished video: "container" if the record went into its metadata, else "sidecar"."""
    path = Path(path)
    text = f"{SENTENCE} {KEY}={json.dumps(record, sort_keys=True)}"
    if path.suffix.lower() in _MP4_LIKE and _append_mp4_comment(path, text):
        return "container"
    write_json(_sidecar(path), record)
    return "sidecar"


def stamp_label(rgb: np.ndarray, text: str = "SYNTHETIC") -> np.ndarray:
    """A copy with a visible white-on-black `text` mark in the bottom-left corner, sized to
    stay legible (about 1/20 of the shorter side high, at least 8 px)."""
    out = np.ascontiguousarray(rgb).copy()
    h, w = out.shape[:2]
    height = max(8, min(h, w) // 20)
    font = cv2.FONT_HERSHEY_SIMPLEX
    scale = cv2.getFontScaleFromHeight(font, height, 1)
    thick = max(1, height // 8)
    (tw, th), base = cv2.getTextSize(text, font, scale, thick)
    pad = max(2, height // 4)
    x0, y1 = pad, h - pad
    cv2.rectangle(out, (x0 - pad // 2, y1 - th - base - pad // 2), (min(w - 1, x0 + tw + pad // 2), y1),
                  (0, 0, 0) if out.ndim == 3 else 0, -1)
    cv2.putText(out, text, (x0, y1 - base), font, scale, (255, 255, 255) if out.ndim == 3 else 255,
                thick, cv2.LINE_AA)
    return out


# --------------------------------------------------------------------------- MP4 user data

def _sidecar(path: Path) -> Path:
    return path.with_name(path.name + ".provenance.json")


def _top_boxes(data: bytes) -> list[tuple[bytes, int, int]] | None:
    """(type, offset, size) of the top-level boxes, or None if any is 64-bit or malformed."""
    out, off = [], 0
    while off + 8 <= len(data):
        size, typ = struct.unpack(">I4s", data[off:off + 8])
        if size < 8:  # 1 = 64-bit size, 0 = to end of file: leave such files to the sidecar
            return None
        out.append((typ, off, size))
        off += size
    return out if off == len(data) else None


def _children(data: bytes, start: int, end: int) -> list[tuple[bytes, int, int]] | None:
    out, off = [], start
    while off + 8 <= end:
        size, typ = struct.unpack(">I4s", data[off:off + 8])
        if size < 8 or off + size > end:
            return None
        out.append((typ, off, size))
        off += size
    return out if off == end else None


def _comment_atom(text: str) -> bytes:
    # QuickTime user-data text: 16-bit length, 16-bit language code (0x55c4 = "und"), UTF-8 text.
    payload = text.encode("utf-8")
    return struct.pack(">I4sHH", 12 + len(payload), b"\xa9cmt", len(payload), 0x55C4) + payload


def _append_mp4_comment(path: Path, text: str) -> bool:
    data = path.read_bytes()
    boxes = _top_boxes(data)
    if not boxes or boxes[-1][0] != b"moov" or not any(t == b"mdat" for t, _, _ in boxes):
        return False
    _, moov_off, moov_size = boxes[-1]
    kids = _children(data, moov_off + 8, moov_off + moov_size)
    if kids is None:
        return False
    atom = _comment_atom(text)
    udta = [k for k in kids if k[0] == b"udta"]
    if udta and udta[-1][1] + udta[-1][2] == moov_off + moov_size:
        # udta is moov's last child: append the atom at the very end and grow udta to cover it.
        added = atom
        new = bytearray(data + added)
        struct.pack_into(">I", new, udta[-1][1], udta[-1][2] + len(added))
    elif udta:
        return False  # udta in the middle of moov: moving it is not worth the risk
    else:
        added = struct.pack(">I4s", 8 + len(atom), b"udta") + atom
        new = bytearray(data + added)
    struct.pack_into(">I", new, moov_off, moov_size + len(added))
    with atomic_open(path, "wb") as f:
        f.write(bytes(new))
    return True


def _read_mp4_comment(path: Path) -> str | None:
    data = path.read_bytes()
    boxes = _top_boxes(data)
    if not boxes:
        return None
    for typ, off, size in boxes:
        if typ != b"moov":
            continue
        for ktyp, koff, ksize in _children(data, off + 8, off + size) or []:
            if ktyp != b"udta":
                continue
            for atyp, aoff, asize in _children(data, koff + 8, koff + ksize) or []:
                if atyp == b"\xa9cmt" and asize >= 12:
                    (n,) = struct.unpack(">H", data[aoff + 8:aoff + 10])
                    return data[aoff + 12:aoff + 12 + n].decode("utf-8", "replace")
    return None
