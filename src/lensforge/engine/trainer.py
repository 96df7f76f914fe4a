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
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch
from tqdm.auto import tqdm

from ..errors import UsageError
from ..fileio import write_text
from . import distributed, interrupts
from .interrupts import Interrupted  # also imported from here by tasks and tests
from .checkpoint import load_checkpoint, save_checkpoint
from .config import TrainConfig  # noqa: F401  (re-exported: tasks import it from here)
from .device import Runtime, select_runtime
from .ema import EMA
from .muon import MuonSGD, split_kernels
from .schedule import lr_factor


class Task(Protocol):
    model: torch.nn.Module
    train_batches: Any   # lensforge.data.loader.Batches

    def training_step(self, model: torch.nn.Module, batch) -> tuple[torch.Tensor, dict[str, torch.Tensor]]: ...
    def evaluate(self, model: torch.nn.Module) -> dict[str, float]: ...
    def checkpoint_meta(self) -> dict: ...


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2 ** 32)
    torch.manual_seed(seed)


def build_optimizer(model: torch.nn.Module, cfg: TrainConfig, betas: tuple[float, float] = (0.9, 0.99)
                    ) -> torch.optim.Optimizer:
    """Weight decay on weight matrices/kernels only: decaying norms and biases only hurts.

    A network may instead say how to group its parameters with `optimizer_groups()`: a list of
    {"params": [...], "lr_scale": s, "decay": bool}. A group runs at s x the scheduled learning
    rate, and its weight decay is divided by s, so every decayed parameter shrinks by the same
    amount per step whatever its group's rate (whitenet's batch-norm biases learn at 64x).
    With --optimizer muon the convolution kernels of every group move to Muon groups at --muon-lr
    (engine/muon.py); a group marked "scale_invariant" keeps its kernels' norms fixed there.
    `betas` are Adam's (a task may set its own, e.g. a GAN's generator)."""
    if hasattr(model, "optimizer_groups"):
        groups = [{"params": g["params"], "lr_scale": float(g.get("lr_scale", 1.0)),
                   "weight_decay": cfg.weight_decay / float(g.get("lr_scale", 1.0)) if g.get("decay", True) else 0.0,
                   "scale_invariant": bool(g.get("scale_invariant", False))}
                  for g in model.optimizer_groups()]
    else:
        decay = [p for p in model.parameters() if p.requires_grad and p.dim() > 1]
        no_decay = [p for p in model.parameters() if p.requires_grad and p.dim() <= 1]
        groups = [{"params": decay, "weight_decay": cfg.weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    if cfg.optimizer == "sgd":
        return torch.optim.SGD(groups, lr=cfg.lr, momentum=cfg.momentum, nesterov=True)
    if cfg.optimizer == "muon":
        return MuonSGD(split_kernels(groups, cfg.muon_lr / cfg.lr), lr=cfg.lr, momentum=cfg.momentum)
    return torch.optim.AdamW(groups, lr=cfg.lr, betas=betas)


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
    #: A CPU copy of the weights saved as best.pt (the EMA weights when EMA is on), for the caller
    #: to load into its model without reading best.pt back. Always set when fit returns: on a
    #: resumed run whose best epoch came before the interruption it is read from best.pt.
    best_state: dict[str, torch.Tensor] | None = None


def _cpu_copy(state: dict) -> dict:
    return {k: v.detach().to("cpu", copy=True) if isinstance(v, torch.Tensor) else v for k, v in state.items()}


def fit(task: Task, cfg: TrainConfig, run_dir: str | Path, resume: dict | None = None) -> FitResult:
    """Train `task.model` for cfg.epochs, writing metrics.csv and weights/{last,best}.pt to run_dir.

    `resume` is a loaded last.pt: training continues at the exact step it stopped at, with the
    same optimiser, schedule, EMA, RNG state and metrics history, so the result equals an
    uninterrupted run's. A resume whose checkpoint has done cfg.epochs epochs (or more, or that
    stopped early and is not being extended) returns the stored history without training; one
    with more cfg.epochs than its run was started with extends it (the LR schedule is then
    stretched to the new length; see the comment at `_Loop.total_steps`).

    Ctrl-C or SIGTERM at any moment saves last.pt at a resumable position and raises Interrupted
    (engine/interrupts.py holds a signal that arrives inside a step, an epoch's commit or a
    checkpoint write until that is complete).
    """
    cfg.validate()
    ctx = distributed.init(cfg.device)
    with interrupts.catch():
        loop = None
        try:
            with interrupts.deferred():  # set-up is short; a signal during it stops at "fit:start"
                loop = _Loop(task, cfg, Path(run_dir), resume)
            interrupts.point("fit:start")
            return loop.run()
        except RuntimeError as e:
            if ctx.active and distributed.is_peer_failure(e):
                raise distributed.peer_failure(ctx, e, loop.run_dir if loop else Path(run_dir)) from None
            raise
        except KeyboardInterrupt:
            interrupts.stop_raising()  # a second Ctrl-C must not interrupt saving the position
            if loop is None:
                raise
            raise Interrupted(loop.save_interrupted()) from None


class _Loop:
    """fit's state. The position (epoch, step) names the next thing to do: step `step` of epoch
    `epoch` (0-based), or, when step == steps_per_epoch, that epoch's evaluation and commit.
    Every change of state is all-or-nothing with respect to Ctrl-C: one optimisation step (which
    may include a task's own inner step, e.g. a GAN's discriminator) and its position update run
    under interrupts.deferred(), and so does an epoch's commit (metrics row, best.pt, last.pt);
    whatever state lies in between (a batch being fetched, an evaluation) is discarded by an
    interrupt and redone on resume from the snapshot taken before it."""

    def __init__(self, task: Task, cfg: TrainConfig, run_dir: Path, resume: dict | None):
        self.task, self.cfg, self.run_dir = task, cfg, run_dir
        # Distributed (torchrun): only rank 0 writes anything (metrics.csv, checkpoints, lines).
        self.ctx = ctx = distributed.current()
        self.main = ctx.main
        if self.main:
            (run_dir / "weights").mkdir(parents=True, exist_ok=True)
        self.rt = rt = select_runtime(cfg.device, cfg.precision)
        seed_everything(cfg.seed)
        fmt = torch.channels_last if rt.channels_last else torch.contiguous_format
        self.model = task.model.to(rt.device, memory_format=fmt)
        if ctx.active and getattr(cfg, "sync_bn", False):
            self.model = task.model = distributed.convert_sync_bn(self.model)
        self.opt = build_optimizer(self.model, cfg, getattr(task, "adam_betas", (0.9, 0.99)))
        # Optimisers a task steps itself (a GAN's discriminator), as (optimizer, peak lr): each step sets
        # their rate from the model's schedule, scaled to their own peak, so --schedule moves both players.
        self.task_optimizers = list(task.scheduled_optimizers()) if hasattr(task, "scheduled_optimizers") else []
        self.ema = EMA(self.model, cfg.ema) if cfg.ema > 0 else None
        self.step_model = distributed.wrap(self.model)   # DDP when distributed, else the model itself
        self.step_model = torch.compile(self.step_model) if cfg.compile else self.step_model
        self.synced_networks = distributed.sync_extra_networks(task, self.model)
        self.loader = task.train_batches
        if ctx.active:
            try:
                self.loader.shard(ctx.rank, ctx.world)
            except ValueError as e:
                raise UsageError(f"{ctx.world} processes: {e}") from None
        self.steps_per_epoch = len(self.loader)
        # Extending a finished run (cfg.epochs above the epochs it was started with): the schedule
        # is a pure function of (step, total_steps) and total_steps follows cfg.epochs, so the
        # remaining steps follow the longer schedule from where it stands at the resumed step
        # (one-cycle/cosine: the LR rises from ~0 at the old end to the longer schedule's value
        # there, e.g. 14% of the peak for onecycle 15 -> 17 epochs with 15% warm-up, and decays
        # to 0 again by the new end). The epochs already done keep the LRs they were trained
        # with (their rows in metrics.csv). Deterministic: extending N -> M then resuming an
        # interrupt inside the extension reproduces the same steps.
        self.total_steps = self.steps_per_epoch * cfg.epochs
        self.epoch, self.step = 0, 0
        self.history: list[dict] = []
        self.accum: dict[str, float] = {}
        self.best, self.best_epoch, self.bad_epochs = None, 0, 0
        self.train_seconds, self.stopped_early = 0.0, False
        self.best_state: dict | None = None
        self.resumed_stopped_early = False
        if resume is not None:
            self._load(resume)
        # An interrupt during an evaluation saves the RNG and task state from before it (the
        # evaluation may have drawn random numbers or changed the task's state, e.g. a GAN's
        # sample strip). In the step phase none is needed: a step is all-or-nothing, and batches
        # are drawn from generators of their own, seeded by (seed, epoch, step) (data/loader.py;
        # every task's batches follow that rule), so between steps the global RNG does not move.
        # (Snapshotting it at every step instead costs ~45 us/step, python's random.getstate.)
        self.rng_snapshot: dict | None = None
        self.task_snapshot = None
        self.last_saved: tuple | None = None
        self.bar = None
        self.segment_start: float | None = None

    def _load(self, resume: dict) -> None:
        cfg, old_cfg = self.cfg, resume.get("config", {})
        spe_then = resume.get("steps_per_epoch")
        if spe_then is None and old_cfg.get("epochs"):  # checkpoints written before steps_per_epoch was stored
            spe_then = resume.get("scheduler", {}).get("total_steps", 0) // old_cfg["epochs"]
        world_then = int(resume.get("world_size", 1))
        if world_then != self.ctx.world:
            raise UsageError(f"{self.run_dir}: this run was trained by {world_then} process(es); resume it with the "
                             f"same number (now {self.ctx.world}) so every rank continues its own shard exactly")
        if spe_then and spe_then != self.steps_per_epoch:
            raise UsageError(f"{self.run_dir}: the training data or batch size changed since this run started "
                             f"({spe_then} batches per epoch then, {self.steps_per_epoch} now); it cannot be resumed")
        self.model.load_state_dict(resume["model"])
        self.opt.load_state_dict(resume["optimizer"])
        if self.ema is not None and resume.get("ema"):
            self.ema.load_state_dict(resume["ema"])
        self.epoch, self.step = resume["epoch"], resume["step_in_epoch"]
        self.history, self.accum = list(resume["history"]), dict(resume.get("accum") or {})
        self.best, self.best_epoch = resume["best"]["value"], resume["best"]["epoch"]
        self.train_seconds, self.bad_epochs = resume["train_seconds"], resume.get("bad_epochs", 0)
        # A run that stopped early is finished unless it is being extended past its planned epochs.
        self.resumed_stopped_early = bool(resume.get("stopped_early")) and cfg.epochs <= old_cfg.get("epochs", 0)
        if hasattr(self.task, "load_state_dict") and resume.get("task_state") is not None:
            self.task.load_state_dict(resume["task_state"])
        _set_rng_state(resume["rng"])

    # ------------------------------------------------------------------ pieces
    def lr_at(self, global_step: int) -> float:
        return self.cfg.lr * lr_factor(global_step, self.total_steps, self.cfg.schedule, self.cfg.warmup)

    @property
    def eval_model(self) -> torch.nn.Module:
        return self.ema.model if self.ema is not None else self.model

    def payload(self, weights_model, full: bool = True, rng: dict | None = None, task_state=None) -> dict:
        task, cfg = self.task, self.cfg
        p = {**task.checkpoint_meta(), "model": weights_model.state_dict(), "config": asdict(cfg),
             "runtime": self.rt.describe(), "epoch": self.epoch, "step_in_epoch": self.step,
             "steps_per_epoch": self.steps_per_epoch,
             "scheduler": {"kind": cfg.schedule, "warmup": cfg.warmup, "total_steps": self.total_steps,
                           "step": self.epoch * self.steps_per_epoch + self.step},
             "history": self.history, "best": {"value": self.best, "epoch": self.best_epoch, "monitor": cfg.monitor},
             "train_seconds": self.train_seconds, "stopped_early": self.stopped_early,
             "world_size": self.ctx.world}
        if full:
            if task_state is None and hasattr(task, "state_dict"):
                task_state = task.state_dict()
            p.update(optimizer=self.opt.state_dict(), ema=self.ema.state_dict() if self.ema else None,
                     rng=rng if rng is not None else _rng_state(), accum=self.accum, bad_epochs=self.bad_epochs,
                     task_state=task_state)
        return p

    def save_interrupted(self) -> str:
        """Save last.pt at the current position (after Ctrl-C); returns the one-line message."""
        interrupts.point("fit:saving-position")
        if self.segment_start is not None:
            self.train_seconds += time.perf_counter() - self.segment_start
        last = self.run_dir / "weights" / "last.pt"
        position = (self.epoch, self.step)
        if position != self.last_saved and self.main:  # an interrupt right after an epoch's commit: last.pt is current
            save_checkpoint(last, self.payload(self.model, rng=self.rng_snapshot, task_state=self.task_snapshot))
        if self.step >= self.steps_per_epoch:
            where = f"in epoch {self.epoch + 1} after its {self.steps_per_epoch} steps, before its evaluation"
        else:
            where = f"in epoch {self.epoch + 1} at step {self.step}/{self.steps_per_epoch}"
        return f"interrupted {where}; saved {last}; continue with --resume {self.run_dir}"

    def train_steps(self, sums: dict, n_batches: int) -> tuple[dict, int]:
        """The rest of the current epoch's steps; returns the running sums of the task's logs."""
        cfg, epoch, spe = self.cfg, self.epoch, self.steps_per_epoch
        self.model.train()
        self.bar = tqdm(total=spe, initial=self.step, desc=f"epoch {epoch + 1}/{cfg.epochs}",
                        disable=None if cfg.progress and self.main else True, leave=False, file=sys.stderr, dynamic_ncols=True)
        self.segment_start = time.perf_counter()
        for batch in self.loader.epoch(epoch, self.step):
            step = self.step
            with interrupts.deferred():  # one step and its position update: all or nothing
                interrupts.point("fit:step")
                lr = self.lr_at(epoch * spe + step)
                for g in self.opt.param_groups:
                    g["lr"] = lr * g.get("lr_scale", 1.0)
                for opt, peak in self.task_optimizers:   # a task's own optimisers (GAN's D) follow the schedule
                    for g in opt.param_groups:
                        g["lr"] = peak * lr / cfg.lr
                if self.ctx.active:  # each rank its own noise (GAN latents, dropout), reproducible per step
                    torch.manual_seed(distributed.step_seed(cfg.seed, epoch, step, self.ctx.rank))
                with self.rt.autocast():
                    loss, logs = self.task.training_step(self.step_model, batch)
                self.opt.zero_grad(set_to_none=True)
                loss.backward()
                if cfg.clip_grad > 0:
                    torch.nn.utils.clip_grad_norm_(self.model.parameters(), cfg.clip_grad)
                self.opt.step()
                if self.ema is not None:
                    self.ema.update(self.model)
                for k, v in logs.items():
                    sums[k] = sums.get(k, 0) + v.detach().float()
                n_batches += 1
                self.accum = {k: float(v) for k, v in sums.items()} | {"_batches": n_batches}
                self.step = step + 1
            interrupts.point("fit:after-step")
            self.bar.update(1)
            if step % 25 == 0 or step == spe - 1:
                self.bar.set_postfix({k: f"{float(v) / n_batches:.4f}" for k, v in sums.items() if k != "_batches"})
                if not math.isfinite(float(loss.detach())):
                    raise FloatingPointError(f"training diverged: loss is {float(loss.detach())} at epoch {epoch + 1} "
                                             f"step {step}; lower --lr or enable --clip-grad")
        self.bar.close()
        self.bar = None
        self.train_seconds += time.perf_counter() - self.segment_start
        self.segment_start = None
        return sums, n_batches

    def finish_epoch(self, sums: dict, n_batches: int, t0: float) -> None:
        """Evaluate the epoch whose steps are all done, then commit it (row, best.pt, last.pt)."""
        cfg, task, epoch, spe = self.cfg, self.task, self.epoch, self.steps_per_epoch
        interrupts.point("fit:epoch-end")
        self.task_snapshot = task.state_dict() if hasattr(task, "state_dict") else None
        self.rng_snapshot = _rng_state()
        interrupts.point("fit:evaluate")
        # Distributed: the ranks' training logs are averaged, rank 0 evaluates (the weights are the
        # same on every rank) and every rank gets its numbers: all report the same row.
        sums = distributed.average(sums, self.rt.device)
        metrics = task.evaluate(self.eval_model) if self.main else None
        metrics = distributed.broadcast(metrics)
        interrupts.point("fit:evaluated")
        row = {"epoch": epoch + 1}
        row.update({f"train_{k}": float(v) / max(1, n_batches) for k, v in sums.items() if k != "_batches"})
        row.update(metrics)
        # The LR of the epoch's last step (also when the steps ran before a resume).
        row.update(lr=self.lr_at(epoch * spe + spe - 1), seconds=round(time.perf_counter() - t0, 3))
        monitored = metrics.get(cfg.monitor)
        weights = self.run_dir / "weights"
        with interrupts.deferred():  # the epoch's commit: all or nothing
            self.history.append(row)
            self.epoch, self.step, self.accum = epoch + 1, 0, {}
            self.task_snapshot, self.rng_snapshot = None, None
            if monitored is None or _improved(monitored, self.best, cfg.mode):
                self.best, self.best_epoch, self.bad_epochs = monitored, self.epoch, 0
                self.best_state = _cpu_copy(self.eval_model.state_dict())
                improved = True
            else:
                self.bad_epochs += 1
                improved = False
            self.stopped_early = bool(cfg.early_stop and monitored is not None and self.bad_epochs >= cfg.early_stop)
            interrupts.point("fit:commit")
            if self.main:
                write_metrics_csv(self.run_dir / "metrics.csv", self.history)
                if improved:
                    save_checkpoint(weights / "best.pt", self.payload(self.eval_model, full=False))
                save_checkpoint(weights / "last.pt", self.payload(self.model))
            self.last_saved = (self.epoch, self.step)
        distributed.barrier()  # no rank starts the next epoch before last.pt is complete
        shown = " ".join(f"{k}={v:.4f}" for k, v in row.items() if isinstance(v, float) and k != "lr")
        if self.main:
            print(f"epoch {self.epoch}/{cfg.epochs} {shown}", file=sys.stderr)  # also where bars are off
        if self.stopped_early and self.main:
            print(f"early stop: {cfg.monitor} did not improve for {cfg.early_stop} epochs", file=sys.stderr)
        interrupts.point("fit:epoch-done")

    # ------------------------------------------------------------------ the loop
    def run(self) -> FitResult:
        try:
            while self.epoch < self.cfg.epochs and not self.resumed_stopped_early:
                t0 = time.perf_counter()
                sums = {k: torch.tensor(v) for k, v in self.accum.items() if k != "_batches"}
                n_batches = int(self.accum.get("_batches", 0))
                if self.step < self.steps_per_epoch:
                    sums, n_batches = self.train_steps(sums, n_batches)
                self.finish_epoch(sums, n_batches, t0)
                if self.stopped_early:
                    break
        finally:
            if self.bar is not None:  # stopped inside an epoch: clear its bar before the message
                self.bar.close()
        if self.best_state is None:  # the best epoch was saved before this process started (shared disk)
            self.best_state = load_checkpoint(self.run_dir / "weights" / "best.pt",
                                              task=self.task.checkpoint_meta().get("task"))["model"]
        interrupts.point("fit:end")
        return FitResult(self.history, self.best_epoch, self.best, self.train_seconds, self.rt,
                         self.stopped_early or self.resumed_stopped_early, self.best_state)
