"""Classification time-to-accuracy: lensforge's default recipe against the tools users would
otherwise pick, on the same data and architecture, in one process tree.

    python bench/classify_speed.py --quick                 # a few minutes: checks every peer runs
    python bench/classify_speed.py --tasks fmnist-cnn      # to-target: the README's Performance table
    python bench/classify_speed.py --tasks mnist-cnn --peers lensforge
    python bench/classify_speed.py --cap 360 --lensforge-epochs 5      # the older capped comparison
    python bench/classify_speed.py --device cuda --tasks fmnist-cnn,fmnist-resnet

Peers (bench/peers/, each its own child process, one after another so they never share cores):
  pytorch    Dataset returning per-sample tensors + DataLoader, fp32, Adam, a standard loop
  lightning  LightningModule + Trainer(precision="32-true") with the same DataLoaders
  keras      Keras 3 on the torch backend, model.fit on in-memory arrays, fp32
  lensforge  `lensforge classify train` with its default recipe (only --data/--data-dir/--out given)

Default (to-target) mode: every peer other than lensforge trains until the first epoch whose test
accuracy reaches the task's highest target (0.93 Fashion-MNIST, 0.994 MNIST; --stop-at overrides)
or the epoch budget (lensforge's default, 15) runs out, with no time cap, so every ratio is a
measured time, not a bound. lensforge runs its whole default recipe (the one-cycle schedule is laid
out over its 15 epochs; stopping it early would not change its time to a target, only hide its
final score). With --cap a peer also stops after the epoch that passes the cap (evaluation
counted), as the earlier capped runs did. Each peer is one child process; its peak resident
memory (ru_maxrss from wait4, i.e. the kernel's VmHWM of that process) and CPU seconds are
recorded. Time to a target is training time
summed up to the first epoch whose test accuracy reaches it (per-epoch evaluation, imports, data
loading and model building excluded, for all peers alike). Accuracies are on the official
test set; lensforge's per-epoch accuracy is without test-time augmentation, so its time to a
target never profits from it.
Needs the `bench` extra: pip install -c constraints.txt -e '.[bench]'.
"""
from __future__ import annotations

import argparse
import csv
import datetime as dt
import json
import os
import platform
import shlex
import signal
import subprocess
import sys
import time
from pathlib import Path

import torch

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(HERE / "peers"))
from common import TASKS  # noqa: E402

PEERS = ("lensforge", "pytorch", "lightning", "keras")
PEER_SCRIPTS = {"pytorch": "torch_plain.py", "lightning": "lightning_peer.py", "keras": "keras_peer.py"}
DEFAULT_DATA_DIR = os.environ.get("LENSFORGE_DATA_DIR", str(ROOT.parent / "shared" / "datasets"))


def git_state() -> dict:
    """The commit the run's code came from, and the tracked files that differed from it (lensforge
    runs from this working tree, so an uncommitted edit there is part of what was measured)."""
    def git(*args):
        try:
            return subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True, timeout=30).stdout.strip()
        except (OSError, subprocess.SubprocessError):
            return ""
    return {"commit": git("rev-parse", "HEAD"), "modified": git("diff", "--name-only", "HEAD").splitlines()}


def machine_info(device: str) -> dict:
    cpu = platform.processor() or "unknown"
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    flags = set()
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("flags"):
                flags = set(line.split(":", 1)[1].split())
                break
    except OSError:
        pass
    info = {"cpu": cpu, "cpu_isa": [f for f in ("avx512f", "avx512_bf16", "amx_bf16", "amx_tile") if f in flags],
            "cores": os.cpu_count(), "torch_threads": torch.get_num_threads(), "torch": torch.__version__,
            "python": platform.python_version(), "platform": platform.platform(), "device": device,
            "git": git_state()}
    if device.startswith("cuda") and torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name(0)
    from importlib.metadata import PackageNotFoundError, version
    for mod in ("lightning", "keras"):
        try:
            info[mod] = version(mod)
        except PackageNotFoundError:  # an optional peer that is not installed
            info[mod] = None
    return info


