"""Handlers of `lensforge stylize run|train|apply` (options: lensforge.specs.stylize)."""
from __future__ import annotations

from .common import print_outputs, print_run


def run(values: dict) -> int:
    from ..tasks import stylize

    res = stylize.gatys(**values)
    print(f"{res['out']}\tseconds={res['seconds']:.1f} style_loss={res['style_loss_start']:.4g}->"
          f"{res['style_loss_end']:.4g} content_loss={res['content_loss_start']:.4g}->{res['content_loss_end']:.4g}")
    return 0


def train(values: dict) -> int:
    from ..tasks import stylize

    run = stylize.train(**values)
    r = run.results
    print_run(run, f"val_style_loss={r.get('val_style', float('nan')):.4g} "
                   f"val_content_loss={r.get('val_content', float('nan')):.4g}")
    return 0


def apply(values: dict) -> int:
    from ..tasks import stylize

    return print_outputs(stylize.apply(**values))
