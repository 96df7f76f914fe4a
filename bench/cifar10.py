"""CIFAR-10 with lensforge's defaults: the whitenet recipe that `classify train` picks for 32x32
colour images, timed and scored from the command line exactly as a user runs it.

    python bench/cifar10.py                          # the default run (under the CPU lock)
    LENSFORGE_BENCH_LOCKED=1 python bench/cifar10.py # when the caller holds the lock already
    python bench/cifar10.py --name e20 -- --epochs 20    # extra CLI options after --
    python bench/cifar10.py --collect RUN_DIR --name x   # record a finished run

The data is ../shared/datasets/cifar10-jpeg.zip, read as a user's folder (train/<class>/*.jpg,
test/<class>/*.jpg): a JPEG re-encoding of CIFAR-10 (~30.5 dB), so expect about a point below
published lossless figures. Results: bench/results/cifar10_<name>.{json,md}.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import shlex
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
DATA = REPO.parent / "shared" / "datasets" / "cifar10-jpeg.zip"
RESULTS = REPO / "bench" / "results"
LOCK = "/tmp/lensforge-cpu.lock"


def cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def cpu_flags() -> list[str]:
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return []
    flags = next((line.split(":", 1)[1].split() for line in text.splitlines() if line.startswith("flags")), [])
    return sorted(f for f in flags if f.startswith(("amx", "avx512_bf16")))


def collect(run_dir: Path, command: str, wall: float | None, load_before: float) -> dict:
    results = json.loads((run_dir / "results.json").read_text())
    rows = (run_dir / "metrics.csv").read_text().splitlines()
    header = rows[0].split(",")
    history = [dict(zip(header, r.split(","))) for r in rows[1:]]
    acc_key = "test_accuracy" if "test_accuracy" in header else "val_accuracy"
    elapsed, per_epoch = 0.0, []
    for h in history:
        per_epoch.append({"epoch": int(h["epoch"]), "test_accuracy_plain": float(h[acc_key]),
                          "seconds": float(h["seconds"])})
    # Time to X from the epoch rows (their seconds include the per-epoch evaluation, so these are
    # upper bounds on training time), on the plain per-epoch accuracy (no TTA).
    time_to = {}
    for target in (0.90, 0.92, 0.93, 0.94):
        total = 0.0
        for e in per_epoch:
            total += e["seconds"]
            if e["test_accuracy_plain"] >= target:
                time_to[f"{target:.2f}"] = {"epoch": e["epoch"], "seconds_incl_eval": round(total, 1)}
                break
    return {
        "command": command,
        "machine": {"cpu": cpu_name(), "cores": os.cpu_count(), "bf16_flags": cpu_flags(),
                    "load_avg_before": load_before},
        "test_accuracy": results.get("test_accuracy"), "test_accuracy_plain": results.get("test_accuracy_plain"),
        "tta": results.get("tta"), "train_seconds": results.get("train_seconds"),
        "train_minutes": round(results.get("train_seconds", 0) / 60, 2), "wall_seconds": wall,
        "epochs": len(history), "device": results.get("device"), "precision": results.get("precision"),
        "time_to_plain_accuracy": time_to, "per_epoch": per_epoch,
    }


def markdown(name: str, r: dict) -> str:
    lines = [f"# CIFAR-10 (JPEG re-encoding), lensforge defaults: {name}", "",
             f"- command: `{r['command']}`",
             f"- machine: {r['machine']['cpu']}, {r['machine']['cores']} cores, {', '.join(r['machine']['bf16_flags'])}; "
             + ("load average before the run " + (f"{r['machine']['load_avg_before']:.2f}"
                                                  if r['machine']['load_avg_before'] is not None else "not recorded")),
             f"- device/precision: {r['device']} / {r['precision']}",
             f"- **test accuracy {r['test_accuracy']:.4f}** (TTA {r['tta']}; {r['test_accuracy_plain']:.4f} without) "
             f"after {r['epochs']} epochs, **{r['train_minutes']:.1f} min of training** "
             f"({r['train_seconds']:.0f} s; per-epoch evaluation excluded)", "",
             "time to plain (no-TTA) accuracy, epoch seconds summed incl. evaluation: " + (", ".join(
                 f"{k} at epoch {v['epoch']} ({v['seconds_incl_eval'] / 60:.1f} min)" for k, v in r["time_to_plain_accuracy"].items())
                 or "none of 0.90-0.94 reached"), "",
             "| epoch | test accuracy (no TTA) | epoch seconds (incl. evaluation) |", "|---|---|---|"]
    lines += [f"| {e['epoch']} | {e['test_accuracy_plain']:.4f} | {e['seconds']:.1f} |" for e in r["per_epoch"]]
    return "\n".join(lines) + "\n"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--name", default="whitenet_default")
    ap.add_argument("--collect", type=Path, help="record an already finished run folder")
    ap.add_argument("--command", help="the command that made the --collect run (for the record)")
    ap.add_argument("extra", nargs="*", help="options passed on to lensforge classify train")
    args = ap.parse_args()
    if not DATA.exists() and args.collect is None:
        sys.exit(f"{DATA}: not found (the CIFAR-10 JPEG zip from shared/datasets)")
    load_before = None if args.collect is not None else os.getloadavg()[0]   # unknown for a collected run
    if args.collect is not None:
        run_dir, wall = args.collect, None
        if not (run_dir / "results.json").is_file() or not (run_dir / "metrics.csv").is_file():
            sys.exit(f"{run_dir}: not a finished lensforge run (no results.json and metrics.csv)")
        command = args.command or f"(collected from {run_dir})"
    else:
        run_dir = REPO / "bench" / "out" / "cifar10" / args.name
        cli = [str(REPO / ".venv" / "bin" / "lensforge"), "classify", "train", "--data", str(DATA),
               "--out", str(run_dir), "--no-progress", *args.extra]
        if run_dir.exists():
            sys.exit(f"{run_dir}: exists; remove it or pick another --name")
        command = "lensforge classify train --data ../shared/datasets/cifar10-jpeg.zip " + " ".join(
            shlex.quote(a) for a in args.extra)
        t0 = time.perf_counter()
        # LENSFORGE_BENCH_LOCKED=1: the caller already holds the CPU lock (a queue of runs)
        locked = os.environ.get("LENSFORGE_BENCH_LOCKED") == "1"
        subprocess.run(cli if locked else ["flock", LOCK, *cli], check=True)
        wall = round(time.perf_counter() - t0, 1)
    record = collect(run_dir, command.strip(), wall, load_before)
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / f"cifar10_{args.name}.json").write_text(json.dumps(record, indent=2) + "\n")
    (RESULTS / f"cifar10_{args.name}.md").write_text(markdown(args.name, record))
    print(markdown(args.name, record))


if __name__ == "__main__":
    main()
