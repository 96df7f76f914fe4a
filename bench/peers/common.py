"""Shared by the benchmark's peers: IDX reading, the two architectures, per-epoch result logging.

Nothing here imports lensforge: each peer is the code a user would write without it.
"""
from __future__ import annotations

import argparse
import gzip
import json
import time
from pathlib import Path

import numpy as np

TASKS = {
    # name: (dataset folder, model, targets)
    "fmnist-cnn": ("fashion-mnist", "cnn", (0.90, 0.93)),
    "mnist-cnn": ("mnist", "cnn", (0.99, 0.994)),
    "fmnist-resnet": ("fashion-mnist", "resnet", (0.90, 0.93)),
    "mnist-resnet": ("mnist", "resnet", (0.99,)),
    # lensforge only (the peers read IDX files): the JPEG re-encoding of CIFAR-10 in the shared data.
    "cifar10-resnet": ("cifar10-jpeg.zip", "resnet", (0.90, 0.94)),
}

# The standard recipe every peer uses: what a course or a framework tutorial writes.
BATCH_SIZE = 128
LR = 1e-3           # Adam
DROPOUT = 0.3       # the course's regularisation of the dense head (the CNN only)


def read_idx(path: Path) -> np.ndarray:
    with gzip.open(path, "rb") as f:
        data = f.read()
    ndim = data[3]
    dims = [int.from_bytes(data[4 + 4 * i:8 + 4 * i], "big") for i in range(ndim)]
    return np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * ndim).reshape(dims)


def load(data_dir: str, name: str, limit: int = 0):
    d = Path(data_dir) / name
    xtr, ytr = read_idx(d / "train-images-idx3-ubyte.gz"), read_idx(d / "train-labels-idx1-ubyte.gz")
    xte, yte = read_idx(d / "t10k-images-idx3-ubyte.gz"), read_idx(d / "t10k-labels-idx1-ubyte.gz")
    if limit:
        xtr, ytr = xtr[:limit], ytr[:limit]
    mean, std = float(xtr.mean() / 255), float(xtr.std() / 255)
    return xtr, ytr.astype(np.int64), xte, yte.astype(np.int64), mean, std


def torch_model(kind: str, torch_nn):
    """The same two networks lensforge trains (models/classifiers.py), written out in plain PyTorch."""
    nn = torch_nn

    def conv_bn(cin, cout, stride=1):
        return [nn.Conv2d(cin, cout, 3, stride, 1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True)]

    if kind == "cnn":
        return nn.Sequential(*conv_bn(1, 64), nn.MaxPool2d(2), *conv_bn(64, 128), nn.MaxPool2d(2), nn.Flatten(),
                             nn.Dropout(DROPOUT), nn.Linear(128 * 7 * 7, 256), nn.ReLU(inplace=True),
                             nn.Dropout(DROPOUT), nn.Linear(256, 10))

    class Block(nn.Module):
        def __init__(self, cin, cout, stride):
            super().__init__()
            self.body = nn.Sequential(*conv_bn(cin, cout, stride)[:2], nn.ReLU(inplace=True),
                                      nn.Conv2d(cout, cout, 3, 1, 1, bias=False), nn.BatchNorm2d(cout))
            self.skip = (nn.Identity() if stride == 1 and cin == cout else
                         nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout)))
            self.act = nn.ReLU(inplace=True)

        def forward(self, x):
            return self.act(self.body(x) + self.skip(x))

    return nn.Sequential(*conv_bn(1, 32), Block(32, 32, 1), Block(32, 64, 2), Block(64, 128, 2),
                         nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(128, 10))


def peer_args(description: str) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=description)
    ap.add_argument("--task", choices=sorted(TASKS), required=True)
    ap.add_argument("--data-dir", required=True)
    ap.add_argument("--epochs", type=int, required=True)
    ap.add_argument("--cap", type=float, default=0.0,
                    help="stop after the epoch that passes this many seconds (0 = no time cap)")
    ap.add_argument("--stop-at", type=float, default=0.0,
                    help="stop after the first epoch whose test accuracy reaches this (0 = run every epoch)")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--limit", type=int, default=0, help="use only the first N training images")
    ap.add_argument("--result", required=True, help="JSON-lines file: a header, then one line per epoch")
    return ap.parse_args()


class EpochLog:
    """Appends one JSON line per epoch. `train_elapsed` sums the epochs' training time (what the
    time-to-accuracy figures use); `elapsed` also counts the per-epoch test evaluations; both start
    at the first training step (imports and data loading excluded, for every peer alike)."""

    def __init__(self, path: str, header: dict):
        self.path = Path(path)
        self.path.write_text(json.dumps({"header": header}) + "\n")
        self.start = None
        self.epoch = 0
        self.train_total = 0.0

    def begin(self):
        if self.start is None:
            self.start = time.perf_counter()

    def elapsed(self) -> float:
        return time.perf_counter() - self.start if self.start is not None else 0.0

    def end_epoch(self, train_seconds: float, images: int, test_accuracy: float, cap: float = 0.0,
                  stop_at: float = 0.0) -> bool:
        """Log the epoch; True when the peer should stop: the target accuracy reached (stop_at) or
        the time cap passed (cap, counting evaluations too); 0 turns either off."""
        self.epoch += 1
        self.train_total += train_seconds
        row = {"epoch": self.epoch, "train_seconds": round(train_seconds, 3), "images": images,
               "train_elapsed": round(self.train_total, 3),
               "elapsed": round(self.elapsed(), 3), "test_accuracy": round(float(test_accuracy), 5)}
        reached = bool(stop_at) and float(test_accuracy) >= stop_at
        capped = bool(cap) and self.elapsed() > cap
        if reached or capped:
            row["stopped"] = "target reached" if reached else "time cap"
        with self.path.open("a") as f:
            f.write(json.dumps(row) + "\n")
        print(json.dumps(row), flush=True)
        return reached or capped
