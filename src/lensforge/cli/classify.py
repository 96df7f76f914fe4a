"""Handlers of `lensforge classify train|eval|predict` (options: lensforge.specs.classify)."""
from __future__ import annotations

import json

from .common import print_run


def train(values: dict) -> int:
    from ..tasks import classify

    run = classify.train(**values)
    r = run.results
    print_run(run, f"test_accuracy={r.get('test_accuracy', float('nan')):.4f} best_epoch={r['best_epoch']}")
    return 0


def evaluate(values: dict) -> int:
    from ..options import make
    from ..specs.classify import EvalOptions
    from ..tasks import classify

    o = make(EvalOptions, values)
    res = classify.evaluate(o.weights, o.data, data_dir=o.data_dir, split=o.split, device=o.device,
                            download=o.download)
    if o.json:
        print(json.dumps(res, indent=2))
    else:
        s = o.split
        print(f"{s}_accuracy={res[f'{s}_accuracy']:.4f} {s}_loss={res[f'{s}_loss']:.4f} images={res[f'{s}_images']} "
              f"data={res['data']}")
    return 0


def predict(values: dict) -> int:
    from ..options import make
    from ..specs.classify import PredictOptions
    from ..tasks import classify
    from ..tasks.apply import expand_inputs, finish_records

    o = make(PredictOptions, values)
    clf = classify.load(o.weights, device=o.device)
    files = expand_inputs(o.inputs)
    preds = clf.predict(files, top_k=o.top_k)
    for p in preds:
        if p.error:
            continue
        if o.top_k > 1:
            print(f"{p.file}\t" + "\t".join(f"{l} ({c:.3f})" for l, c in p.top))
        else:
            print(f"{p.file}\t{p.label}\t{p.confidence:.4f}")
    if o.out:
        classify.write_predictions_csv(o.out, preds, o.top_k)
    return finish_records([p.record() for p in preds])
