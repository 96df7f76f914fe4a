"""Peer 2: PyTorch Lightning, a LightningModule + Trainer with DataLoaders, fp32 ("32-true")."""
from __future__ import annotations

import sys
import time
from pathlib import Path

import torch
from torch import nn
from torch.utils.data import DataLoader

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import BATCH_SIZE, LR, TASKS, EpochLog, load, peer_args, torch_model  # noqa: E402
from torch_plain import ImageSet  # noqa: E402

import lightning as L  # noqa: E402


class LitClassifier(L.LightningModule):
    def __init__(self, kind: str):
        super().__init__()
        self.net = torch_model(kind, nn)
        self.loss_fn = nn.CrossEntropyLoss()

    def training_step(self, batch, batch_idx):
        x, y = batch
        return self.loss_fn(self.net(x), y)

    def validation_step(self, batch, batch_idx):
        x, y = batch
        acc = (self.net(x).argmax(1) == y).float().mean()
        self.log("val_acc", acc, on_epoch=True, prog_bar=False, batch_size=len(y))

    def configure_optimizers(self):
        return torch.optim.Adam(self.parameters(), lr=LR)


class Timing(L.Callback):
    def __init__(self, log: EpochLog, cap: float, stop_at: float, n_train: int):
        self.elog, self.cap, self.stop_at, self.n_train = log, cap, stop_at, n_train
        self.t0 = self.train_s = 0.0

    def on_train_epoch_start(self, trainer, pl_module):
        self.elog.begin()
        self.t0 = time.perf_counter()

    def on_validation_start(self, trainer, pl_module):
        self.train_s = time.perf_counter() - self.t0   # validation runs once, after each training epoch

    def on_train_epoch_end(self, trainer, pl_module):
        if self.elog.end_epoch(self.train_s, self.n_train, float(trainer.callback_metrics["val_acc"]), self.cap,
                               self.stop_at):
            trainer.should_stop = True


def main() -> int:
    a = peer_args(__doc__)
    data, kind, _ = TASKS[a.task]
    xtr, ytr, xte, yte, mean, std = load(a.data_dir, data, a.limit)
    L.seed_everything(0, verbose=False)
    train = DataLoader(ImageSet(xtr, ytr, mean, std), batch_size=BATCH_SIZE, shuffle=True)
    test = DataLoader(ImageSet(xte, yte, mean, std), batch_size=512)
    log = EpochLog(a.result, {"peer": "lightning", "precision": "fp32", "batch_size": BATCH_SIZE,
                              "version": L.__version__,
                              "recipe": f"Adam lr {LR}, batch {BATCH_SIZE}, no augmentation, Trainer(precision='32-true')"})
    trainer = L.Trainer(max_epochs=a.epochs, accelerator="gpu" if a.device.startswith("cuda") else "cpu", devices=1,
                        precision="32-true", logger=False, enable_checkpointing=False, enable_progress_bar=False,
                        enable_model_summary=False, num_sanity_val_steps=0,
                        callbacks=[Timing(log, a.cap, a.stop_at, len(ytr))])
    trainer.fit(LitClassifier(kind), train, test)
    return 0


if __name__ == "__main__":
    sys.exit(main())