def run_logged(cmd: list[str], log_path: Path, timeout: float | None, env: dict | None = None) -> tuple[int, float, dict]:
    """Run one peer as a child process; (exit code, wall seconds, resource usage). The child is
    reaped with os.wait4, whose rusage is that child's own (plus any children it reaped): ru_maxrss
    is its peak resident set (KiB on Linux), the same figure as its VmHWM in /proc/<pid>/status."""
    t0 = time.perf_counter()
    usage: dict = {}
    with open(log_path, "w") as log:
        log.write("$ " + shlex.join(cmd) + "\n")
        log.flush()
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env, cwd=ROOT)
        rc = None
        try:
            while rc is None:
                pid, status, ru = os.wait4(proc.pid, os.WNOHANG)
                if pid:
                    rc = os.waitstatus_to_exitcode(status)
                    proc.returncode = rc  # reaped here, so Popen must not wait for it again
                    usage = {"peak_rss_mib": round(ru.ru_maxrss / 1024, 1),
                             "cpu_user_s": round(ru.ru_utime, 1), "cpu_sys_s": round(ru.ru_stime, 1)}
                    break
                if timeout is not None and time.perf_counter() - t0 > timeout:
                    rc = -9
                    break
                time.sleep(0.5)
        finally:  # on a timeout, Ctrl-C or SIGTERM: never leave a peer training behind
            if proc.returncode is None and proc.poll() is None:
                proc.terminate()
                try:
                    proc.wait(30)
                except subprocess.TimeoutExpired:
                    proc.kill()
    return rc, time.perf_counter() - t0, usage


