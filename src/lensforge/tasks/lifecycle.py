"""One run lifecycle for every trainable task.

A task declares only what is specific to it, as a `TrainableTask` subclass:

    setup()          load data, choose the network (self.model_name, self.model_kwargs)
    training_step()  loss of one batch (the engine's protocol, with train_batches)
    evaluate()       metrics after each epoch
    final_results()  test metrics, figures and tables, once training is done

and `run()` does the rest, the same way for every task: options from the recipe and the caller,
resume, the run folder (created only once setup succeeded, removed again if the run dies before
its first checkpoint), config.yaml, the engine (`fit`), loading the best weights `fit` hands
back, results.json, curves.png and report.html. docs/architecture.md walks through adding a task.
"""
from __future__ import annotations

import shutil
import sys
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import torch

from ..engine import distributed
from ..engine.checkpoint import load_checkpoint, save_checkpoint
from ..engine.config import RunOptions, TrainConfig
from ..engine.device import Runtime, select_runtime
from ..engine.trainer import FitResult, fit
from ..errors import UsageError
from ..fileio import write_json
from ..models import create_model
from ..options import make, split
from ..recipes import RECIPES
from ..runs import new_run_dir, write_config


@dataclass
class Run:
    """A finished training run: its folder, results.json's content and the per-epoch history."""

    dir: Path
    results: dict
    history: list[dict] = field(default_factory=list)

    @property
    def best_weights(self) -> Path:
        return self.dir / "weights" / "best.pt"


#: fit_recipe_to_data: a recipe's batch stands where the data gives it this many steps per epoch
#: (whitenet's 1024 on CIFAR-10's 50,000 images: 48); smaller data gets a smaller batch.
MIN_STEPS_PER_EPOCH = 40


