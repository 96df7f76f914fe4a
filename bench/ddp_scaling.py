"""Epoch time of classify training with 1 vs 2 data-parallel processes (gloo, CPU), same global batch.

    flock /tmp/lensforge-cpu.lock .venv/bin/python bench/ddp_scaling.py          # MNIST, 1 epoch each
    .venv/bin/python bench/ddp_scaling.py --data digits --epochs 3                # a quick look

Each configuration is a fresh job: N processes started with torchrun's environment protocol
(RANK, WORLD_SIZE, MASTER_ADDR/PORT), each with a fixed thread count: 1 process x all cores,
1 process x 1 thread, 2 processes x cores/2 threads (the machine used once, never oversubscribed). Reported: training seconds per epoch (steps only, from the engine's
train_seconds), images per second, the test accuracy reached, and the load average around the run.
Results: bench/results/ddp_scaling.{json,md}.
"""
from __future__ import annotations

import argparse
import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DATA = os.environ.get("LENSFORGE_BENCH_DATA", str(ROOT.parent / "shared" / "datasets"))
OUT = ROOT / "bench" / "out" / "ddp"
RESULTS = ROOT / "bench" / "results" / "ddp_scaling"


def worker(out: str, data: str, epochs: int, batch: int, width: int) -> None:
    from lensforge.engine import distributed
    from lensforge.engine.device import select_runtime
    from lensforge.engine.trainer import fit
    from lensforge.tasks.classify import ClassifyTask, predict_logits
    from lensforge.tasks.lifecycle import options_for

    ctx = distributed.init("cpu")
    values = dict(data=data, data_dir=DATA, epochs=epochs, batch_size=batch, width=width, precision="fp32",
                  device="cpu", progress=False, ema=0.0)
    opts, cfg = options_for(ClassifyTask, values)
    task = ClassifyTask(opts, cfg, select_runtime("cpu", "fp32"), None, frozenset(values))
    if ctx.main:
        Path(out).mkdir(parents=True, exist_ok=True)
    res = fit(task, cfg, Path(out), resume=None)
    if ctx.main:
        task.model.load_state_dict(res.best_state)
        logits, y = predict_logits(task.model, task.ds.test, task.rt)
        Path(out, "result.json").write_text(json.dumps({
            "train_seconds": res.train_seconds, "epochs": epochs, "steps_per_epoch": len(task.train_batches),
            "train_images": len(task.ds.train), "test_accuracy": (logits.argmax(1) == y).float().mean().item()}))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def job(nproc: int, threads: int, args) -> dict:
    out = OUT / f"{args.data}-{nproc}proc-{threads}thr"
    port = free_port()
    load0 = os.getloadavg()[0]
    t0 = time.perf_counter()
    procs = []
    for rank in range(nproc):
        env = {**os.environ, "RANK": str(rank), "LOCAL_RANK": str(rank), "WORLD_SIZE": str(nproc),
               "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port), "OMP_NUM_THREADS": str(threads),
               "PYTHONPATH": str(ROOT / "src")}
        if nproc == 1:
            for k in ("RANK", "LOCAL_RANK", "WORLD_SIZE"):
                env.pop(k)
        procs.append(subprocess.Popen([sys.executable, __file__, "worker", str(out), args.data, str(args.epochs),
                                       str(args.batch_size), str(args.width)], env=env))
    codes = [p.wait() for p in procs]
    if any(codes):
        raise SystemExit(f"{nproc}-process job failed: exit codes {codes}")
    r = json.loads((out / "result.json").read_text())
    per_epoch = r["train_seconds"] / r["epochs"]
    return {"processes": nproc, "threads_per_process": threads, "seconds_per_epoch": round(per_epoch, 2),
            "images_per_second": round(r["steps_per_epoch"] * args.batch_size / per_epoch, 1),
            "test_accuracy": round(r["test_accuracy"], 4), "wall_seconds": round(time.perf_counter() - t0, 1),
            "load_before": round(load0, 2), "load_after": round(os.getloadavg()[0], 2)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", default="mnist")
    ap.add_argument("--epochs", type=int, default=1)
    ap.add_argument("--batch-size", type=int, default=256)
    ap.add_argument("--width", type=int, default=32)
    args = ap.parse_args()
    cores = os.cpu_count() or 2
    # 1 process using every core, 1 process on one core, N processes on one core each
    rows = [job(1, cores, args), job(1, 1, args), job(2, max(1, cores // 2), args)]
    speedup = rows[0]["seconds_per_epoch"] / rows[2]["seconds_per_epoch"]
    res = {"note": "seconds per epoch are steps only (the engine's train_seconds / epochs)", "data": args.data, "epochs": args.epochs, "global_batch": args.batch_size, "model": f"cnn width {args.width}",
           "machine_cores": os.cpu_count(), "rows": rows, "speedup_2proc_vs_1proc_all_cores": round(speedup, 3),
           "command": f"flock /tmp/lensforge-cpu.lock .venv/bin/python bench/ddp_scaling.py --data {args.data} "
                      f"--epochs {args.epochs} --batch-size {args.batch_size} --width {args.width}"}
    from lensforge.fileio import write_json, write_text

    write_json(RESULTS.with_suffix(".json"), res)
    md = [f"# DDP scaling: classify {args.data}, {res['model']}, global batch {args.batch_size}, fp32, gloo", "",
          "| processes | threads each | s/epoch | images/s | test accuracy | load before/after |", "|---|---|---|---|---|---|"]
    md += [f"| {r['processes']} | {r['threads_per_process']} | {r['seconds_per_epoch']} | {r['images_per_second']} | "
           f"{r['test_accuracy']} | {r['load_before']}/{r['load_after']} |" for r in rows]
    md += ["", f"Speed-up 2 processes vs 1 process on all {cores} cores: {speedup:.2f}x. "
           "OpenMP threads spin-wait at every parallel region, so on a machine shared with other jobs the "
           "multi-threaded single process suffers far more than single-threaded processes do: compare the load "
           f"columns before reading the ratio. Command: `{res['command']}`"]
    write_text(RESULTS.with_suffix(".md"), "\n".join(md) + "\n")
    print("\n".join(md))


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "worker":
        worker(sys.argv[2], sys.argv[3], int(sys.argv[4]), int(sys.argv[5]), int(sys.argv[6]))
    else:
        main()