def run_peer(peer: str, task: str, a, out: Path) -> dict:
    data, model, targets = TASKS[task]
    log_path = out / f"{task}-{peer}.log"
    if peer == "lensforge":
        run_dir = out / f"{task}-lensforge-run"
        exe = Path(sys.executable).with_name("lensforge")
        launcher = [str(exe)] if exe.exists() else [sys.executable, "-m", "lensforge"]
        data_args = ["--data", str(Path(a.data_dir) / data)] if data.endswith(".zip") else \
            ["--data", data, "--data-dir", a.data_dir]
        cmd = [*launcher, "classify", "train", *data_args, "--no-progress", "--out", str(run_dir)]
        if model != "cnn":
            cmd += ["--model", model]
        if a.epochs_override:
            cmd += ["--epochs", str(a.epochs_override)]
        if a.device != "cpu":
            cmd += ["--device", a.device]
        env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(ROOT / "src"), os.environ.get("PYTHONPATH", "")]))
        rc, wall, usage = run_logged(cmd, log_path, a.cap * 3 + 600 if a.cap else None, env=env)
        rows = list(csv.DictReader(open(run_dir / "metrics.csv"))) if (run_dir / "metrics.csv").exists() else []
        res = json.loads((run_dir / "results.json").read_text()) if (run_dir / "results.json").exists() else {}
        cfg = (run_dir / "config.yaml").read_text() if (run_dir / "config.yaml").exists() else ""
        # metrics.csv has each epoch's seconds (training + evaluation); results.json the training total.
        # Spread the evaluation time evenly over the epochs to get per-epoch training time.
        total = sum(float(r["seconds"]) for r in rows)
        eval_each = (total - res["train_seconds"]) / len(rows) if rows and res.get("train_seconds") else 0.0
        elapsed, train_elapsed, epochs = 0.0, 0.0, []
        for r in rows:
            elapsed += float(r["seconds"])
            train_elapsed += float(r["seconds"]) - eval_each
            epochs.append({"epoch": int(r["epoch"]), "elapsed": round(elapsed, 3), "train_elapsed": round(train_elapsed, 3),
                           "test_accuracy": float(r["test_accuracy"])})
        steps_images = 0
        if "train:" in cfg:
            import yaml
            c = yaml.safe_load(cfg)
            n = c["splits"]["train"]
            bs = c["train"]["batch_size"]
            steps_images = (n // bs) * bs * len(rows)
        img_s = steps_images / res["train_seconds"] if res.get("train_seconds") else None
        return {"peer": "lensforge", "rc": rc, "command": shlex.join(["lensforge", *cmd[len(launcher):]]), "wall_seconds": round(wall, 1),
                "precision": res.get("precision"), "epochs": epochs, "train_images_per_s": img_s,
                "final_accuracy": float(rows[-1]["test_accuracy"]) if rows else None,
                "final_accuracy_tta": res.get("test_accuracy"), "tta": res.get("tta"), **usage,
                "recipe": "lensforge default recipe (see config.yaml in the run folder)"}
    result_file = out / f"{task}-{peer}.jsonl"
    epochs_budget = a.epochs_override or a.epochs
    cmd = [sys.executable, str(HERE / "peers" / PEER_SCRIPTS[peer]), "--task", task, "--data-dir", a.data_dir,
           "--epochs", str(epochs_budget), "--device", a.device, "--result", str(result_file)]
    if a.cap:
        cmd += ["--cap", str(a.cap)]
    stop_at = stop_target(task, a)
    if stop_at:
        cmd += ["--stop-at", str(stop_at)]
    if a.limit:
        cmd += ["--limit", str(a.limit)]
    rc, wall, usage = run_logged(cmd, log_path, a.cap * 2 + 600 if a.cap else None)
    header, epochs = {}, []
    if result_file.exists():
        for line in result_file.read_text().splitlines():
            row = json.loads(line)
            if "header" in row:
                header = row["header"]
            else:
                epochs.append(row)
    tr = sum(e["train_seconds"] for e in epochs)
    return {"peer": peer, "rc": rc, "command": shlex.join(cmd), "wall_seconds": round(wall, 1),
            "precision": header.get("precision"), "recipe": header.get("recipe"), "epochs": epochs,
            "train_images_per_s": (sum(e["images"] for e in epochs) / tr) if tr else None,
            "final_accuracy": epochs[-1]["test_accuracy"] if epochs else None,
            "stopped": (epochs[-1].get("stopped") or "epoch budget") if epochs else None, **usage}


def stop_target(task: str, a) -> float:
    """The accuracy after which a peer stops: --stop-at, else the task's highest target unless a
    time cap was asked for (then the peers run the epoch budget or the cap, as before)."""
    if a.stop_at is not None:
        return a.stop_at
    return 0.0 if a.cap else max(TASKS[task][2])


def time_to(epochs: list[dict], target: float) -> float | None:
    for e in epochs:
        if e["test_accuracy"] >= target:
            return e["train_elapsed"]
    return None


def summarise(task: str, results: list[dict], cap: float, stop_at: float) -> dict:
    targets = TASKS[task][2]
    for r in results:
        r["time_to"] = {str(t): time_to(r["epochs"], t) for t in targets}
        r["epochs_run"] = len(r["epochs"])
        r["elapsed_total"] = r["epochs"][-1]["train_elapsed"] if r["epochs"] else None
        r["elapsed_with_eval"] = r["epochs"][-1]["elapsed"] if r["epochs"] else None
    lf = next((r for r in results if r["peer"] == "lensforge"), None)
    peers = [r for r in results if r["peer"] != "lensforge" and r["epochs"]]
    ratios = {}
    if lf and peers:
        best_ips = max((p["train_images_per_s"] or 0) for p in peers)
        if lf["train_images_per_s"] and best_ips:
            ratios["train_images_per_s"] = {"value": round(lf["train_images_per_s"] / best_ips, 2), "bound": "="}
        for t in map(str, targets):
            lt = lf["time_to"][t]
            reached = [p["time_to"][t] for p in peers if p["time_to"][t] is not None]
            if lt is None:
                ratios[f"time_to_{t}"] = {"value": None, "bound": "lensforge did not reach it"}
            elif reached:
                ratios[f"time_to_{t}"] = {"value": round(min(reached) / lt, 2), "bound": "="}
            else:  # no peer reached it: at least (longest time a peer trained) / lensforge's time
                longest = max(p["elapsed_total"] for p in peers)
                if longest >= lt:
                    ratios[f"time_to_{t}"] = {"value": round(longest / lt, 2), "bound": ">"}
                else:
                    ratios[f"time_to_{t}"] = {"value": None, "bound": "no peer reached it within its "
                                              + (f"{fmt_time(cap)} cap" if cap else "epoch budget")}
        best_acc = max(p["final_accuracy"] for p in peers)
        ratios["final_accuracy_minus_best_peer"] = {"value": round(lf["final_accuracy"] - best_acc, 4), "bound": "="}
    return {"task": task, "targets": list(targets), "cap_seconds": cap or None, "peer_stop_at": stop_at or None,
            "results": results, "lensforge_vs_fastest_peer": ratios}


def fmt_time(s: float | None, cap_note: str = "") -> str:
    if s is None:
        return f"not reached{cap_note}"
    return f"{s / 60:.1f} min" if s >= 60 else f"{s:.0f} s"


def markdown(report: dict) -> str:
    m = report["machine"]
    lines = [f"# lensforge classify: time-to-accuracy benchmark ({report['mode']})", "",
             f"- command: `{report['command']}`", f"- date: {report['date']}",
             f"- machine: {m['cpu']}" + (f" ({', '.join(m['cpu_isa'])})" if m.get("cpu_isa") else "")
             + f", {m['cores']} cores ({m['torch_threads']} torch threads)"
             + (f", GPU {m['gpu']}" if m.get("gpu") else "") + f"; device `{m['device']}`",
             f"- software: Python {m['python']}, torch {m['torch']}, lightning {m['lightning']}, keras {m['keras']} (torch backend)",
             "- time to X = training time summed over epochs until the first epoch-end test accuracy >= X "
             "(per-epoch evaluation, imports and data loading excluded, for every peer alike); "
             "lensforge's per-epoch accuracy has no test-time augmentation; 'final (TTA)' is lensforge's reported score "
             "with flip TTA where the dataset allows flips; peak RSS = the peer process's peak resident memory "
             "(ru_maxrss, data and framework included); CPU s = user + system CPU seconds of the whole process.", ""]
    for t in report["tasks"]:
        data, model, targets = TASKS[t["task"]]
        cap, stop = t.get("cap_seconds"), t.get("peer_stop_at")
        rule = [f"epoch budget {report['epochs']}"]
        if stop:
            rule.append(f"peers stop at the first epoch >= {stop}")
        rule.append(f"peers capped at {fmt_time(cap)}" if cap else "no time cap")
        lines += [f"## {data} / {model} ({', '.join(rule)})", ""]
        head = ["peer", "precision", "batch", "train img/s"] + [f"time to {x}" for x in targets] + \
               ["epochs run", "stopped by", "final acc", "final (TTA)", "peak RSS", "CPU s"]
        lines += ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
        for r in t["results"]:
            bs = 256 if r["peer"] == "lensforge" else 128
            row = [r["peer"], r["precision"] or "?", str(bs),
                   f"{r['train_images_per_s']:.0f}" if r["train_images_per_s"] else "-"]
            row += [fmt_time(r["time_to"][str(x)], f" in {fmt_time(r['elapsed_total'])}" if r["elapsed_total"] else "")
                    for x in targets]
            row += [str(r["epochs_run"]), r.get("stopped") or "its recipe's epochs",
                    f"{r['final_accuracy']:.4f}" if r["final_accuracy"] is not None else "-",
                    f"{r['final_accuracy_tta']:.4f}" if r.get("final_accuracy_tta") is not None else "-",
                    f"{r['peak_rss_mib']:,.0f} MiB" if r.get("peak_rss_mib") else "-",
                    f"{r['cpu_user_s'] + r['cpu_sys_s']:,.0f}" if r.get("cpu_user_s") is not None else "-"]
            if r["rc"] != 0:
                row[0] += f" (exit {r['rc']})"
            lines.append("| " + " | ".join(row) + " |")
        rat = t["lensforge_vs_fastest_peer"]
        if rat:
            parts = []
            for k, v in rat.items():
                if v["value"] is None:
                    parts.append(f"{k.replace('_', ' ')}: {v['bound']}")
                elif k == "final_accuracy_minus_best_peer":
                    parts.append(f"final accuracy, lensforge minus best peer: {v['value']:+.4f}")
                else:
                    what = "training throughput" if k == "train_images_per_s" else k.replace("_", " ")
                    parts.append(f"{what}: {'>' if v['bound'] == '>' else ''}{v['value']}x")
            lines += ["", "lensforge vs the fastest peer: " + "; ".join(parts) + "."]
        lines.append("")
    return "\n".join(lines)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true",
                    help="checking: Fashion-MNIST/CNN, 1 epoch each, peers on the first 10,000 images (a few minutes)")
    ap.add_argument("--tasks", default=None, help=f"comma-separated, of {', '.join(TASKS)} (default fmnist-cnn,mnist-cnn)")
    ap.add_argument("--peers", default=",".join(PEERS))
    ap.add_argument("--device", default="cpu", help="cpu or cuda")
    ap.add_argument("--data-dir", default=DEFAULT_DATA_DIR, help="folder holding mnist/ and fashion-mnist/ IDX files")
    ap.add_argument("--epochs", type=int, default=15, help="epoch budget for the peers (lensforge's default is 15)")
    ap.add_argument("--lensforge-epochs", dest="epochs_override", type=int, default=0,
                    help="pass --epochs to lensforge too and use it as everyone's budget (default: lensforge's default)")
    ap.add_argument("--cap", type=float, default=None,
                    help="seconds per peer per task, checked after each epoch (default: none; 90 with --quick)")
    ap.add_argument("--stop-at", type=float, default=None,
                    help="peers stop after the first epoch at this test accuracy (default: the task's highest "
                         "target, or never when --cap is given; 0 = never)")
    ap.add_argument("--limit", type=int, default=0, help="peers: first N training images only (checking)")
    ap.add_argument("--out", default=str(HERE / "results"), help="folder for the JSON and Markdown results")
    ap.add_argument("--tag", default="", help="appended to the results' file name (e.g. to keep a peers-only run apart)")
    a = ap.parse_args()
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    if a.quick:
        a.tasks = a.tasks or "fmnist-cnn"
        a.epochs_override = a.epochs_override or 1
        a.cap = a.cap or 90
        a.limit = a.limit or 10000
    a.tasks = (a.tasks or "fmnist-cnn,mnist-cnn").split(",")
    a.cap = a.cap or 0.0
    bad = [t for t in a.tasks if t not in TASKS]
    if bad:
        ap.error(f"unknown task(s) {bad}")
    mode = "quick" if a.quick else "capped" if a.cap else "to-target"
    stamp = dt.datetime.now(dt.timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    out = Path(a.out)
    work = ROOT / "bench" / "out" / f"{mode}-{stamp}"
    work.mkdir(parents=True, exist_ok=True)
    out.mkdir(parents=True, exist_ok=True)
    report = {"mode": mode, "date": stamp, "command": shlex.join(["python", "bench/classify_speed.py", *sys.argv[1:]]),
              "machine": machine_info(a.device), "epochs": a.epochs_override or a.epochs, "tasks": []}
    base = out / f"classify_speed-{a.device.split(':')[0]}-{mode}-{'+'.join(a.tasks)}{'-' + a.tag if a.tag else ''}"
    for task in a.tasks:
        results = []
        for peer in a.peers.split(","):
            print(f"[{dt.datetime.now():%H:%M:%S}] {task}: {peer} ...", flush=True)
            r = run_peer(peer, task, a, work)
            print(f"    rc={r['rc']} wall={r['wall_seconds']}s img/s={r['train_images_per_s']} final={r['final_accuracy']} "
                  f"epochs={len(r['epochs'])}", flush=True)
            results.append(r)
            report["tasks"] = [t for t in report["tasks"] if t["task"] != task] + \
                [summarise(task, results, a.cap, stop_target(task, a))]
            Path(f"{base}.json").write_text(json.dumps(report, indent=1))
            Path(f"{base}.md").write_text(markdown(report))
    print(Path(f"{base}.md").read_text())
    return 0


if __name__ == "__main__":
    sys.exit(main())
