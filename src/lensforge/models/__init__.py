"""Model registry: `create_model(name, **kwargs)` builds any lensforge network by name.

Models are plain `nn.Module`s with uniform constructor arguments (in_channels, num_classes,
image_size), so checkpoints can store (name, kwargs) and rebuild the network without pickle.
"""
from __future__ import annotations

from typing import Callable

import torch

from ..errors import UsageError

_REGISTRY: dict[str, Callable[..., torch.nn.Module]] = {}


def register(name: str):
    def deco(fn):
        _REGISTRY[name] = fn
        return fn
    return deco


def create_model(name: str, **kwargs) -> torch.nn.Module:
    _load_builtin()
    if name not in _REGISTRY:
        raise UsageError(f"unknown model '{name}' (available: {', '.join(sorted(_REGISTRY))})")
    return _REGISTRY[name](**kwargs)


def available_models() -> list[str]:
    _load_builtin()
    return sorted(_REGISTRY)


def _load_builtin() -> None:
    """Import every module of this package once: each registers its networks on import, so a new
    model file needs no edit here."""
    import importlib
    import pkgutil

    for info in pkgutil.iter_modules(__path__):
        importlib.import_module(f"{__name__}.{info.name}")
