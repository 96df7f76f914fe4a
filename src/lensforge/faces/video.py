"""Video in and out with OpenCV's FFmpeg build (the one inside opencv-python-headless).

Reading yields RGB frames with their index; writing keeps the input's frame rate and size and
goes through a temporary sibling file renamed into place, so an interrupted convert never
leaves a truncated video under the final name. OpenCV's wheel has no H.264 encoder ('avc1'
fails to open), so MP4 is written as MPEG-4 Part 2 ('mp4v'), which every player handles.
"""
from __future__ import annotations

import contextlib
import os
import tempfile
from pathlib import Path
from typing import Iterator

import cv2
import numpy as np

from ..errors import DataError, UsageError

__all__ = ["VIDEO_EXTENSIONS", "is_video", "VideoReader", "VideoWriter", "probe"]

VIDEO_EXTENSIONS = frozenset({".mp4", ".m4v", ".mov", ".avi", ".mkv", ".webm", ".mpg", ".mpeg", ".wmv"})

#: Output container -> fourcc that OpenCV 4.14's wheel can actually encode (each checked by
#: writing and re-reading 10 frames: avc1/H264 do not open, these do).
_FOURCC = {".mp4": "mp4v", ".m4v": "mp4v", ".mov": "mp4v", ".avi": "MJPG", ".mkv": "FFV1"}


def is_video(path: str | os.PathLike) -> bool:
    return Path(path).suffix.lower() in VIDEO_EXTENSIONS


class VideoReader:
    """Frames of a video file as RGB uint8 arrays, with fps, size and the container's count."""

    def __init__(self, path: str | os.PathLike, label: str | None = None):
        self.path = Path(path)
        self.label = label or str(path)
        if not self.path.is_file():
            raise DataError(f"{self.label}: no such file")
        self._cap = cv2.VideoCapture(str(self.path))
        if not self._cap.isOpened():
            raise DataError(f"{self.label}: not a readable video file")
        self.fps = float(self._cap.get(cv2.CAP_PROP_FPS)) or 0.0
        self.width = int(self._cap.get(cv2.CAP_PROP_FRAME_WIDTH))
        self.height = int(self._cap.get(cv2.CAP_PROP_FRAME_HEIGHT))
        #: What the container says; may be an estimate for some formats, so `frames` counts.
        self.frame_count = int(self._cap.get(cv2.CAP_PROP_FRAME_COUNT))
        if self.width <= 0 or self.height <= 0:
            self.close()
            raise DataError(f"{self.label}: video has no decodable frames")

    def frames(self, every: int = 1) -> Iterator[tuple[int, np.ndarray]]:
        """(index, RGB frame) for frames 0, every, 2*every, ...; skipped frames are only grabbed."""
        if every < 1:
            raise UsageError(f"--every must be at least 1, not {every}")
        index = 0
        decoded = 0
        while True:
            if index % every == 0:
                ok, frame = self._cap.read()
                if not ok:
                    break
                decoded += 1
                yield index, cv2.cvtColor(frame, cv2.COLOR_BGR2RGB)
            elif not self._cap.grab():
                break
            index += 1
        if decoded == 0:
            raise DataError(f"{self.label}: video has no decodable frames")

    def close(self) -> None:
        self._cap.release()

    def __enter__(self) -> "VideoReader":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def probe(path: str | os.PathLike) -> dict:
    """Frame count (by decoding every frame), fps and size: what a test or benchmark compares."""
    with VideoReader(path) as r:
        n = sum(1 for _ in r.frames())
        return {"frames": n, "fps": r.fps, "width": r.width, "height": r.height}


class VideoWriter:
    """Write RGB frames at a fixed fps and size; `close()` renames the finished file into place.

    Use as a context manager: on an exception the partial file is deleted and the final path is
    left as it was.
    """

    def __init__(self, path: str | os.PathLike, fps: float, size: tuple[int, int]):
        self.path = Path(path)
        ext = self.path.suffix.lower()
        if ext not in _FOURCC:
            raise UsageError(f"{self.path}: cannot write video as {ext or 'no extension'}; "
                             f"use one of {', '.join(sorted(_FOURCC))}")
        if not fps or fps <= 0:
            raise UsageError(f"{self.path}: frame rate must be positive, not {fps}")
        self.width, self.height = int(size[0]), int(size[1])
        self.fps = float(fps)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{self.path.stem}.", suffix=ext, dir=self.path.parent)
        os.close(fd)
        self._tmp = Path(tmp)
        self._writer = cv2.VideoWriter(str(self._tmp), cv2.VideoWriter_fourcc(*_FOURCC[ext]),
                                       self.fps, (self.width, self.height))
        if not self._writer.isOpened():
            self._tmp.unlink(missing_ok=True)
            raise UsageError(f"{self.path}: OpenCV cannot encode {ext} video here")
        self.frames_written = 0

    def write(self, frame: np.ndarray) -> None:
        if frame.shape[:2] != (self.height, self.width) or frame.dtype != np.uint8:
            raise ValueError(f"frame {frame.shape} {frame.dtype} does not match video "
                             f"{self.height}x{self.width} uint8")
        self._writer.write(cv2.cvtColor(frame, cv2.COLOR_RGB2BGR))
        self.frames_written += 1

    def close(self) -> Path:
        """Finish the file and move it to `path`; returns `path`."""
        self._writer.release()
        os.replace(self._tmp, self.path)
        return self.path

    def abort(self) -> None:
        self._writer.release()
        with contextlib.suppress(FileNotFoundError):
            self._tmp.unlink()

    def __enter__(self) -> "VideoWriter":
        return self

    def __exit__(self, exc_type, *_) -> None:
        if exc_type is None:
            self.close()
        else:
            self.abort()
