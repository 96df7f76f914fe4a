"""Hand-written argparse helpers of the CLI modules not yet generated from lensforge.specs (being removed)."""
from __future__ import annotations

import argparse


def add_train_options(p: argparse.ArgumentParser, *, epochs: int, batch_size: int, lr: float,
                      weight_decay: float | None = None, ema: float = 0.0, schedule: str = "onecycle",
                      warmup: float = 0.15, **_not_flags) -> None:
    """Options every trainable task shares; names match TrainConfig fields. Defaults are the
    task's recipe (lensforge.recipes), so the CLI and the Python API train the same way."""
    g = p.add_argument_group("training")
    g.add_argument("--epochs", type=int, default=epochs, help=f"epochs to train (default {epochs})")
    g.add_argument("--batch-size", type=int, default=batch_size, help=f"batch size (default {batch_size})")
    g.add_argument("--lr", type=float, default=lr, help=f"peak learning rate (default {lr})")
    g.add_argument("--optimizer", choices=["adamw", "sgd"], default="adamw", help="adamw, or sgd with Nesterov momentum")
    g.add_argument("--weight-decay", type=float, default=weight_decay,
                   help=f"weight decay (default {weight_decay if weight_decay is not None else '0.05 adamw, 5e-4 sgd'})")
    g.add_argument("--schedule", choices=["onecycle", "cosine", "constant"], default=schedule,
                   help=f"learning-rate schedule after warm-up (default {schedule})")
    g.add_argument("--warmup", type=float, default=warmup, help=f"fraction of steps spent warming up (default {warmup})")
    g.add_argument("--ema", type=float, default=ema,
                   help=f"EMA decay of weights, 0 = off (default {ema or 'off'}; e.g. 0.999)")
    g.add_argument("--clip-grad", type=float, default=0.0, help="max gradient norm (default off)")
    g.add_argument("--early-stop", type=int, default=0, metavar="PATIENCE",
                   help="stop after PATIENCE epochs without validation improvement (needs --val-fraction)")
    g.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    g.add_argument("--device", default="auto", help="auto (CUDA if present), cpu, cuda, cuda:N")
    g.add_argument("--precision", choices=["auto", "bf16", "fp16", "fp32"], default="auto",
                   help="auto = bf16 where the hardware has fast bf16, else fp32")
    g.add_argument("--compile", action="store_true", help="torch.compile the model (10-25 s start-up)")
    g.add_argument("--no-progress", dest="progress", action="store_false", help="no progress bars")
    g.add_argument("--out", default=None, help="run folder (default runs/<task>/<data>-<model>[-N])")
    g.add_argument("--resume", default=None, metavar="RUN_DIR", help="continue an interrupted run exactly where it stopped")


def train_kwargs(args: argparse.Namespace) -> dict:
    keys = ["epochs", "batch_size", "lr", "optimizer", "schedule", "warmup", "ema", "clip_grad", "early_stop",
            "seed", "device", "precision", "compile", "progress"]
    return {k: getattr(args, k) for k in keys + ["weight_decay"]}


def add_data_options(p: argparse.ArgumentParser, default: str | None = "digits") -> None:
    g = p.add_argument_group("data")
    g.add_argument("--data", default=default, required=default is None,
                   help="dataset name (digits, mnist, fashion-mnist, cifar10) or a folder/.zip of root/<class>/images")
    g.add_argument("--data-dir", default=None,
                   help="where named datasets live as DIR/<name>/<official files> (default $LENSFORGE_DATA_DIR "
                        "or ~/.cache/lensforge/datasets)")
    g.add_argument("--no-download", dest="download", action="store_false",
                   help="never download; fail with the path where the files are expected")


