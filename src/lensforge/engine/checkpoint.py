"""Checkpoints that are safe to load and never half-written.

A checkpoint is a plain dict of tensors, numbers, strings, lists and dicts, saved atomically and
read back with `torch.load(weights_only=True)`: a file that smuggles a pickled object (code that
would run on load) is refused before anything in it executes.
"""
from __future__ import annotations

import pickle
import zipfile
from pathlib import Path

import torch

from ..errors import CheckpointError
from ..fileio import atomic_open

FORMAT = "lensforge-checkpoint"
VERSION = 1


def save_checkpoint(path: str | Path, payload: dict) -> None:
    payload = {"format": FORMAT, "version": VERSION, **payload}
    with atomic_open(path, "wb") as f:
        torch.save(payload, f)


def load_checkpoint(path: str | Path, task: str | None = None) -> dict:
    """Load and validate a lensforge checkpoint; any problem becomes a one-line CheckpointError."""
    path = Path(path)
    if path.is_dir():
        for candidate in (path / "weights" / "best.pt", path / "best.pt"):
            if candidate.is_file():
                path = candidate
                break
    if not path.is_file():
        raise CheckpointError(f"{path}: no such weights file")
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else "unsafe content"
        raise CheckpointError(f"{path}: refused to load: the file contains pickled objects that are not "
                              f"plain weights ({first[:160]})") from None
    except (RuntimeError, EOFError, zipfile.BadZipFile, OSError, ValueError) as e:
        raise CheckpointError(f"{path}: not a readable PyTorch checkpoint ({str(e).splitlines()[0][:160]})") from None
    if not isinstance(ckpt, dict) or ckpt.get("format") != FORMAT:
        raise CheckpointError(f"{path}: not a lensforge checkpoint (no '{FORMAT}' marker)")
    if ckpt.get("version", 0) > VERSION:
        raise CheckpointError(f"{path}: written by a newer lensforge (format v{ckpt['version']}); upgrade lensforge")
    if task is not None and ckpt.get("task") != task:
        raise CheckpointError(f"{path}: is a '{ckpt.get('task')}' checkpoint, not '{task}'")
    return ckpt
