"""Atomic file writes.

Every artefact lensforge writes (checkpoints, CSVs, reports, downloads) goes through a temporary
file in the same directory followed by `os.replace`, so a crash or Ctrl-C leaves either the old
file or the new one, never a truncated mix. The file ends with the permissions a plain `open()`
would have given it (0666 minus the umask, or the mode of the file it replaces), not mkstemp's
private 0600.
"""
from __future__ import annotations

import contextlib
import json
import os
import stat
import tempfile
import threading
from pathlib import Path
from typing import IO, Iterator


_umask_lock = threading.Lock()


def current_umask() -> int:
    """The process umask, read without changing it where Linux tells it (/proc, kernel >= 4.7);
    elsewhere set-and-restore under a lock (os.umask has no read-only form)."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    with _umask_lock:
        mask = os.umask(0o022)
        os.umask(mask)
    return mask


def _open_mode(path: Path) -> int:
    """Permissions `open(path, "w")` would leave: an existing file keeps its own, a new one gets
    0666 & ~umask."""
    try:
        return stat.S_IMODE(os.stat(path).st_mode)
    except OSError:
        return 0o666 & ~current_umask()


@contextlib.contextmanager
def atomic_open(path: str | os.PathLike, mode: str = "wb") -> Iterator[IO]:
    """Open a temporary sibling of `path` for writing; rename it over `path` on success."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, mode) as f:
            if hasattr(os, "fchmod"):  # mkstemp makes 0600; outputs are meant to be read by others
                os.fchmod(f.fileno(), _open_mode(path))
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def write_text(path: str | os.PathLike, text: str) -> None:
    with atomic_open(path, "w") as f:
        f.write(text)


def write_bytes(path: str | os.PathLike, data: bytes) -> None:
    with atomic_open(path, "wb") as f:
        f.write(data)


def write_json(path: str | os.PathLike, obj) -> None:
    write_text(path, json.dumps(obj, indent=2, sort_keys=False) + "\n")
