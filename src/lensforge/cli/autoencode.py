"""Handlers of `lensforge autoencode train|denoise|score` (options: lensforge.specs.autoencode)."""
from __future__ import annotations

import sys

from .common import print_outputs, print_run


def train(values: dict) -> int:
    from ..tasks import autoencode

    run = autoencode.train(**values)
    r = run.results
    s = r["eval_split"]
    line = f"{s}_mse={r[f'{s}_mse']:.5f} {s}_psnr={r[f'{s}_psnr']:.2f}dB"
    pca = [k for k in r if k.startswith("pca")]
    if pca:
        line += f" {pca[0]}={r[pca[0]]:.5f}"
    if f"{s}_psnr_gain_db" in r:
        line += f" noisy_psnr={r[f'{s}_noisy_psnr']:.2f}dB gain={r[f'{s}_psnr_gain_db']:.2f}dB"
    print_run(run, line)
    return 0


def denoise(values: dict) -> int:
    from ..options import make
    from ..specs.autoencode import DenoiseOptions
    from ..tasks import autoencode
    from ..tasks.apply import expand_inputs

    o = make(DenoiseOptions, values)
    records = autoencode.denoise(o.weights, expand_inputs(o.inputs), o.out, device=o.device,
                                 add_noise_sigma=o.add_noise)
    print(f"{sum(r.ok for r in records)} image(s) written to {o.out}", file=sys.stderr)
    return print_outputs(records)


def score(values: dict) -> int:
    from ..options import make
    from ..specs.autoencode import ScoreOptions
    from ..tasks import autoencode
    from ..tasks.apply import expand_inputs, finish_records

    o = make(ScoreOptions, values)
    files = expand_inputs(o.inputs) if o.inputs else []
    records = autoencode.score(o.weights, files, data=o.data, data_dir=o.data_dir, split=o.split, device=o.device,
                               download=o.download)
    autoencode.write_scores_csv(o.out, records)
    for r in [r for r in records if r.ok][:o.top]:
        v = r.values
        print(f"{v['rank']}\t{v['mse']:.5f}\t{r.file}" + (f"\t{v['label']}" if v.get("label") else "")
              + ("\t(no ink found: anomalous)" if v["reading"].startswith("resize (no ink") else ""))
    print(f"{sum(r.ok for r in records)} image(s) scored; ranking in {o.out}", file=sys.stderr)
    return finish_records(records)
