"""Handlers of `lensforge vae train|sample|interpolate|manifold` (options: lensforge.specs.vae)."""
from __future__ import annotations

from .common import print_run


def train(values: dict) -> int:
    from ..tasks import vae

    run = vae.train(**values)
    r = run.results
    s = r["eval_split"]
    print_run(run, f"{s}_neg_elbo={r[f'{s}_neg_elbo']:.2f} nats/image (recon {r[f'{s}_recon']:.2f} + "
                   f"KL {r[f'{s}_kl']:.2f})")
    return 0


def sample(values: dict) -> int:
    import math

    from ..options import make
    from ..specs.vae import SampleOptions
    from ..tasks import vae
    from ..tasks.generative_common import save_grid

    o = make(SampleOptions, values)
    gen = vae.load(o.weights, device=o.device)
    save_grid(gen.sample(o.n, seed=o.seed), o.out, ncols=math.ceil(math.sqrt(o.n)))
    print(f"{o.n} samples written to {o.out}")
    return 0


def interpolate(values: dict) -> int:
    from ..errors import UsageError
    from ..options import make
    from ..specs.vae import InterpolateOptions
    from ..tasks import vae
    from ..tasks.apply import expand_inputs, finish_records
    from ..tasks.generative_common import save_grid

    o = make(InterpolateOptions, values)
    files = expand_inputs([o.a, o.b])
    if len(files) != 2:
        raise UsageError(f"interpolate takes two image files, got {len(files)} images from {o.a} {o.b}")
    gen = vae.load(o.weights, device=o.device)
    got = gen.read(files)
    if len(got.x) != 2:
        return finish_records(got.records)
    save_grid(gen.interpolate(got.x[0], got.x[1], o.steps), o.out, ncols=o.steps)
    print(f"{o.steps}-step interpolation written to {o.out}")
    return 0


def manifold(values: dict) -> int:
    from ..options import make
    from ..specs.vae import ManifoldOptions
    from ..tasks import vae
    from ..tasks.generative_common import save_grid

    o = make(ManifoldOptions, values)
    gen = vae.load(o.weights, device=o.device)
    save_grid(gen.manifold(o.n), o.out, ncols=o.n)
    print(f"{o.n}x{o.n} manifold written to {o.out}")
    return 0
