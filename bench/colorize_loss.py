"""Colourisation's per-pixel soft cross-entropy: the autograd formulation it replaced vs the fused one.

    flock /tmp/lensforge-cpu.lock .venv/bin/python bench/colorize_loss.py

One training step of the default colouriser (U-Net base 32, depth 3, batch 64 of 32x32 CIFAR-sized
images, every in-gamut ab bin as a class) timed as its parts: U-Net forward + backward alone, and the
loss forward + backward in each formulation on the same logits. Both give the same loss and gradient
(tests/test_colorize.py); only the time differs. Writes bench/results/colorize_loss.json.
"""
from __future__ import annotations

import json
import os
import platform
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from lensforge.models import create_model  # noqa: E402
from lensforge.tasks.colorize import ab_bins, soft_cross_entropy  # noqa: E402


def autograd_loss(logits, idx, w, pixel_w):
    """The formulation used until this change: (N,Q) log_softmax and gather, autograd backward."""
    q, k = logits.shape[1], idx.shape[1]
    logp = logits.permute(0, 2, 3, 1).reshape(-1, q).log_softmax(1)
    flat = lambda t: t.permute(0, 2, 3, 1).reshape(-1, k)  # noqa: E731
    return ((-(logp.gather(1, flat(idx)) * flat(w)).sum(1)) * pixel_w.reshape(-1)).mean()


def median_seconds(fn, reps: int = 15) -> float:
    fn()
    times = []
    for _ in range(reps):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return sorted(times)[len(times) // 2]


def main() -> None:
    torch.manual_seed(0)
    b, h, w_, k = 64, 32, 32, 5
    q = len(ab_bins())
    net = create_model("unet", in_channels=1, out_channels=q, base=32, depth=3)
    x = torch.rand(b, 1, h, w_)
    idx = torch.randint(0, q, (b, k, h, w_))
    wt = torch.rand(b, k, h, w_)
    wt = wt / wt.sum(1, keepdim=True)
    pixel_w = torch.rand(b, h, w_) + 0.5

    def network():
        net.zero_grad(set_to_none=True)
        net(x).float().sum().backward()

    logits = net(x).detach().float().requires_grad_()

    def run(loss_fn):
        def step():
            logits.grad = None
            loss_fn(logits, idx, wt, pixel_w).backward()
        return step

    net_s = median_seconds(network)
    old_s = median_seconds(run(autograd_loss))
    new_s = median_seconds(run(soft_cross_entropy))
    out = {"command": "python bench/colorize_loss.py", "machine": f"{platform.machine()}, {os.cpu_count()} cores",
           "threads": torch.get_num_threads(), "load_average_at_start": os.getloadavg()[0],
           "shape": {"batch": b, "bins": q, "height": h, "width": w_, "soft_targets": k},
           "unet_forward_backward_s": round(net_s, 4),
           "loss_forward_backward_s": {"autograd_log_softmax_gather": round(old_s, 4), "fused": round(new_s, 4)},
           "loss_speedup": round(old_s / new_s, 2),
           "loss_share_of_step": {"autograd": round(old_s / (net_s + old_s), 3), "fused": round(new_s / (net_s + new_s), 3)},
           "step_speedup": round((net_s + old_s) / (net_s + new_s), 3)}
    dest = ROOT / "bench" / "results" / "colorize_loss.json"
    dest.write_text(json.dumps(out, indent=2) + "\n")
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
