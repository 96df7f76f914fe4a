"""Handlers of `lensforge segment train|eval|predict` (options: lensforge.specs.segment)."""
from __future__ import annotations

import json

from .common import print_run


def _headline(r: dict, prefix: str = "test") -> str:
    parts = [f"{prefix}_miou={r.get(f'{prefix}_miou', float('nan')):.4f}",
             f"{prefix}_pixel_accuracy={r.get(f'{prefix}_pixel_accuracy', float('nan')):.4f}"]
    if f"{prefix}_adapted_rand_error" in r:
        parts += [f"{prefix}_pixel_error={r[f'{prefix}_pixel_error']:.4f}",
                  f"{prefix}_adapted_rand_error={r[f'{prefix}_adapted_rand_error']:.4f}"]
    return " ".join(parts)


def train(values: dict) -> int:
    from ..tasks import segment

    run = segment.train(**values)
    r = run.results
    print_run(run, f"{_headline(r)} best_epoch={r['best_epoch']}")
    return 0


def evaluate(values: dict) -> int:
    from ..options import make
    from ..specs.segment import EvalOptions
    from ..tasks import segment

    o = make(EvalOptions, values)
    res = segment.evaluate(o.weights, o.data, split=o.split, tta=o.tta, device=o.device)
    if o.json:
        print(json.dumps(res, indent=2))
    else:
        iou = " ".join(f"{k}={v:.4f}" if v is not None else f"{k}=n/a" for k, v in res[f"{o.split}_iou"].items())
        print(f"{_headline(res, o.split)} images={res[f'{o.split}_images']} iou: {iou}")
    return 0


def predict(values: dict) -> int:
    from ..options import make
    from ..specs.segment import PredictOptions
    from ..tasks import segment
    from ..tasks.apply import finish_records

    o = make(PredictOptions, values)
    seg = segment.load(o.weights, device=o.device)
    kw = {k: v for k, v in (("tile", o.tile), ("overlap", o.overlap), ("tta", o.tta)) if v is not None}
    records = seg.predict_files(o.inputs, o.out, **kw)
    for r in records:
        if r.ok:
            shares = " ".join(f"{k[6:]}={v:.3f}" for k, v in r.values.items() if k.startswith("share_"))
            print(f"{r.file}\t{r.values['width']}x{r.values['height']}\t{shares}")
    print(f"masks, colour views, overlays and predictions.csv in {o.out}")
    return finish_records(records)
