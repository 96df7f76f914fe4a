"""What one whitenet training step costs on this machine, per 1024 images: SGD against Muon, batch
1024 against airbench94_muon's 2000, eager against torch.compile, width 64 against 96.

    flock /tmp/lensforge-cpu.lock python bench/whitenet_step_cost.py

Random images and labels (the cost does not depend on the pixels), bf16 autocast and channels_last
as `classify train` runs on a CPU with AMX/AVX512-BF16; the median of the timed steps after the
warm-up ones (compile: after its first, compiling step). Writes bench/results/whitenet_step_cost.json.
"""
from __future__ import annotations

import statistics
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from lensforge.engine.config import TrainConfig
from lensforge.engine.device import select_runtime
from lensforge.engine.trainer import build_optimizer
from lensforge.fileio import write_json
from lensforge.models import create_model

OUT = Path(__file__).resolve().parent / "results" / "whitenet_step_cost.json"
CASES = [  # (optimizer, batch, compile, width)
    ("sgd", 1024, False, 64), ("muon", 1024, False, 64), ("muon", 2000, False, 64), ("muon", 512, False, 64),
    ("muon", 1024, True, 64), ("sgd", 1024, False, 96), ("muon", 1024, False, 96),
]


def step_seconds(optimizer: str, batch: int, compiled: bool, width: int, warm: int = 2, timed: int = 4) -> float:
    torch.manual_seed(0)
    rt = select_runtime("cpu", "auto")
    net = create_model("whitenet", in_channels=3, num_classes=10, image_size=[32, 32], width=width)
    net = net.to(memory_format=torch.channels_last)
    opt = build_optimizer(net, TrainConfig(optimizer=optimizer, lr=0.87, weight_decay=2.3e-3))
    model = torch.compile(net) if compiled else net
    x = torch.rand(batch, 3, 32, 32).contiguous(memory_format=torch.channels_last)
    y = torch.randint(0, 10, (batch,))
    times = []
    for i in range(warm + timed):
        t = time.perf_counter()
        with rt.autocast():
            loss = F.cross_entropy(model(x).float(), y, label_smoothing=0.2)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if i >= warm:
            times.append(time.perf_counter() - t)
    return statistics.median(times)


def main() -> None:
    rows = []
    for optimizer, batch, compiled, width in CASES:
        s = step_seconds(optimizer, batch, compiled, width)
        rows.append({"optimizer": optimizer, "batch": batch, "compile": compiled, "width": width,
                     "step_seconds": round(s, 3), "seconds_per_1024_images": round(s * 1024 / batch, 3)})
        print(rows[-1], flush=True)
    write_json(OUT, {"command": "flock /tmp/lensforge-cpu.lock python bench/whitenet_step_cost.py",
                     "torch": torch.__version__, "threads": torch.get_num_threads(),
                     "when": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), "rows": rows})


if __name__ == "__main__":
    main()
