"""Learning-rate schedules as pure functions of the step, so resuming needs only the step count."""
from __future__ import annotations

import math


def lr_factor(step: int, total: int, kind: str = "onecycle", warmup: float = 0.1, final: float = 0.0) -> float:
    """Multiplier on the peak learning rate at optimisation `step` of `total`.

    onecycle: linear warm-up to the peak, then linear decay to `final`; cosine: warm-up then
    half-cosine decay; constant: warm-up then flat.
    """
    total = max(1, total)
    w = int(round(warmup * total))
    if step < w:
        return (step + 1) / w
    if kind == "constant":
        return 1.0
    t = min(1.0, (step - w) / max(1, total - w))
    if kind == "onecycle":
        return final + (1 - final) * (1 - t)
    if kind == "cosine":
        return final + (1 - final) * 0.5 * (1 + math.cos(math.pi * t))
    raise ValueError(f"unknown schedule '{kind}' (use onecycle, cosine or constant)")
