"""Handler of `lensforge runs list` (options: lensforge.specs.runs)."""
from __future__ import annotations

import json
import time
from pathlib import Path

import yaml

#: The figure that says how good a run is, per task, in order of preference.
KEY_METRICS = ("test_accuracy", "test_miou", "test_map50", "test_mse", "test_neg_elbo_nats", "fd", "test_psnr",
               "val_accuracy", "val_loss")


def list_(values: dict) -> int:
    from ..options import make
    from ..specs.runs import RunsOptions

    o = make(RunsOptions, values)
    root = Path(o.root)
    rows = []
    for cfg_path in sorted(root.glob("*/*/config.yaml")):
        run = cfg_path.parent
        try:
            cfg = yaml.safe_load(cfg_path.read_text()) or {}
        except (OSError, yaml.YAMLError):
            continue
        if o.task and cfg.get("task") != o.task:
            continue
        res_path = run / "results.json"
        results = json.loads(res_path.read_text()) if res_path.is_file() else {}
        key = next((k for k in KEY_METRICS if isinstance(results.get(k), (int, float))), None)
        metric = f"{key}={results[key]:.4g}" if key else ("unfinished" if not results else "-")
        stamp = run.stat().st_mtime
        rows.append((stamp, f"{time.strftime('%Y-%m-%d %H:%M', time.localtime(stamp))}  {cfg.get('task', '?'):10s} "
                            f"{str(cfg.get('data', '')):24.24s} {str(cfg.get('model', cfg.get('model_name', ''))):10.10s} "
                            f"{metric:28s} {run}"))
    if not rows:
        print(f"no runs under {root}")
        return 0
    for _, line in sorted(rows, reverse=True):
        print(line)
    return 0
