"""What every apply verb (predict, apply, denoise, score, sample, convert...) shares.

 - `expand_inputs`: files, folders (recursive, sorted) and .zip archives (their image members) into
   one list of `InputFile`s; a path that does not exist is one UsageError, the same for every verb.
 - `Record`: one result per input file, with `error` set instead of raising for unreadable files.
 - `write_records_csv`: the one CSV layout, columns `file, <task columns...>, error`.
 - `save_image(path, image)`: PNG/JPEG written atomically, path first like every writer here.
 - `finish_records`: prints each failure as one line, returns the exit code (1 if any failed).
 - weights are loaded with `lensforge.engine.checkpoint.load_checkpoint` (weights_only).
"""
from __future__ import annotations

import csv
import io
import sys
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Sequence

import numpy as np

from ..data.imageio import IMAGE_EXTENSIONS
from ..errors import UsageError
from ..fileio import write_bytes, write_text


@dataclass(frozen=True)
class InputFile:
    """One input: a file on disk, or a member of a zip archive (name `archive.zip/member`)."""

    name: str
    path: Path
    member: str | None = None

    def source(self) -> Path | bytes:
        """What lensforge.data.imageio.read_image accepts: the path, or the member's bytes."""
        if self.member is None:
            return self.path
        with zipfile.ZipFile(self.path) as zf:
            return zf.read(self.member)

    @property
    def stem(self) -> str:
        return Path(self.member or self.path.name).stem

    def __str__(self) -> str:
        return self.name


def expand_inputs(paths: Sequence[str | Path], extensions: Iterable[str] = IMAGE_EXTENSIONS) -> list[InputFile]:
    """Files as given (any extension: reading them decides), image files inside folders and zips."""
    exts = {e.lower() for e in extensions}
    out: list[InputFile] = []
    for raw in paths:
        p = Path(raw)
        if p.is_dir():
            out += [InputFile(str(f), f) for f in sorted(p.rglob("*"))
                    if f.is_file() and f.suffix.lower() in exts and not f.name.startswith(".")]
        elif p.is_file() and p.suffix.lower() == ".zip" and zipfile.is_zipfile(p):
            with zipfile.ZipFile(p) as zf:
                members = sorted(i.filename for i in zf.infolist() if not i.is_dir()
                                 and Path(i.filename).suffix.lower() in exts and "__MACOSX" not in i.filename
                                 and not Path(i.filename).name.startswith("."))
            out += [InputFile(f"{p}/{m}", p, m) for m in members]
        elif p.exists():
            out.append(InputFile(str(p), p))
        else:
            raise UsageError(f"{p}: no such file or folder")
    if not out:
        raise UsageError(f"no image files found in {' '.join(map(str, paths))}")
    return out


def unique_stems(inputs: Sequence[InputFile | str]) -> list[str]:
    """Output names for inputs: their stems, with -2, -3... where two inputs share one."""
    seen: dict[str, int] = {}
    stems = []
    for item in inputs:
        s = item.stem if isinstance(item, InputFile) else Path(str(item)).stem
        seen[s] = seen.get(s, 0) + 1
        stems.append(s if seen[s] == 1 else f"{s}-{seen[s]}")
    return stems


@dataclass
class Record:
    """The result of applying a model to one input; `error` instead of values when it failed."""

    file: str
    values: dict[str, Any] = field(default_factory=dict)
    error: str | None = None

    @property
    def ok(self) -> bool:
        return self.error is None


def _cell(v: Any) -> Any:
    if isinstance(v, float):
        return f"{v:.6g}"
    if isinstance(v, (list, tuple)):
        return ";".join(map(str, v))
    return "" if v is None else v


def write_records_csv(path: str | Path, records: Sequence[Record], columns: Sequence[str] | None = None) -> None:
    """`file, <columns>, error`, one row per record, '\\n' line ends, written atomically."""
    if columns is None:
        columns = []
        for r in records:
            columns += [k for k in r.values if k not in columns]
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(["file", *columns, "error"])
    for r in records:
        w.writerow([r.file, *(_cell(r.values.get(c)) for c in columns), r.error or ""])
    write_text(path, buf.getvalue())


def write_table_csv(path: str | Path, rows: Sequence[dict]) -> None:
    """A report table (list of dicts with the same keys) as CSV, written atomically."""
    if not rows:
        return
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(list(rows[0]))
    w.writerows([[_cell(v) for v in r.values()] for r in rows])
    write_text(path, buf.getvalue())


def finish_records(records: Sequence[Record], what: str = "file(s)") -> int:
    """Print each failure as one line on stderr; exit code 1 if any input failed, else 0."""
    failed = [r for r in records if not r.ok]
    for r in failed:
        print(f"error: {r.error}", file=sys.stderr)
    if failed:
        print(f"{len(failed)} of {len(records)} {what} could not be processed", file=sys.stderr)
    return 1 if failed else 0


def accepts_onnx(task: str):
    """Decorator for a task's `load(weights, device)`: a `.onnx` path (from `lensforge export`) gives
    the same loaded-model class over an onnxruntime session (lensforge.export.runtime), so every
    apply verb runs exported models with the same preprocessing and outputs."""
    import functools

    def wrap(load_fn):
        @functools.wraps(load_fn)
        def load(weights, device: str = "auto"):
            if str(weights).lower().endswith(".onnx"):
                from ..export.runtime import load as load_onnx
                return load_onnx(weights, task=task, device=device)
            return load_fn(weights, device)
        return load
    return wrap


def to_uint8(image: Any) -> np.ndarray:
    """(C,H,W) float tensor/array in [0,1], or (H,W[,C]) uint8, to (H,W) or (H,W,3) uint8."""
    if hasattr(image, "detach"):
        image = image.detach().float().cpu().numpy()
    arr = np.asarray(image)
    if arr.dtype != np.uint8:
        if arr.ndim == 3 and arr.shape[0] in (1, 3, 4) and arr.shape[-1] not in (1, 3, 4):
            arr = arr.transpose(1, 2, 0)
        arr = (np.clip(arr.astype(np.float32), 0, 1) * 255).round().astype(np.uint8)
    if arr.ndim == 3 and arr.shape[-1] == 1:
        arr = arr[..., 0]
    return arr


def encode_image(image: Any, fmt: str = "PNG", text: dict[str, str] | None = None) -> bytes:
    """Encoded bytes of an image (see to_uint8); `text` goes into PNG text chunks."""
    from PIL import Image, PngImagePlugin

    buf = io.BytesIO()
    pil = Image.fromarray(to_uint8(image))
    if fmt.upper() == "PNG":
        info = PngImagePlugin.PngInfo()
        for k, v in (text or {}).items():
            info.add_text(k, v)
        pil.save(buf, format="PNG", pnginfo=info)
    else:
        pil.convert("RGB").save(buf, format="JPEG", quality=95)
    return buf.getvalue()


def save_image(path: str | Path, image: Any, text: dict[str, str] | None = None) -> Path:
    """Write an image atomically; PNG unless the suffix says JPEG."""
    path = Path(path)
    fmt = "JPEG" if path.suffix.lower() in (".jpg", ".jpeg") else "PNG"
    write_bytes(path, encode_image(image, fmt, text))
    return path
