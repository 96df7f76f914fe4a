"""Handlers of `lensforge gan train|sample` (options: lensforge.specs.gan)."""
from __future__ import annotations

from .common import print_run


def train(values: dict) -> int:
    from ..tasks import gan

    run = gan.train(**values)
    r = run.results
    if isinstance(r.get("fd_vs_train"), float):
        line = (f"fd_vs_train={r['fd_vs_train']:.3f} fd_vs_test={r.get('fd_vs_test', float('nan')):.3f} "
                f"(real test vs train {r.get('fd_real_test_vs_train', float('nan')):.3f}) "
                f"recognisable={r['recognisable_fraction']:.3f}")
    else:
        line = str(r["fd"])
    print_run(run, line)
    return 0


def sample(values: dict) -> int:
    import math
    from pathlib import Path

    from ..errors import UsageError
    from ..options import make
    from ..specs.gan import SampleOptions
    from ..tasks import gan
    from ..tasks.apply import save_image
    from ..tasks.generative_common import save_grid

    o = make(SampleOptions, values)
    g = gan.load(o.weights, device=o.device)
    labels = None
    if o.label is not None:
        if not g.conditional:
            raise UsageError(f"--label {o.label}: {o.weights} is not a conditional GAN")
        labels = [g.class_index(o.label)]
    images = g.sample(o.n, labels=labels, seed=o.seed)
    save_grid(images, o.out, ncols=math.ceil(math.sqrt(o.n)))
    if o.each:
        for i, img in enumerate(images):
            save_image(Path(o.each) / f"sample_{i:04d}.png", img)
    print(f"{o.n} samples written to {o.out}" + (f" and {o.each}/" if o.each else ""))
    return 0
