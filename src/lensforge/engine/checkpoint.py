"""Checkpoints that are safe to load and never half-written.

A checkpoint is a plain dict of tensors, numbers, strings, lists and dicts, saved atomically and
read back with `torch.load(weights_only=True)`: a file that smuggles a pickled object (code that
would run on load) is refused before anything in it executes. A Ctrl-C or SIGTERM that arrives
while a checkpoint is written is held until the file is complete, then delivered
(engine/interrupts.py): an interrupt inside torch.save's zip writer otherwise ends in a second,
unrelated exception and a traceback instead of the saved position.
"""
from __future__ import annotations

import pickle
import warnings
from pathlib import Path, PurePath

import torch

from ..errors import CheckpointError, UsageError
from ..fileio import atomic_open
from . import interrupts

FORMAT = "lensforge-checkpoint"
VERSION = 1


def _plain(obj):
    """Reduce metadata to types the weights-only unpickler accepts (paths -> str, numpy -> python)."""
    if isinstance(obj, torch.Tensor) or obj is None or isinstance(obj, (bool, int, float, str)):
        return obj
    if isinstance(obj, dict):
        return {k: _plain(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return type(obj)(_plain(v) for v in obj)
    if isinstance(obj, PurePath):
        return str(obj)
    if hasattr(obj, "item"):  # numpy scalars
        return obj.item()
    raise TypeError(f"cannot store {type(obj).__name__} in a checkpoint")


class _Writes:
    """The file torch.save writes to, with an instrumentation point inside each write, so tests
    can deliver a signal from deep inside the zip writer (where the real ones landed)."""

    def __init__(self, f):
        self.f = f

    def write(self, data) -> int:
        interrupts.point("checkpoint:write")
        return self.f.write(data)

    def flush(self) -> None:
        self.f.flush()


def save_checkpoint(path: str | Path, payload: dict) -> None:
    payload = _plain({"format": FORMAT, "version": VERSION, **payload})
    with interrupts.deferred(), atomic_open(path, "wb") as f:
        torch.save(payload, _Writes(f))


def load_weights_only(path: Path, what: str = "checkpoint"):
    """`torch.load(weights_only=True)` of any file (lensforge checkpoints, third-party state dicts);
    every failure is one CheckpointError naming the file. torch reports garbage bytes and smuggled
    objects through one exception type: only an unsupported/blocked global is a pickled object."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # torch warns about protocols of foreign pickles
            return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        globals_ = [l.strip() for l in str(e).splitlines()
                    if "global" in l.lower() and ("unsupported" in l.lower() or "blocked" in l.lower())]
        if globals_:
            raise CheckpointError(f"{path}: refused to load: the file contains pickled objects that are not "
                                  f"plain weights ({globals_[0][:160]})") from None
        raise CheckpointError(f"{path}: not a readable PyTorch {what} (unrecognised data)") from None
    except Exception as e:  # torch raises many types (KeyError for text files, RuntimeError, ...)
        detail = (str(e).splitlines() or [""])[0][:160]
        raise CheckpointError(f"{path}: not a readable PyTorch {what} ({type(e).__name__}: {detail})") from None


def load_checkpoint(path: str | Path, task: str | None = None) -> dict:
    """Load and validate a lensforge checkpoint; any problem becomes a one-line CheckpointError."""
    path = Path(path)
    if path.is_dir():
        for candidate in (path / "weights" / "best.pt", path / "best.pt"):
            if candidate.is_file():
                path = candidate
                break
    if not path.is_file():
        raise UsageError(f"{path}: no such weights file")
    ckpt = load_weights_only(path, "checkpoint")
    if not isinstance(ckpt, dict) or ckpt.get("format") != FORMAT:
        raise CheckpointError(f"{path}: not a lensforge checkpoint (no '{FORMAT}' marker)")
    if ckpt.get("version", 0) > VERSION:
        raise CheckpointError(f"{path}: written by a newer lensforge (format v{ckpt['version']}); upgrade lensforge")
    if task is not None and ckpt.get("task") != task:
        raise CheckpointError(f"{path}: is a '{ckpt.get('task')}' checkpoint, not '{task}'")
    return ckpt
