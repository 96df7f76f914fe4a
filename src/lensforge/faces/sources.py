"""What `extract` and `convert` read: image files and video files, on disk or inside a zip.

Inputs are expanded the way every apply verb expands them (`lensforge.tasks.apply.expand_inputs`
with `MEDIA_EXTENSIONS`); each becomes a `Source` (one still image or one video). Reading a
still yields one frame, a video yields every Nth frame. A file that cannot be
decoded becomes an error record naming it; it never stops the other files.
"""
from __future__ import annotations

import contextlib
import dataclasses
import tempfile
import zipfile
from pathlib import Path, PurePosixPath
from typing import Iterator

import numpy as np

from ..data.imageio import IMAGE_EXTENSIONS, read_image
from ..errors import DataError, UsageError
from .video import VIDEO_EXTENSIONS, VideoReader

#: What extract and convert pick out of folders and zips: images and videos.
MEDIA_EXTENSIONS = IMAGE_EXTENSIONS | VIDEO_EXTENSIONS

__all__ = ["Source", "Frame", "as_sources", "read_frames", "MEDIA_EXTENSIONS"]


@dataclasses.dataclass(frozen=True)
class Source:
    """One still image or one video: a path, or a member of a zip archive."""

    label: str  # what users see: "photos/a.jpg", "set.zip:faces/b.jpg"
    path: Path
    member: str | None = None
    kind: str = "image"  # "image" or "video"
    rel: str = ""  # path relative to the input it was found in (names output files)


@dataclasses.dataclass
class Frame:
    source: Source
    index: int | None  # frame number in a video, None for a still
    image: np.ndarray | None  # RGB uint8, None if unreadable
    error: str | None = None


def _kind(name: str) -> str:
    return "video" if PurePosixPath(name).suffix.lower() in VIDEO_EXTENSIONS else "image"


def as_sources(files) -> list[Source]:
    """Sources from input files as `lensforge.tasks.apply.expand_inputs` lists them (objects with
    `name`, `path` and `member`: a file, or a member of a zip); videos are told by extension,
    anything else is read as an image (so a mislabelled file gets a clear error)."""
    out = []
    for f in files:
        inner = f.member or Path(f.path).name
        out.append(Source(str(f.name), Path(f.path), f.member, _kind(inner), inner))
    return out


def read_frames(sources, every: int = 1) -> Iterator[Frame]:
    """Frames of every source: stills once, videos every `every`-th frame."""
    if every < 1:
        raise UsageError(f"--every must be at least 1, not {every}")
    open_zips: dict[Path, zipfile.ZipFile] = {}
    try:
        for src in sources:
            if src.kind == "video":
                yield from _video_frames(src, every, open_zips)
                continue
            try:
                data = _member_bytes(src, open_zips) if src.member else src.path
                yield Frame(src, None, read_image(data, "RGB", name=src.label))
            except DataError as e:
                yield Frame(src, None, None, str(e))
    finally:
        for zf in open_zips.values():
            zf.close()


def _member_bytes(src: Source, open_zips: dict) -> bytes:
    zf = open_zips.get(src.path)
    if zf is None:
        zf = open_zips[src.path] = zipfile.ZipFile(src.path)
    try:
        return zf.read(src.member)
    except (zipfile.BadZipFile, OSError, EOFError, ValueError) as e:
        raise DataError(f"{src.label}: cannot read from the zip ({e})") from None


def _video_frames(src: Source, every: int, open_zips: dict) -> Iterator[Frame]:
    with contextlib.ExitStack() as stack:
        path = src.path
        try:
            if src.member:  # OpenCV reads only from files: unpack the member to a temp file
                tmp = stack.enter_context(tempfile.TemporaryDirectory(prefix="lensforge-video-"))
                path = Path(tmp) / PurePosixPath(src.member).name
                path.write_bytes(_member_bytes(src, open_zips))
            reader = stack.enter_context(VideoReader(path, src.label))
            for index, frame in reader.frames(every):
                yield Frame(src, index, frame)
        except DataError as e:
            yield Frame(src, None, None, str(e))
