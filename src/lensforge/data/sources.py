"""A user's folder or .zip of images, read the same way by every task (torch-free): relative posix
names of the image files inside, and a byte reader for them. Hidden files and macOS resource forks
(`__MACOSX/`, `._*`) are left out."""
from __future__ import annotations

import os
import zipfile
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Callable

from ..errors import DataError, UsageError
from .imageio import IMAGE_EXTENSIONS


@dataclass
class Source:
    """Files of a folder or zip: relative posix names and a byte reader."""

    root: Path
    names: list[str]
    read: Callable[[str], bytes]


def open_source(root: str | os.PathLike, what: str = "images") -> Source:
    root = Path(root)
    if not root.exists():
        raise UsageError(f"{root}: no such file or folder")
    if root.is_dir():
        names = sorted(p.relative_to(root).as_posix() for p in root.rglob("*")
                       if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS
                       and not any(part.startswith(".") for part in p.relative_to(root).parts))
        return Source(root, names, lambda n: (root / n).read_bytes())
    if root.suffix.lower() == ".zip":
        try:
            zf = zipfile.ZipFile(root)
        except (zipfile.BadZipFile, OSError) as e:
            raise DataError(f"{root}: not a readable zip file ({e})") from None
        names = sorted(n for n in zf.namelist() if not n.endswith("/")
                       and PurePosixPath(n).suffix.lower() in IMAGE_EXTENSIONS
                       and not any(p.startswith((".", "__MACOSX")) for p in PurePosixPath(n).parts))
        return Source(root, names, zf.read)
    raise DataError(f"{root}: not a folder or .zip of {what}")
