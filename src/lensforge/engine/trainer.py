"""The one training loop every lensforge task runs.

A task supplies a model, a `Batches` of training data, `training_step` (loss for one batch) and
`evaluate` (metrics after each epoch); the loop owns everything else: optimiser, schedule,
precision, EMA, clipping, checkpoints, resume, early stopping, progress and metrics.csv.
"""
from __future__ import annotations

import csv
import io
import math
import random
import signal
import sys
import time
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch
from tqdm.auto import tqdm

from ..errors import UsageError
from ..fileio import write_text
from .checkpoint import save_checkpoint
from .config import TrainConfig  # noqa: F401  (re-exported: tasks import it from here)
from .device import Runtime, select_runtime
from .ema import EMA
from .schedule import lr_factor


class Task(Protocol):
    model: torch.nn.Module
    train_batches: Any   # lensforge.data.loader.Batches

    def training_step(self, model: torch.nn.Module, batch) -> tuple[torch.Tensor, dict[str, torch.Tensor]]: ...
    def evaluate(self, model: torch.nn.Module) -> dict[str, float]: ...
    def checkpoint_meta(self) -> dict: ...


class Interrupted(Exception):
    """Raised after Ctrl-C/SIGTERM once last.pt holds the exact position to resume from."""


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2 ** 32)
    torch.manual_seed(seed)


