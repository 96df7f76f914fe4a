"""Handlers of `lensforge detect train|eval|predict` (options: lensforge.specs.detect)."""
from __future__ import annotations

import json

from .common import print_run


def train(values: dict) -> int:
    from ..tasks import detect

    run = detect.train(**values)
    r = run.results
    per_class = " ".join(f"AP50[{k}]={v:.3f}" for k, v in (r.get("test_ap50") or {}).items())
    print_run(run, f"test_map50={r.get('test_map50', float('nan')):.4f} test_map50_95={r.get('test_map50_95', float('nan')):.4f} "
                   f"{per_class}")
    return 0


def evaluate(values: dict) -> int:
    from ..options import make
    from ..specs.detect import EvalOptions
    from ..tasks import detect

    o = make(EvalOptions, values)
    res = detect.evaluate(o.weights, o.data, split=o.split, conf=o.conf, iou=o.iou, out=o.out, device=o.device)
    if o.json:
        print(json.dumps(res, indent=2))
    else:
        per_class = " ".join(f"AP50[{k}]={v:.3f}" for k, v in res["ap50"].items())
        print(f"{o.split}: map50={res['map50']:.4f} map50_95={res['map50_95']:.4f} {per_class} images={res['images']}")
    return 0


def predict(values: dict) -> int:
    from ..options import make
    from ..specs.detect import PredictOptions
    from ..tasks import detect
    from ..tasks.apply import expand_inputs, finish_records

    o = make(PredictOptions, values)
    det = detect.load(o.weights, device=o.device)
    files = expand_inputs(o.inputs)
    dets = det.predict(files, conf=o.conf, iou=o.iou)
    for d in dets:
        if not d.error:
            print(f"{d.file}\t{len(d.scores)} boxes\t" + ", ".join(f"{l} {s:.2f}" for l, s in zip(d.labels, d.scores)))
    records = detect.write_outputs(o.out, dets, det.classes, save_txt=o.save_txt, save_json=o.save_json,
                                   sources={str(f): f for f in files})
    return finish_records(records)
