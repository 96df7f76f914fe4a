"""`faceswap extract`: find faces in photos, folders, zips and videos, write aligned crops and an
alignments file.

Output folder:
- one PNG per face, `<source name>[_f<frame>]_<k>.png` (k = 0 for the largest face),
- `alignments.json`: settings, one record per face (crop file, source, frame, box, landmarks,
  image-to-crop matrix, detector score), the inputs where no face was found, the unreadable
  ones with their error, and a summary.
Every file is written atomically; a file with no face, or one that cannot be decoded, is
counted and listed, never fatal.
"""
from __future__ import annotations

import dataclasses
import re
import time
from collections import Counter
from pathlib import Path
from typing import Callable, Sequence

import cv2

from ..errors import UsageError
from ..fileio import write_bytes, write_json
from .align import DEFAULT_MARGIN, align_face
from .detect import FaceDetector
from .sources import Source, read_frames

__all__ = ["ExtractResult", "extract", "ALIGNMENTS"]

ALIGNMENTS = "alignments.json"


@dataclasses.dataclass
class ExtractResult:
    out: Path
    faces: list[dict]
    no_face: list[dict]
    errors: list[dict]
    summary: dict


def extract(sources: Sequence[Source], out: str | Path, *, face_size: int = 256, margin: float = DEFAULT_MARGIN,
            largest: bool = False, min_size: int = 24, every: int = 1, detector: str = "auto",
            min_score: float = 0.95, progress: Callable[[int], None] | None = None) -> ExtractResult:
    """Detect, align and save every face (or only the largest per image/frame with `largest`) of
    `sources` (see `lensforge.faces.sources.as_sources`; `lensforge.tasks.faceswap.extract` takes
    paths).

    `min_size` is the smallest face side in source pixels; `every` keeps every Nth video frame.
    `progress`, if given, is called with the number of frames processed so far.
    """
    if face_size < 16:
        raise UsageError(f"--face-size must be at least 16, not {face_size}")
    if not 0 <= margin < 0.5:
        raise UsageError(f"--margin must be in [0, 0.5), not {margin}")
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise UsageError(f"{out}: exists and is not a folder")
    if not sources:
        raise UsageError("no images or videos to extract faces from")
    det = FaceDetector(detector, min_size=min_size, min_score=min_score)

    faces, no_face, errors = [], [], []
    per_frame = Counter()  # faces found per image/frame -> count, before `largest` selection
    taken: set[str] = set()
    stills = frames = 0
    t0 = time.perf_counter()
    for n, fr in enumerate(read_frames(sources, every), 1):
        where = {"source": fr.source.label, "frame": fr.index}
        if fr.error is not None:
            errors.append({**where, "error": fr.error})
            continue
        if fr.index is None:
            stills += 1
        else:
            frames += 1
        found = det.detect(fr.image)
        per_frame[min(len(found), 3)] += 1
        if not found:
            no_face.append(where)
        stem = _stem(fr.source.rel or fr.source.label, fr.index, taken)
        for k, face in enumerate(found[:1] if largest else found):
            crop, matrix = align_face(fr.image, face.landmarks, face_size, margin)
            name = f"{stem}_{k}.png"
            ok, png = cv2.imencode(".png", cv2.cvtColor(crop, cv2.COLOR_RGB2BGR))
            write_bytes(out / name, png.tobytes())
            faces.append({"file": name, **where, "face": k, **face.to_json(),
                          "matrix": [[round(float(v), 6) for v in row] for row in matrix]})
        if progress is not None:
            progress(n)
    seconds = time.perf_counter() - t0
    processed = stills + frames
    summary = {
        "inputs": len(sources), "images": stills, "video_frames": frames, "faces_written": len(faces),
        "with_face": processed - len(no_face), "no_face": len(no_face), "unreadable": len(errors),
        "faces_per_image": {("3+" if k == 3 else str(k)): per_frame[k] for k in sorted(per_frame)},
        "seconds": round(seconds, 2),
        "seconds_per_image": round(seconds / processed, 4) if processed else None,
        "detector": det.backend,
    }
    settings = {"face_size": face_size, "margin": margin, "largest": largest, "min_size": min_size,
                "every": every, "detector": det.backend, "min_score": min_score,
                "landmarks": ["eye_left", "eye_right", "nose", "mouth_left", "mouth_right"]}
    write_json(out / ALIGNMENTS, {"version": 1, "settings": settings, "summary": summary,
                                  "faces": faces, "no_face": no_face, "errors": errors})
    return ExtractResult(out, faces, no_face, errors, summary)


def _stem(rel: str, frame: int | None, taken: set[str]) -> str:
    """A file-name-safe, unique stem from the source's relative path (folders joined by '_')."""
    base = re.sub(r"[^A-Za-z0-9._-]+", "_", str(Path(rel).with_suffix("")).replace("/", "_")).strip("._") or "image"
    if frame is not None:
        base = f"{base}_f{frame:06d}"
    stem, i = base, 2
    while stem in taken:
        stem, i = f"{base}-{i}", i + 1
    taken.add(stem)
    return stem
