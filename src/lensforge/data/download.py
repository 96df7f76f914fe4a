"""Fetching dataset files from their official URLs (or mirrors) into the local data directory.

Dataset hosts are slow, flaky and sometimes gone, so a download resumes from a `.part` file
instead of starting over, falls back to mirrors, and is checked against the official md5 before
it is renamed into place: a file under its final name is always complete. When nothing works
the user gets one line saying what to download, from where, and where to put it, so the
library also works on machines without internet access.
"""
from __future__ import annotations

import hashlib
import http.client
import os
import sys
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from tqdm import tqdm

from ..errors import DataError

USER_AGENT = "lensforge-downloader/0.1 (+https://pypi.org/project/lensforge/)"
_CHUNK = 1 << 16


@dataclass(frozen=True)
class RemoteFile:
    """A file identified by its official name and checksum, so any mirror can serve it."""

    name: str
    urls: tuple[str, ...]
    md5: str


def md5sum(path: str | os.PathLike) -> str:
    """Hex md5 of a file, read in chunks so multi-GB archives do not have to fit in memory."""
    h = hashlib.md5(usedforsecurity=False)  # integrity against truncation, not tampering
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def data_root(data_dir: str | os.PathLike | None = None) -> Path:
    """Where datasets live: explicit argument, then $LENSFORGE_DATA_DIR, then the user cache.

    The cache default keeps large downloads out of the working directory and shared between
    projects; the variable lets clusters point every job at one shared copy.
    """
    if data_dir is not None and str(data_dir) != "":
        return Path(data_dir).expanduser()
    env = os.environ.get("LENSFORGE_DATA_DIR")
    if env:
        return Path(env).expanduser()
    cache = os.environ.get("XDG_CACHE_HOME", "")
    base = Path(cache) if os.path.isabs(cache) else Path.home() / ".cache"  # XDG: ignore relative
    return base / "lensforge" / "datasets"


def _reason(exc: BaseException) -> str:
    """A short, single-line cause for the final error message (no nested reprs or tracebacks)."""
    if isinstance(exc, urllib.error.HTTPError):
        return f"HTTP {exc.code} {exc.reason}"
    if isinstance(exc, urllib.error.URLError):
        exc = exc.reason if isinstance(exc.reason, BaseException) else OSError(str(exc.reason))
    text = getattr(exc, "strerror", None) or str(exc) or type(exc).__name__
    return " ".join(str(text).split())


def _download(url: str, part: Path, name: str, timeout: float, progress: bool) -> None:
    """Append `url`'s content to `part`, resuming after the bytes already there when possible."""
    offset = part.stat().st_size if part.exists() else 0
    req = urllib.request.Request(url, headers={"User-Agent": USER_AGENT})
    if offset:
        req.add_header("Range", f"bytes={offset}-")
    try:
        resp = urllib.request.urlopen(req, timeout=timeout)
    except urllib.error.HTTPError as e:
        if e.code == 416 and offset:  # nothing left to send: the .part is probably complete
            return
        raise
    with resp:
        status = getattr(resp, "status", None)  # None for file:// URLs, which ignore Range
        if offset and status == 206:
            if not resp.headers.get("Content-Range", "").startswith(f"bytes {offset}-"):
                part.unlink()  # server resumed elsewhere; the bytes would not line up
                raise OSError("server answered an unexpected byte range")
        else:
            offset = 0  # server ignored Range: restart from scratch
        length = resp.headers.get("Content-Length")
        total = offset + int(length) if length and length.isdigit() else None
        done = offset
        with open(part, "ab" if offset else "wb") as f, tqdm(
            total=total, initial=offset, unit="B", unit_scale=True, unit_divisor=1024,
            desc=name, file=sys.stderr, disable=not progress, leave=False,
        ) as bar:
            while chunk := resp.read(_CHUNK):
                f.write(chunk)
                done += len(chunk)
                bar.update(len(chunk))
            f.flush()
            os.fsync(f.fileno())
    if total is not None and done < total:  # http.client reports an early close as plain EOF
        raise OSError(f"connection closed after {done} of {total} bytes")


def fetch(file: RemoteFile, dest_dir: str | os.PathLike, *, download: bool = True,
          progress: bool = True, timeout: float = 30) -> Path:
    """Return the path of `file` in `dest_dir`, downloading it first if it is not there.

    An existing file is trusted as is: users may place re-packed copies, and the format
    readers validate structure anyway. Downloads are verified before they get the final name.
    """
    dest = Path(dest_dir) / file.name
    if dest.exists():
        return dest
    if not download:
        raise _missing(file, dest, "automatic download is disabled")
    part = dest.with_name(dest.name + ".part")
    try:
        dest.parent.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise DataError(f"{dest.parent}: cannot create data directory ({_reason(e)})") from None
    reason = "no URL known"
    for url in file.urls:
        for _attempt in range(2):  # a second, fresh try only when a resumed .part was bad
            resumed = part.exists()
            try:
                _download(url, part, file.name, timeout, progress)
            except (OSError, http.client.HTTPException, ValueError) as e:
                reason = f"{url}: {_reason(e)}"
                break  # keep the .part so the next URL (or the next run) can resume it
            actual = md5sum(part)
            if actual == file.md5.lower():
                os.replace(part, dest)
                return dest
            part.unlink()
            reason = f"checksum mismatch from {url}: expected md5 {file.md5}, got {actual}"
            if not resumed:
                break
    raise _missing(file, dest, reason)


def _missing(file: RemoteFile, dest: Path, reason: str) -> DataError:
    urls = " or ".join(file.urls) or "(no known URL)"
    return DataError(f"{file.name} is missing: download it from {urls} and save it as "
                     f"{dest.resolve()} (last error: {reason})")
