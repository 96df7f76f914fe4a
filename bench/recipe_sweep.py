"""Run several `lensforge classify train` configurations side by side (on one GPU) and collect
their per-epoch test accuracy: a quick way to choose recipe defaults before confirming them on CPU.

    python bench/recipe_sweep.py --data-dir DIR --out sweep.json --parallel 8 \
        --run "fm-base: --data fashion-mnist" --run "fm-e12: --data fashion-mnist --epochs 12"
"""
from __future__ import annotations

import argparse
import csv
import json
import os
import shlex
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--data-dir", required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--parallel", type=int, default=4)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--run", action="append", default=[],
                    help="NAME: lensforge classify train arguments (architecture too: --width 64 --blocks 2)")
    ap.add_argument("--common", default="", help="arguments added to every run")
    a = ap.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="sweep-"))
    env = dict(os.environ, OMP_NUM_THREADS=str(a.threads), PYTHONUNBUFFERED="1")
    env["PYTHONPATH"] = str(Path(__file__).resolve().parents[1] / "src") + os.pathsep + env.get("PYTHONPATH", "")
    todo = []
    for spec in a.run:
        name, args = spec.split(":", 1)
        todo.append((name.strip(), shlex.split(args) + shlex.split(a.common)))
    running, results = [], {}
    while todo or running:
        while todo and len(running) < a.parallel:
            name, args = todo.pop(0)
            out = tmp / name
            cmd = [sys.executable, "-m", "lensforge", "classify", "train", "--data-dir", a.data_dir, "--no-progress",
                   "--out", str(out), *args]
            log = open(tmp / f"{name}.log", "w")
            running.append((name, args, out, subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT),
                            time.time()))
        time.sleep(1)
        for item in list(running):
            name, args, out, proc, t0 = item
            if proc.poll() is None:
                continue
            running.remove(item)
            rows = list(csv.DictReader(open(out / "metrics.csv"))) if (out / "metrics.csv").exists() else []
            res = json.loads((out / "results.json").read_text()) if (out / "results.json").exists() else {}
            res.pop("per_class", None)
            acc = [float(r.get("test_accuracy", "nan")) for r in rows]
            results[name] = {"args": args, "rc": proc.returncode, "wall": round(time.time() - t0, 1),
                             "epoch_test_accuracy": acc, "results": res,
                             "log_tail": (tmp / f"{name}.log").read_text()[-600:] if proc.returncode else ""}
            print(f"{name}: rc={proc.returncode} final={res.get('test_accuracy')} plain={res.get('test_accuracy_plain')} "
                  f"per-epoch={' '.join(f'{x:.4f}' for x in acc)}", flush=True)
            Path(a.out).write_text(json.dumps(results, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