class TrainableTask:
    """Base of every trainable task. Class attributes say what the task is; hooks say what it does."""

    name: ClassVar[str]                       # "classify": the CLI word, the runs/ folder, the checkpoint's task
    Options: ClassVar[type]                   # its options dataclass (torch-free, lensforge/specs/<task>.py)
    #: On a CPU with precision "auto", run in this precision instead of the runtime's choice (None: keep it).
    cpu_auto_precision: ClassVar[str | None] = None
    #: Options whose meaning needs a held-out split; refused when the task has none.
    needs_validation: ClassVar[tuple[str, ...]] = ("early_stop",)
    #: Adam's betas for the engine's optimiser (the model's); a GAN's generator may want (0.5, 0.999).
    adam_betas: ClassVar[tuple[float, float]] = (0.9, 0.99)

    model: torch.nn.Module
    model_name: str
    model_kwargs: dict
    train_batches: Any

    def __init__(self, opts, cfg: TrainConfig, rt: Runtime, resume_state: dict | None = None,
                 given: frozenset[str] = frozenset()):
        self.opts, self.cfg, self.rt, self.resume_state = opts, cfg, rt, resume_state
        self.given = given                             # option names the caller set (not recipe defaults)
        self.figures: list[tuple[str, str]] = []       # (caption, file in the run folder) for the report
        self.tables: list[tuple[str, list[dict]]] = []
        self.choices: list[str] = []                   # what the recipe adapted, said before training
        self.setup()
        if resume_state is not None:                   # the network exactly as it was started
            self.model_name, self.model_kwargs = resume_state["model_name"], resume_state["model_kwargs"]
        check_parameter_memory(self)   # before allocating: a 1024 px cnn has a 2G-weight dense layer
        torch.manual_seed(cfg.seed)
        self.model = self.build_model()

    # ------------------------------------------------------------------ shared by the tasks' setup()
    def fit_recipe_to_data(self, n_train: int) -> None:
        """Scale the recipe to a small training set, for options the caller did not set.

        The recipes are tuned on 50k-60k images. On a few hundred (a user's folder: ORL faces, 320
        training images) batch 256 gives one or two steps per epoch and a one-cycle warm-up of a
        single step: measured 0.087 test accuracy on ORL. So: the batch is the largest power of two
        with at least 40 steps per epoch (16..recipe; 40 lets whitenet's batch of 1024 stand on
        CIFAR-10's 50,000 images: 48 steps), the peak lr scales with sqrt(batch) as for
        Adam-type optimisers (linearly for SGD and muon's SGD part; muon's kernel rate with sqrt),
        without an explicit --epochs such a small set's run gets at least 600 steps, and a
        run shorter than the weight EMA's horizon (1/(1-decay) steps) gets a horizon of a fifth of
        the run (an EMA of 0.999 over a 44-step run is mostly the random initialisation). Runs on
        the 50-60k-image sets keep the recipe exactly.
        On resume nothing changes: the run continues with the settings it started with.
        """
        if self.resume_state is not None:
            return
        cfg, recipe = self.cfg, RECIPES.get(self.name, {})
        small = n_train // cfg.batch_size < MIN_STEPS_PER_EPOCH   # the data cannot feed the recipe's batch
        if "batch_size" not in self.given:
            batch = cfg.batch_size
            while batch > 16 and n_train // batch < MIN_STEPS_PER_EPOCH:
                batch //= 2
            if batch != cfg.batch_size:
                # Adam-type steps are normalised, so their lr scales with sqrt(batch); SGD's with batch
                # (muon's --lr is its SGD part's; its kernels' normalised steps follow sqrt, below).
                sgd = cfg.optimizer in ("sgd", "muon")
                ratio = batch / cfg.batch_size
                scale = ratio ** (1.0 if sgd else 0.5)
                self.choices.append(f"batch {batch} (recipe {cfg.batch_size}: {n_train} training images would give "
                                    f"{n_train // cfg.batch_size} steps per epoch)")
                cfg.batch_size = batch
                if "lr" not in self.given:
                    cfg.lr = float(f"{cfg.lr * scale:.3g}")
                    rule = "batch ratio" if sgd else "sqrt(batch ratio)"
                    self.choices.append(f"lr {cfg.lr:g} (recipe lr scaled by {rule})")
                if cfg.optimizer == "muon" and "muon_lr" not in self.given:
                    cfg.muon_lr = float(f"{cfg.muon_lr * ratio ** 0.5:.3g}")
                    self.choices.append(f"muon-lr {cfg.muon_lr:g} (recipe muon-lr scaled by sqrt(batch ratio))")
        if "epochs" not in self.given and small:
            steps = max(1, n_train // cfg.batch_size)
            need = -(-600 // steps)
            if need > cfg.epochs:
                self.choices.append(f"{need} epochs (recipe {recipe.get('epochs', cfg.epochs)}: at least 600 steps)")
                cfg.epochs = need
        total = max(1, n_train // cfg.batch_size) * cfg.epochs
        if "ema" not in self.given and cfg.ema > 0 and 1 / (1 - cfg.ema) > total:
            ema = max(0.0, round(1 - 5 / total, 4))
            self.choices.append(f"ema {ema:g} (recipe {cfg.ema:g} averages over more steps than the run has)")
            cfg.ema = ema

    # ------------------------------------------------------------------ hooks a task implements
    def setup(self) -> None:
        """Load data and set self.model_name / self.model_kwargs (and train_batches)."""
        raise NotImplementedError

    def build_model(self) -> torch.nn.Module:
        return create_model(self.model_name, **self.model_kwargs)

    def run_name(self) -> str:
        data = str(getattr(self.opts, "data", "") or "run")
        stem = data if data.replace("-", "_").isidentifier() else Path(data.rstrip("/")).stem
        return f"{stem}-{getattr(self.opts, 'model', self.model_name)}"

    def title(self) -> str:
        return f"lensforge {self.name}: {self.run_name()}"

    def config_extra(self) -> dict:
        """What config.yaml records besides the options (splits, preprocessing, augmentation...)."""
        return {}

    def summary(self) -> str | None:
        """One line printed before training: what was found and chosen, and why."""
        return None

    def extra_meta(self) -> dict:
        """Checkpoint entries besides weights, options and the network's (name, kwargs)."""
        return {}

    def has_validation(self) -> bool:
        return True

    def training_step(self, model, batch):
        raise NotImplementedError

    def evaluate(self, model) -> dict[str, float]:
        return {}

    def final_results(self, run_dir: Path, fit: FitResult) -> dict:
        """Test metrics with self.model holding the best weights; draw figures into run_dir and list
        them in self.figures / self.tables. Returns entries for results.json."""
        return {}

    def start(self, run_dir: Path) -> None:
        """Called once the run folder exists, before training (also on resume): for work that
        lives in the run folder (gan writes per-epoch samples there and trains its judge into it)."""
        self.run_dir = run_dir

    def best_meta_updates(self) -> dict:
        """Entries final_results chose that best.pt must carry (e.g. colorize's decoding)."""
        return {}

    # ------------------------------------------------------------------ the engine's protocol
    def checkpoint_meta(self) -> dict:
        return {"task": self.name, "model_name": self.model_name, "model_kwargs": self.model_kwargs,
                "options": asdict(self.opts), **self.extra_meta()}


# ----------------------------------------------------------------------------- the runner

def options_for(task_cls: type[TrainableTask], values: dict) -> tuple[Any, TrainConfig]:
    """Task options and TrainConfig from one flat dict over the task's recipe; unknown names,
    wrong types and out-of-range values are one UsageError naming the flag."""
    recipe = RECIPES.get(task_cls.name, {})
    task_values, cfg_values = split(values, task_cls.Options, TrainConfig)
    opts = make(task_cls.Options, task_values)
    cfg = make(TrainConfig, cfg_values, defaults=recipe)
    return opts, cfg


def run(task_cls: type[TrainableTask], data: str | None = None, *, out: str | Path | None = None,
        resume: str | Path | None = None, **options) -> Run:
    """Train `task_cls` and write its complete run folder; `resume` continues an interrupted run
    (only `progress`, and `epochs` to extend a run, may change when resuming)."""
    from ..engine import interrupts

    run_opts = make(RunOptions, {"out": None if out is None else str(out), "resume": None if resume is None else str(resume)})
    if run_opts.resume is not None:
        opts, cfg, state, run_dir = _resumed(task_cls, Path(run_opts.resume), options, data)
        created = False
    else:
        if data is not None:
            options["data"] = str(data)
        opts, cfg = options_for(task_cls, options)
        state, run_dir, created = None, None, True
    if cfg.precision == "auto" and task_cls.cpu_auto_precision and select_runtime(cfg.device, "fp32").device.type == "cpu":
        cfg.precision = task_cls.cpu_auto_precision
    ctx = distributed.init(cfg.device)          # torchrun: join the group; a single process: nothing
    rt = select_runtime(cfg.device, cfg.precision)
    task = task_cls(opts, cfg, rt, state, frozenset(options))
    check_memory(task, cfg)
    for name in task_cls.needs_validation:
        if getattr(cfg, name, None) and not task.has_validation():
            raise UsageError(f"--{name.replace('_', '-')}: {task_cls.name} has no validation split here to watch"
                             + (" (add --val-fraction)" if hasattr(opts, "val_fraction") else ""))
    if run_dir is None:
        # rank 0 picks (and creates) the folder, the others learn its name: only rank 0 writes there
        run_dir = Path(distributed.broadcast(str(new_run_dir(task_cls.name, task.run_name(), run_opts.out))
                                             if ctx.main else None))
    config = {"task": task_cls.name, **asdict(opts), "train": asdict(cfg), "runtime": rt.describe(),
              "model_name": task.model_name, "model_kwargs": task.model_kwargs, **task.config_extra()}
    if task.choices:
        config["recipe_adapted"] = task.choices
    if ctx.active:
        config["processes"] = ctx.world    # distributed: --batch-size is the global batch over these
    try:
        if ctx.main:
            task.start(run_dir)
            write_config(run_dir, config)
        else:
            TrainableTask.start(task, run_dir)
        line = task.summary()
        if line and state is None and ctx.main:
            print(line, file=sys.stderr)
        if task.choices and ctx.main:
            print("recipe adapted to the data: " + "; ".join(task.choices), file=sys.stderr)
        interrupts.point("run:before-fit")
        result = fit(task, cfg, run_dir, resume=state)
    except BaseException:
        if created and ctx.main and not (run_dir / "weights" / "last.pt").exists():
            shutil.rmtree(run_dir, ignore_errors=True)   # a failed start leaves nothing behind
        raise
    try:
        task.model.load_state_dict(result.best_state)
        task.model.eval()
        interrupts.point("run:before-report")
        if not ctx.main:   # the report is rank 0's; the others end with its figures
            return Run(run_dir, distributed.broadcast(None), result.history)
        results = {"best_epoch": result.best_epoch, "epochs_run": len(result.history),
                   "train_seconds": round(result.train_seconds, 2), **rt.describe()}
        results.update(task.final_results(run_dir, result))
        updates = task.best_meta_updates()
        if updates:
            best_path = run_dir / "weights" / "best.pt"
            best = load_checkpoint(best_path, task=task_cls.name)
            save_checkpoint(best_path, {**{k: v for k, v in best.items() if k not in ("format", "version")}, **updates})
        finish(run_dir, task.title(), results, config, task.figures, result.history, task.tables)
        distributed.broadcast(results)
    except KeyboardInterrupt:
        raise interrupts.Interrupted(f"interrupted while writing the report; training is complete; "
                                     f"--resume {run_dir} writes it again") from None
    return Run(run_dir, results, result.history)


def check_parameter_memory(task: TrainableTask) -> None:
    """Count the network's weights on the meta device (no memory allocated) and refuse a network
    whose weights, gradients and AdamW moments (4 copies) alone exceed 80% of this machine's memory."""
    total = _physical_memory()
    try:
        with torch.device("meta"):
            params = sum(p.numel() for p in task.build_model().parameters())
    except Exception:  # a network that cannot be built on meta is checked after building instead
        return
    need = params * 4 * 4
    if total and need > 0.8 * total:
        raise UsageError(f"this run needs about {need / 2 ** 30:.0f} GiB of memory for the {params / 1e6:.0f} M weights "
                         f"of {task.model_name!r} at this input size, more than this machine's "
                         f"{total / 2 ** 30:.0f} GiB: lower --image-size or choose a smaller model")


def check_memory(task: TrainableTask, cfg: TrainConfig) -> None:
    """Refuse, before anything starts, a run whose activations cannot fit in memory.

    One forward pass of a single input (the task's `input_shape`) measures the activation bytes
    per image; training keeps them for backward (x2) and the optimiser needs its own copy of the
    weights (x3 parameters). Above 80% of this machine's memory the run would be killed by the
    kernel with no message (seen: `classify train --image-size 5000`), so it is refused here.
    """
    shape = getattr(task, "input_shape", None)
    if shape is None or task.rt.device.type != "cpu":
        return
    total = _physical_memory()
    per_image = [0]

    def hook(_m, _i, out):
        if isinstance(out, torch.Tensor):
            per_image[0] += out.numel() * 4

    model = task.model
    handles = [m.register_forward_hook(hook) for m in model.modules() if not list(m.children())]
    was = model.training
    try:
        model.eval()
        with torch.no_grad():
            model(torch.zeros(1, *shape))
    finally:
        for h in handles:
            h.remove()
        model.train(was)
    params = sum(p.numel() for p in model.parameters()) * 4
    need = per_image[0] * 2 * cfg.batch_size + params * 4
    if total and need > 0.8 * total:
        gib = need / 2 ** 30
        raise UsageError(f"this run needs about {gib:.0f} GiB of memory (batch {cfg.batch_size} of "
                         f"{'x'.join(map(str, shape))} inputs), more than this machine's {total / 2 ** 30:.0f} GiB: "
                         "lower --batch-size or --image-size")


def _physical_memory() -> int:
    import os

    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        return 0


def _resumed(task_cls, run_dir: Path, options: dict, data) -> tuple[Any, TrainConfig, dict, Path]:
    last = run_dir / "weights" / "last.pt"
    if not last.exists():
        raise UsageError(f"--resume {run_dir}: no weights/last.pt there to resume from")
    changed = {k for k, v in options.items() if k not in ("progress", "epochs") and v is not None}
    if data is not None:
        changed.add("data")
    if changed:
        flags = ", ".join("--" + k.replace("_", "-") for k in sorted(changed))
        raise UsageError(f"--resume continues a run exactly as it was started; drop {flags} "
                         "(only --epochs, to extend it, and --no-progress may be given)")
    state = load_checkpoint(last, task=task_cls.name)
    opts = make(task_cls.Options, state["options"])
    cfg = TrainConfig.from_dict(state["config"])
    cfg.progress = options.get("progress", cfg.progress) if options.get("progress") is not None else cfg.progress
    done = state["epoch"]
    if options.get("epochs") is not None:
        epochs = make(TrainConfig, {"epochs": options["epochs"]}).epochs
        if epochs < done:
            raise UsageError(f"--resume {run_dir} --epochs {epochs}: the run has already done {done} epochs")
        if epochs != cfg.epochs:
            print(f"{run_dir}: extending the run from {cfg.epochs} to {epochs} epochs", file=sys.stderr)
        cfg.epochs = epochs
    elif done >= cfg.epochs or state.get("stopped_early"):
        why = "stopped early" if state.get("stopped_early") and done < cfg.epochs else f"all {cfg.epochs} epochs done"
        print(f"{run_dir}: the run is finished ({why} at epoch {done}); re-running the final report "
              f"(pass --epochs N to train further)", file=sys.stderr)
    return opts, cfg, state, run_dir


def finish(run_dir: Path, title: str, results: dict, config: dict, figures: list[tuple[str, str]],
           history: list[dict], tables: list[tuple[str, list[dict]]] = ()) -> None:
    """curves.png, results.json and report.html: the files every lensforge run folder has."""
    from ..report import plot_curves, write_report

    if history:
        plot_curves(history, run_dir / "curves.png")
        figures = [("Training curves", "curves.png")] + [f for f in figures if f[1] != "curves.png"]
    write_json(run_dir / "results.json", results)
    images = [(c, str(run_dir / f)) for c, f in figures if (run_dir / f).exists()]
    summary = {k: v for k, v in results.items() if not isinstance(v, (list, dict))}
    write_report(run_dir / "report.html", title=title, summary=summary, images=images, tables=list(tables),
                 config=config)
