"""The engine's settings, declared once (torch-free, so `--help` can be built from them).

Each task's recipe (lensforge.recipes) overrides some defaults; the CLI shows the recipe's values.
"""
from __future__ import annotations

from dataclasses import dataclass, fields

from ..options import check, option

TRAIN = "training"


@dataclass
class TrainConfig:
    epochs: int = option(10, "epochs to train", low=1, high=100000, group=TRAIN)
    batch_size: int = option(128, "global batch size: images per optimiser step, over all processes of a distributed run", low=1, high=65536, group=TRAIN)
    lr: float = option(2e-3, "peak learning rate", low=1e-9, high=10.0, group=TRAIN)
    optimizer: str = option("adamw", "adamw; sgd with Nesterov momentum; or muon: orthogonalised updates for "
                            "convolution kernels (at --muon-lr), sgd for the rest", choices=("adamw", "sgd", "muon"),
                            group=TRAIN)
    muon_lr: float = option(0.24, "peak learning rate of the convolution kernels under --optimizer muon",
                            low=1e-6, high=10.0, group=TRAIN)
    weight_decay: float | None = option(None, "weight decay", low=0.0, high=1.0, group=TRAIN,
                                        default_help="0.05 adamw, 5e-4 sgd and muon")
    momentum: float = option(0.9, "SGD momentum", low=0.0, high=0.999, group=TRAIN, cli=False)
    schedule: str = option("onecycle", "learning-rate schedule after warm-up",
                           choices=("onecycle", "cosine", "constant"), group=TRAIN)
    warmup: float = option(0.15, "fraction of all steps spent warming up", low=0.0, high=0.99, group=TRAIN)
    ema: float = option(0.0, "EMA decay of weights, 0 = off (e.g. 0.999)", low=0.0, high=0.99999, group=TRAIN)
    clip_grad: float = option(0.0, "max gradient norm, 0 = off", low=0.0, group=TRAIN)
    early_stop: int = option(0, "stop after PATIENCE epochs without validation improvement (needs a validation split)",
                             low=0, metavar="PATIENCE", group=TRAIN)
    monitor: str = option("val_accuracy", "metric that picks best.pt", group=TRAIN, cli=False)
    mode: str = option("max", "max or min of the monitored metric", choices=("max", "min"), group=TRAIN, cli=False)
    seed: int = option(0, "random seed", low=0, high=2 ** 63 - 1, group=TRAIN)
    device: str = option("auto", "auto (CUDA if present), cpu, cuda, cuda:N", group=TRAIN)
    precision: str = option("auto", "auto = bf16 where the hardware has fast bf16 and the task gains from it, else fp32",
                            choices=("auto", "bf16", "fp16", "fp32"), group=TRAIN)
    compile: bool = option(False, "torch.compile the model (10-25 s start-up)", group=TRAIN)
    progress: bool = option(True, "progress bars", negative="--no-progress", group=TRAIN)
    nproc: int = option(1, "train in N data-parallel processes on this machine (starts torchrun; --batch-size stays "
                           "the global batch); for several machines run torchrun yourself", low=1, high=1024, group=TRAIN)
    sync_bn: bool = option(False, "distributed runs: batch-norm statistics over the global batch (CUDA only)",
                           group=TRAIN)

    def __post_init__(self):
        if self.weight_decay is None:
            self.weight_decay = 0.05 if self.optimizer == "adamw" else 5e-4

    @classmethod
    def from_dict(cls, d: dict) -> "TrainConfig":
        names = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in names})

    def validate(self) -> None:
        check(self)  # the same type and range checks as the CLI


@dataclass
class RunOptions:
    """Where a training run writes, or which interrupted run it continues."""

    out: str | None = option(None, "run folder (default runs/<task>/<data>-<model>[-N])", group=TRAIN)
    resume: str | None = option(None, "continue an interrupted run exactly where it stopped", metavar="RUN_DIR",
                                group=TRAIN)
