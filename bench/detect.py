"""Detection benchmarks: model sizes, CPU training throughput, predict latency, a BCCD pilot.

    python bench/detect.py sizes                                   # params + GFLOPs per model
    flock /tmp/lensforge-cpu.lock python bench/detect.py speed      # train img/s, predict ms per 640x480 image
    flock /tmp/lensforge-cpu.lock python bench/detect.py pilot --seconds 150   # does the BCCD loss fall?
    flock /tmp/lensforge-cpu.lock lensforge detect train --data ../shared/datasets/bccd-voc.zip   # the full run

BCCD is read from ../shared/datasets/bccd-voc.zip as a user's download would be. Results go to
bench/results/detect_*.json with the command, the machine and whether the lock was held.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
BCCD = REPO.parent / "shared" / "datasets" / "bccd-voc.zip"
SQUEEZE = REPO.parent / "shared" / "weights" / "squeezenet1_1-features-caffe.pth"
RESULTS = REPO / "bench" / "results"
MODELS = ("n", "s", "m", "sq")


def machine() -> dict:
    return {"cpu": platform.processor() or platform.machine(), "cores": os.cpu_count(), "torch": torch.__version__,
            "threads": torch.get_num_threads(), "load_avg_at_start": os.getloadavg()[0]}


def build(model: str, nc: int):
    from lensforge.models import create_model
    kw = {"backbone_weights": str(SQUEEZE)} if model == "sq" and SQUEEZE.exists() else {}
    return create_model(f"det-{model}", num_classes=nc, **kw)


def sizes(args) -> dict:
    from lensforge.detect.flops import count_flops, count_params
    out = {}
    for m in MODELS:
        net = build(m, 3)
        out[m] = {"params_M": round(count_params(net) / 1e6, 3),
                  "gflops_640": round(count_flops(net, 640, 640) / 1e9, 2),
                  f"gflops_{args.image_size}": round(count_flops(net, args.image_size, args.image_size) / 1e9, 2),
                  "gflops_640_80cls": round(count_flops(build(m, 80), 640, 640) / 1e9, 2)}
        print(m, out[m])
    return out


def _bccd_train(size: int):
    from lensforge.data.boxes import load_detection
    from lensforge.data.detaugment import decode_samples
    ds = load_detection(BCCD)
    return ds, decode_samples(ds.splits["train"] + ds.splits["val"], size)


def speed(args) -> dict:
    """Training img/s (augmented batches + forward + loss + backward + AdamW step) and predict latency
    (decode JPEG, letterbox, forward, NMS) per 640x480 BCCD test image, per model size."""
    from lensforge.data.detaugment import AugmentConfig, make_batch
    from lensforge.detect.loss import DetectionLoss
    from lensforge.tasks.detect import Detector

    ds, data = _bccd_train(args.image_size)
    out = {}
    for m in args.models:
        torch.manual_seed(0)
        net = build(m, 3)
        crit = DetectionLoss(3, 16, (8, 16, 32))
        opt = torch.optim.AdamW(net.parameters(), 1e-3)
        rng = np.random.default_rng(0)
        times = []
        for step in range(args.steps + 1):
            t0 = time.perf_counter()
            idx = rng.integers(0, len(data), args.batch).tolist()
            x, t = make_batch(data, idx, rng, AugmentConfig())
            loss, _ = crit(net(x.float() / 255), t)
            opt.zero_grad()
            loss.backward()
            opt.step()
            if step:  # the first step pays one-off allocation costs
                times.append(time.perf_counter() - t0)
        train_ips = args.batch * len(times) / sum(times)
        det = Detector(net.eval(), ds.classes, args.image_size, torch.device("cpu"))
        files = [s.read() for s in ds.splits["test"][: args.predict_images + 1]]
        from lensforge.data.imageio import read_image
        lat = []
        for i, f in enumerate(files):
            t0 = time.perf_counter()  # JPEG decode + letterbox + forward + NMS + mapping back
            det.predict([read_image(f, "RGB")], conf=0.25)
            if i:
                lat.append(time.perf_counter() - t0)
        out[m] = {"train_img_per_s": round(train_ips, 2), "train_step_s_median": round(float(np.median(times)), 3),
                  "predict_ms_per_640x480": round(1000 * float(np.median(lat)), 1), "batch": args.batch,
                  "steps_timed": len(times), "image_size": args.image_size}
        print(m, out[m], flush=True)
    return out


def pilot(args) -> dict:
    """Train det-{model} on BCCD train+val with the default augmentation for a fixed time; report the
    mean loss per window of steps (it must fall) and the throughput."""
    from lensforge.data.detaugment import AugmentConfig
    from lensforge.detect.loss import DetectionLoss
    from lensforge.engine.config import TrainConfig
    from lensforge.engine.ema import EMA
    from lensforge.engine.trainer import build_optimizer
    from lensforge.tasks.detect import DetBatches

    _, data = _bccd_train(args.image_size)
    torch.manual_seed(0)
    net = build(args.model, 3).train()
    cfg = TrainConfig(lr=args.lr, weight_decay=5e-4)
    opt = build_optimizer(net, cfg)
    ema = EMA(net, 0.998)
    crit = DetectionLoss(3, 16, (8, 16, 32))
    batches = DetBatches(data, args.batch, AugmentConfig(), epochs=100, close_mosaic=10, seed=0)
    losses, parts, t_start, n_img, epoch = [], [], time.perf_counter(), 0, 0
    warm = 20
    while time.perf_counter() - t_start < args.seconds:
        for x, t in batches.epoch(epoch):
            step = len(losses)
            for g in opt.param_groups:
                g["lr"] = args.lr * min(1.0, (step + 1) / warm)
            loss, logs = crit(net(x), t)
            opt.zero_grad()
            loss.backward()
            torch.nn.utils.clip_grad_norm_(net.parameters(), 10.0)
            opt.step()
            ema.update(net)
            losses.append(float(loss))
            parts.append({k: float(v) for k, v in logs.items()})
            n_img += len(x)
            if step % 5 == 0:
                print(f"step {step} loss {float(loss):.3f} {time.perf_counter() - t_start:.0f}s", flush=True)
            if time.perf_counter() - t_start >= args.seconds:
                break
        epoch += 1
    secs = time.perf_counter() - t_start
    w = max(1, len(losses) // 5)
    windows = [round(float(np.mean(losses[i:i + w])), 3) for i in range(0, len(losses), w)]
    first = {k: round(float(np.mean([p[k] for p in parts[:w]])), 3) for k in parts[0]}
    last = {k: round(float(np.mean([p[k] for p in parts[-w:]])), 3) for k in parts[0]}
    out = {"model": args.model, "image_size": args.image_size, "batch": args.batch, "lr": args.lr, "steps": len(losses),
           "seconds": round(secs, 1), "train_img_per_s": round(n_img / secs, 2), "loss_windows": windows,
           "first_window_parts": first, "last_window_parts": last}
    print(json.dumps(out, indent=1))
    return out


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("what", choices=("sizes", "speed", "pilot"))
    p.add_argument("--image-size", type=int, default=320)
    p.add_argument("--models", nargs="+", default=list(MODELS))
    p.add_argument("--model", default="n")
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--steps", type=int, default=4)
    p.add_argument("--predict-images", type=int, default=5)
    p.add_argument("--seconds", type=float, default=150)
    p.add_argument("--lr", type=float, default=2e-3)
    p.add_argument("--tag", default="")
    args = p.parse_args()
    info = machine()
    result = {"sizes": sizes, "speed": speed, "pilot": pilot}[args.what](args)
    RESULTS.mkdir(parents=True, exist_ok=True)
    name = f"detect_{args.what}{('_' + args.tag) if args.tag else ''}.json"
    doc = {"command": "python bench/detect.py " + " ".join(sys.argv[1:]), "machine": info,
           "lock_held": os.environ.get("LENSFORGE_LOCK_HELD", "unknown"), "result": result}
    (RESULTS / name).write_text(json.dumps(doc, indent=2) + "\n")
    print(f"wrote {RESULTS / name}")


if __name__ == "__main__":
    main()
