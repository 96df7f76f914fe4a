"""Small helpers every task module shares (the run lifecycle itself is tasks/lifecycle.py, the
apply verbs' helpers tasks/apply.py)."""
from __future__ import annotations

import torch

from ..errors import LensforgeError
from ..models import create_model


def data_summary(data: str, ds) -> str:
    """The line printed before training: images (and classes) per split, image size, what was skipped."""
    sizes = ", ".join(f"{n} {k}" for k, n in split_sizes(ds).items())
    c, h, w = ds.train.shape
    line = f"{data}: {sizes} images"
    if ds.classes:
        line += f", {len(ds.classes)} classes"
    line += f", {h}x{w} {'grey' if c == 1 else 'colour'}"
    if ds.skipped:
        line += f"; skipped {len(ds.skipped)} unreadable file(s), e.g. {ds.skipped[0]}"
    return line


def split_sizes(ds) -> dict[str, int]:
    """Image count per split, for config.yaml."""
    return {k: len(s) for k, s in (("train", ds.train), ("val", ds.val), ("test", ds.test)) if s is not None}


def restore_model(ckpt: dict, name: str | None = None, what: str | None = None) -> torch.nn.Module:
    """Rebuild a checkpoint's network from (name, kwargs) and load its weights, with a one-line
    error when they do not fit (e.g. a checkpoint edited by hand or from another version)."""
    name = name or ckpt["model_name"]
    try:
        model = create_model(name, **ckpt["model_kwargs"])
    except TypeError as e:
        raise LensforgeError(f"weights do not fit {what or f'model {name!r}'}: {e}") from None
    try:
        model.load_state_dict(ckpt["model"])
    except RuntimeError as e:
        raise LensforgeError(f"weights do not fit {what or f'model {name!r}'}: {str(e).splitlines()[0]}") from None
    return model
