"""Handlers of `lensforge faceswap extract|train|convert` (options: lensforge.specs.faceswap)."""
from __future__ import annotations

import sys

from .common import print_run


def extract(values: dict) -> int:
    from ..tasks import faceswap

    inputs, out = values.pop("inputs"), values.pop("out")
    res = faceswap.extract(inputs, out, **values)
    s = res.summary
    for e in res.errors:
        print(f"error: {e['error']}", file=sys.stderr)
    for f in res.no_face:
        where = f["source"] + (f" frame {f['frame']}" if f["frame"] is not None else "")
        print(f"no face: {where}", file=sys.stderr)
    print(f"faces={s['faces_written']} images={s['images']} video_frames={s['video_frames']} "
          f"with_face={s['with_face']} no_face={s['no_face']} unreadable={s['unreadable']} "
          f"seconds_per_image={s['seconds_per_image']} detector={s['detector']}")
    print(f"faces folder: {res.out}  (alignments: {res.out / 'alignments.json'})")
    return 1 if res.errors else 0


def train(values: dict) -> int:
    from ..tasks import faceswap

    run = faceswap.train(**values)
    r = run.results
    print_run(run, f"heldout_psnr_a2a={r['heldout_psnr_a2a']:.2f} heldout_psnr_b2b={r['heldout_psnr_b2b']:.2f} "
                   f"best_epoch={r['best_epoch']}")
    return 0


def convert(values: dict) -> int:
    from ..tasks import faceswap
    from ..tasks.apply import finish_records

    weights, inputs, out = values.pop("weights"), values.pop("inputs"), values.pop("out")
    records = faceswap.convert(weights, inputs, out, **values)
    for r in records:
        if r.ok:
            v = r.values
            extra = (f"frames={v['frames']} with_face={v['frames_with_face']} fps={v['fps']:g} "
                     f"provenance={v['provenance']}") if "frames" in v else f"faces={v['faces_swapped']}"
            print(f"{r.file}\t{v['output']}\t{extra}")
    return finish_records(records)
