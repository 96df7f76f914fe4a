"""Peer 1, the course's way done right: a Dataset returning per-sample tensors, a DataLoader,
fp32, Adam, a standard loop with model.train()/model.eval() and torch.no_grad() for testing."""
from __future__ import annotations

import sys
import time
from pathlib import Path

import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import BATCH_SIZE, LR, TASKS, EpochLog, load, peer_args, torch_model  # noqa: E402


class ImageSet(Dataset):
    def __init__(self, x, y, mean, std):
        self.x, self.y, self.mean, self.std = x, y, mean, std

    def __len__(self):
        return len(self.x)

    def __getitem__(self, i):
        img = torch.from_numpy(self.x[i].astype("float32") / 255.0)
        return ((img - self.mean) / self.std).unsqueeze(0), int(self.y[i])


def main() -> int:
    a = peer_args(__doc__)
    data, kind, _ = TASKS[a.task]
    xtr, ytr, xte, yte, mean, std = load(a.data_dir, data, a.limit)
    torch.manual_seed(0)
    dev = torch.device(a.device)
    train = DataLoader(ImageSet(xtr, ytr, mean, std), batch_size=BATCH_SIZE, shuffle=True)
    test = DataLoader(ImageSet(xte, yte, mean, std), batch_size=512)
    model = torch_model(kind, nn).to(dev)
    opt = torch.optim.Adam(model.parameters(), lr=LR)
    loss_fn = nn.CrossEntropyLoss()
    log = EpochLog(a.result, {"peer": "pytorch", "precision": "fp32", "batch_size": BATCH_SIZE,
                              "recipe": f"Adam lr {LR}, batch {BATCH_SIZE}, no augmentation, DataLoader num_workers=0"})
    log.begin()
    for _ in range(a.epochs):
        model.train()
        t0, seen = time.perf_counter(), 0
        for x, y in train:
            x, y = x.to(dev), y.to(dev)
            opt.zero_grad()
            loss = loss_fn(model(x), y)
            loss.backward()
            opt.step()
            seen += len(y)
        if dev.type == "cuda":
            torch.cuda.synchronize()
        train_s = time.perf_counter() - t0
        model.eval()
        correct = 0
        with torch.no_grad():
            for x, y in test:
                correct += (model(x.to(dev)).argmax(1).cpu() == y).sum().item()
        if log.end_epoch(train_s, seen, correct / len(yte), a.cap, a.stop_at):
            break
    return 0


if __name__ == "__main__":
    sys.exit(main())