def build_optimizer(model: torch.nn.Module, cfg: TrainConfig) -> torch.optim.Optimizer:
    """Weight decay on weight matrices/kernels only: decaying norms and biases only hurts."""
    decay = [p for p in model.parameters() if p.requires_grad and p.dim() > 1]
    no_decay = [p for p in model.parameters() if p.requires_grad and p.dim() <= 1]
    groups = [{"params": decay, "weight_decay": cfg.weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    if cfg.optimizer == "sgd":
        return torch.optim.SGD(groups, lr=cfg.lr, momentum=cfg.momentum, nesterov=True)
    return torch.optim.AdamW(groups, lr=cfg.lr, betas=(0.9, 0.99))


def _rng_state() -> dict:
    state = {"torch": torch.get_rng_state(), "python": random.getstate()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _set_rng_state(state: dict) -> None:
    torch.set_rng_state(state["torch"])
    random.setstate(tuple(x if not isinstance(x, list) else tuple(x) for x in state["python"]))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def write_metrics_csv(path: Path, rows: list[dict]) -> None:
    keys: list[str] = []
    for row in rows:
        keys += [k for k in row if k not in keys]
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=keys)
    writer.writeheader()
    for row in rows:
        writer.writerow({k: (f"{v:.6g}" if isinstance(v, float) else v) for k, v in row.items()})
    write_text(path, buf.getvalue())


def _improved(value: float, best: float | None, mode: str) -> bool:
    return best is None or (value > best if mode == "max" else value < best)


@dataclass
class FitResult:
    history: list[dict]
    best_epoch: int
    best_value: float | None
    train_seconds: float
    runtime: Runtime
    stopped_early: bool


def fit(task: Task, cfg: TrainConfig, run_dir: str | Path, resume: dict | None = None) -> FitResult:
    """Train `task.model` for cfg.epochs, writing metrics.csv and weights/{last,best}.pt to run_dir.

    `resume` is a loaded last.pt: training continues at the exact step it stopped at, with
    the same optimiser, schedule, EMA, RNG state and metrics history.
    """
    cfg.validate()
    run_dir = Path(run_dir)
    (run_dir / "weights").mkdir(parents=True, exist_ok=True)
    rt = select_runtime(cfg.device, cfg.precision)
    seed_everything(cfg.seed)
    fmt = torch.channels_last if rt.channels_last else torch.contiguous_format
    model = task.model.to(rt.device, memory_format=fmt)
    opt = build_optimizer(model, cfg)
    ema = EMA(model, cfg.ema) if cfg.ema > 0 else None
    step_model = torch.compile(model) if cfg.compile else model
    loader = task.train_batches
    steps_per_epoch = len(loader)
    total_steps = steps_per_epoch * cfg.epochs

    epoch, start_step, history, best, best_epoch = 0, 0, [], None, 0
    accum: dict[str, float] = {}
    train_seconds, bad_epochs = 0.0, 0
    if resume is not None:
        model.load_state_dict(resume["model"])
        opt.load_state_dict(resume["optimizer"])
        if ema is not None and resume.get("ema"):
            ema.load_state_dict(resume["ema"])
        epoch, start_step = resume["epoch"], resume["step_in_epoch"]
        history, accum = list(resume["history"]), dict(resume.get("accum", {}))
        best, best_epoch = resume["best"]["value"], resume["best"]["epoch"]
        train_seconds, bad_epochs = resume["train_seconds"], resume.get("bad_epochs", 0)
        if hasattr(task, "load_state_dict") and resume.get("task_state") is not None:
            task.load_state_dict(resume["task_state"])
        _set_rng_state(resume["rng"])

    def payload(weights_model, position_epoch, position_step, full=True) -> dict:
        p = {**task.checkpoint_meta(), "model": weights_model.state_dict(), "config": asdict(cfg),
             "runtime": rt.describe(), "epoch": position_epoch, "step_in_epoch": position_step,
             "scheduler": {"kind": cfg.schedule, "warmup": cfg.warmup, "total_steps": total_steps,
                           "step": position_epoch * steps_per_epoch + position_step},
             "history": history, "best": {"value": best, "epoch": best_epoch, "monitor": cfg.monitor},
             "train_seconds": train_seconds}
        if full:
            p.update(optimizer=opt.state_dict(), ema=ema.state_dict() if ema else None, rng=_rng_state(),
                     accum=accum, bad_epochs=bad_epochs,
                     task_state=task.state_dict() if hasattr(task, "state_dict") else None)
        return p

    def on_sigterm(signum, frame):
        raise KeyboardInterrupt
    old_handler = signal.signal(signal.SIGTERM, on_sigterm) if _main_thread() else None
    stopped_early = False
    step = start_step
    try:
        while epoch < cfg.epochs:
            model.train()
            t0 = time.perf_counter()
            bar = tqdm(total=steps_per_epoch, initial=start_step, desc=f"epoch {epoch + 1}/{cfg.epochs}",
                       disable=None if cfg.progress else True, leave=False, file=sys.stderr, dynamic_ncols=True)
            sums = {k: torch.tensor(v) for k, v in accum.items()}
            n_batches = int(accum.get("_batches", 0))
            for step, batch in enumerate(loader.epoch(epoch, start_step), start=start_step):
                lr = cfg.lr * lr_factor(epoch * steps_per_epoch + step, total_steps, cfg.schedule, cfg.warmup)
                for g in opt.param_groups:
                    g["lr"] = lr
                with rt.autocast():
                    loss, logs = task.training_step(step_model, batch)
                opt.zero_grad(set_to_none=True)
                loss.backward()
                if cfg.clip_grad > 0:
                    torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.clip_grad)
                opt.step()
                if ema is not None:
                    ema.update(model)
                for k, v in logs.items():
                    sums[k] = sums.get(k, 0) + v.detach().float()
                n_batches += 1
                bar.update(1)
                if step % 25 == 0 or step == steps_per_epoch - 1:
                    bar.set_postfix({k: f"{float(v) / n_batches:.4f}" for k, v in sums.items() if k != "_batches"})
                    if not math.isfinite(float(loss.detach())):
                        raise FloatingPointError(f"training diverged: loss is {float(loss.detach())} at epoch {epoch + 1} "
                                                 f"step {step}; lower --lr or enable --clip-grad")
                # Checkpointed step position = next step to run.
                accum = {k: float(v) for k, v in sums.items()} | {"_batches": n_batches}
                start_step = step + 1
            bar.close()
            train_seconds += time.perf_counter() - t0
            eval_model = ema.model if ema is not None else model
            metrics = task.evaluate(eval_model)
            row = {"epoch": epoch + 1}
            row.update({f"train_{k}": float(v) / max(1, n_batches) for k, v in sums.items() if k != "_batches"})
            row.update(metrics)
            row.update(lr=lr, seconds=round(time.perf_counter() - t0, 3))
            history.append(row)
            epoch, start_step, accum = epoch + 1, 0, {}
            write_metrics_csv(run_dir / "metrics.csv", history)
            monitored = metrics.get(cfg.monitor)
            if monitored is None or _improved(monitored, best, cfg.mode):
                best, best_epoch, bad_epochs = monitored, epoch, 0
                save_checkpoint(run_dir / "weights" / "best.pt", payload(eval_model, epoch, 0, full=False))
            else:
                bad_epochs += 1
            save_checkpoint(run_dir / "weights" / "last.pt", payload(model, epoch, 0))
            shown = " ".join(f"{k}={v:.4f}" for k, v in row.items() if isinstance(v, float) and k != "lr")
            print(f"epoch {epoch}/{cfg.epochs} {shown}", file=sys.stderr)  # also where bars are off
            if cfg.early_stop and monitored is not None and bad_epochs >= cfg.early_stop:
                stopped_early = True
                print(f"early stop: {cfg.monitor} did not improve for {cfg.early_stop} epochs", file=sys.stderr)
                break
    except KeyboardInterrupt:
        save_checkpoint(run_dir / "weights" / "last.pt", payload(model, epoch, start_step))
        raise Interrupted(f"interrupted at epoch {epoch + 1} step {start_step}; saved {run_dir / 'weights' / 'last.pt'}; "
                          f"continue with --resume {run_dir}") from None
    finally:
        if old_handler is not None:
            signal.signal(signal.SIGTERM, old_handler)
    return FitResult(history, best_epoch, best, train_seconds, rt, stopped_early)


def _main_thread() -> bool:
    import threading
    return threading.current_thread() is threading.main_thread()
