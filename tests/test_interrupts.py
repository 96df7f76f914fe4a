"""Ctrl-C / SIGTERM at any moment of a run: one line, exit 130, and a resume that finishes exactly.

Signals are real (`signal.raise_signal`) but delivered at named instrumentation points
(`lensforge.engine.interrupts.point`), never by timing, so every case here is deterministic.
Most cases drive the engine (`fit`) with a tiny task that has every kind of state a resume must
restore; a few drive the CLI in-process, one a subprocess (for the interpreter's shutdown).
"""
from __future__ import annotations

import csv
import functools
import os
import random
import signal
import stat
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from lensforge.data.loader import Batches
from lensforge.data.sets import TensorSet
from lensforge.engine import interrupts
from lensforge.engine.checkpoint import load_checkpoint, save_checkpoint
from lensforge.engine.config import TrainConfig
from lensforge.engine.trainer import Interrupted, fit
from lensforge.fileio import atomic_open, current_umask, write_text

ROOT = Path(__file__).resolve().parents[1]
EPOCHS, STEPS = 3, 6  # the toy run: 3 epochs of 6 steps


@pytest.fixture(autouse=True)
def signals_as_in_a_terminal():
    """Start each test from the handlers an interactive launch has, whatever the runner inherited:
    a test job started in the background (`cmd &`, nohup) has SIGINT ignored, and lensforge rightly
    leaves an ignored signal ignored, so without this every delivery test would fail there."""
    saved = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    yield
    for s, h in saved.items():
        signal.signal(s, h)


def no_escape(test):
    """A KeyboardInterrupt escaping a test would stop pytest itself (reported as an interrupted
    session, not a failure): turn it into the failure it is."""
    @functools.wraps(test)
    def wrapper(*args, **kwargs):
        try:
            return test(*args, **kwargs)
        except KeyboardInterrupt:
            pytest.fail("a KeyboardInterrupt escaped (a signal was not handled where it should have been)")
    return wrapper


class ToyTask:
    """A tiny learnable task holding every kind of state that fit must restore exactly: dropout
    (global RNG inside steps), an optimiser of its own stepped inside training_step (like a GAN's
    discriminator), and an evaluation that draws from the global RNG and appends to the task's
    state (like a GAN's per-epoch samples). Its evaluation has points of its own."""

    def __init__(self, seed: int = 0):
        g = torch.Generator().manual_seed(seed)
        x = torch.randint(0, 256, (STEPS * 16, 1, 4, 4), generator=g, dtype=torch.uint8)
        y = (x.float().mean((1, 2, 3)) > 127.5).long()
        self.train_batches = Batches(TensorSet(x, y), 16, shuffle=True, drop_last=True, seed=seed)
        self.val = (x[:32].float() / 255, y[:32])
        torch.manual_seed(seed)
        self.model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(16, 8), torch.nn.ReLU(),
                                         torch.nn.Dropout(0.3), torch.nn.Linear(8, 2))
        self.aux = torch.nn.Linear(2, 1)
        self.aux_opt = torch.optim.SGD(self.aux.parameters(), lr=0.1, momentum=0.9)
        self.evals: list[float] = []

    def training_step(self, model, batch):
        x, y = batch
        logits = model(x)
        self.aux_opt.zero_grad()
        self.aux(logits.detach()).pow(2).mean().backward()
        self.aux_opt.step()
        loss = F.cross_entropy(logits, y)
        return loss, {"loss": loss.detach()}

    @torch.no_grad()
    def evaluate(self, model):
        model.eval()
        noise = torch.rand(1).item()
        interrupts.point("toy:evaluating")
        acc = (model(self.val[0]).argmax(1) == self.val[1]).float().mean().item()
        self.evals.append(noise)
        interrupts.point("toy:evaluated")  # after the task's state changed
        return {"val_accuracy": acc, "noise": noise, "evals": float(len(self.evals)),
                "aux": float(self.aux.weight.sum())}

    def checkpoint_meta(self):
        return {"task": "toy"}

    def state_dict(self):
        return {"aux": self.aux.state_dict(), "aux_opt": self.aux_opt.state_dict(), "evals": list(self.evals)}

    def load_state_dict(self, state):
        self.aux.load_state_dict(state["aux"])
        self.aux_opt.load_state_dict(state["aux_opt"])
        self.evals = list(state["evals"])


def toy_cfg(**kw) -> TrainConfig:
    return TrainConfig(**{"epochs": EPOCHS, "batch_size": 16, "lr": 0.05, "ema": 0.9, "progress": False,
                          "precision": "fp32", "device": "cpu", **kw})


def read_rows(path):
    with open(path) as f:
        return list(csv.DictReader(f))


def resume(run_dir: Path, **cfg_changes):
    state = load_checkpoint(run_dir / "weights" / "last.pt", task="toy")
    task = ToyTask()
    cfg = TrainConfig.from_dict({**state["config"], **cfg_changes})
    return task, fit(task, cfg, run_dir, resume=state)


def comparable(history):
    return [{k: v for k, v in row.items() if k != "seconds"} for row in history]


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """The uninterrupted toy run, and every point it passes, in order."""
    run_dir = tmp_path_factory.mktemp("ref")
    task = ToyTask()
    with interrupts.recording() as seen:
        result = fit(task, toy_cfg(), run_dir)
    return {"dir": run_dir, "result": result, "model": task.model.state_dict(), "points": seen,
            "last": load_checkpoint(run_dir / "weights" / "last.pt")}


def assert_same_as_reference(run_dir, task, result, reference):
    ref = reference["result"]
    assert comparable(result.history) == comparable(ref.history)  # exact: same RNG, same steps, same order
    assert [r["epoch"] for r in read_rows(run_dir / "metrics.csv")] == [str(e) for e in range(1, EPOCHS + 1)]
    for k, v in reference["model"].items():
        assert torch.equal(task.model.state_dict()[k], v), k
    assert result.best_epoch == ref.best_epoch and result.best_state.keys() == ref.best_state.keys()
    for k, v in ref.best_state.items():
        assert torch.equal(result.best_state[k], v), k
    last, ref_last = load_checkpoint(run_dir / "weights" / "last.pt"), reference["last"]
    assert (last["epoch"], last["step_in_epoch"]) == (EPOCHS, 0)
    assert last["task_state"]["evals"] == ref_last["task_state"]["evals"]


@no_escape
def test_reference_run_passes_every_point(reference):
    seen = reference["points"]
    assert seen.count("fit:step") == EPOCHS * STEPS
    for name in ("fit:start", "fit:epoch-end", "fit:evaluate", "toy:evaluating", "fit:commit", "checkpoint:write",
                 "fit:epoch-done", "fit:end"):
        assert name in seen, name
    best = reference["result"].best_state
    on_disk = load_checkpoint(reference["dir"] / "weights" / "best.pt")["model"]
    assert best.keys() == on_disk.keys() and all(torch.equal(best[k], on_disk[k]) for k in best)
    assert all(v.device.type == "cpu" for v in best.values())


# (point, nth arrival, position saved in last.pt: (epoch, step_in_epoch))
CASES = [
    ("fit:start", 1, (0, 0)),
    ("fit:step", 9, (1, 3)),                 # mid-step in epoch 2: the step completes, then it stops
    ("fit:after-step", 4, (0, 4)),
    ("fit:epoch-end", 2, (1, STEPS)),        # all steps of epoch 2 done, evaluation not
    ("toy:evaluating", 2, (1, STEPS)),       # during evaluation
    ("toy:evaluated", 2, (1, STEPS)),        # during evaluation, after it changed the task's state
    ("fit:commit", 2, (2, 0)),               # inside the epoch's commit: it completes first
    ("checkpoint:write", 1, (1, 0)),         # inside the first checkpoint write (best.pt of epoch 1)
    ("checkpoint:write", 150, (1, 0)),       # deep inside epoch 1's checkpoint writes (213 of them)
    ("fit:epoch-done", 3, (3, 0)),           # after the last epoch's commit
]


@pytest.mark.parametrize("at, nth, position", CASES, ids=[f"{a}#{n}" for a, n, _ in CASES])
@no_escape
def test_interrupt_at_each_point_then_resume_is_exact(reference, tmp_path, at, nth, position):
    task = ToyTask()
    with interrupts.armed(at, nth) as trigger, pytest.raises(Interrupted) as e:
        fit(task, toy_cfg(), tmp_path)
    assert trigger.fired
    message = str(e.value)
    assert "\n" not in message and f"--resume {tmp_path}" in message
    saved = load_checkpoint(tmp_path / "weights" / "last.pt")  # complete and loadable
    assert (saved["epoch"], saved["step_in_epoch"]) == position
    if saved["epoch"]:
        assert len(read_rows(tmp_path / "metrics.csv")) == saved["epoch"]
    assert not [p for p in (tmp_path / "weights").iterdir() if p.name.endswith(".tmp")]
    task, result = resume(tmp_path)
    assert_same_as_reference(tmp_path, task, result, reference)


@no_escape
def test_sigterm_is_handled_like_ctrl_c(reference, tmp_path):
    with interrupts.armed("fit:evaluate", 1, sig=signal.SIGTERM), pytest.raises(Interrupted):
        fit(ToyTask(), toy_cfg(), tmp_path)
    assert signal.getsignal(signal.SIGTERM) == signal.SIG_DFL  # fit put the previous handler back
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler
    task, result = resume(tmp_path)
    assert_same_as_reference(tmp_path, task, result, reference)


@no_escape
def test_more_ctrl_c_while_saving_the_position_are_held(reference, tmp_path):
    """The first Ctrl-C stops the run; more of them while last.pt is being saved (before and inside
    the write) must neither tear the file nor turn into a traceback."""
    with interrupts.armed("fit:step", 3), interrupts.armed("fit:saving-position", 1) as second, \
            interrupts.armed("checkpoint:write", 2) as third, pytest.raises(Interrupted):
        fit(ToyTask(), toy_cfg(), tmp_path)
    assert second.fired and third.fired
    saved = load_checkpoint(tmp_path / "weights" / "last.pt")
    assert (saved["epoch"], saved["step_in_epoch"]) == (0, 3)
    task, result = resume(tmp_path)
    assert_same_as_reference(tmp_path, task, result, reference)


@no_escape
def test_legacy_checkpoint_with_all_steps_done_resumes(reference, tmp_path):
    """Checkpoints from before this fix saved an interrupted evaluation as step_in_epoch ==
    steps_per_epoch (and no task/RNG snapshot); resuming one crashed with `lr` unbound."""
    with interrupts.armed("fit:epoch-end", 2), pytest.raises(Interrupted):
        fit(ToyTask(), toy_cfg(), tmp_path)
    state = load_checkpoint(tmp_path / "weights" / "last.pt")
    assert state["step_in_epoch"] == STEPS
    for key in ("steps_per_epoch", "stopped_early"):
        del state[key]
    task = ToyTask()
    result = fit(task, TrainConfig.from_dict(state["config"]), tmp_path, resume=state)
    assert comparable(result.history) == comparable(reference["result"].history)


@no_escape
def test_fuzz_interrupts_at_random_points(reference, tmp_path):
    """Runs resumed until done, each attempt hit by Ctrl-C or SIGTERM at a seeded random point (a
    random kind of point, then its nth arrival within about one epoch), until 30 interrupts in all.
    Every interrupt is one line naming --resume and leaves a loadable last.pt; every finished run
    equals the uninterrupted one exactly."""
    rng = random.Random(1234)
    counts = {name: reference["points"].count(name) for name in dict.fromkeys(reference["points"])}
    interrupted, runs = 0, 0
    while interrupted < 30:
        run_dir, runs = tmp_path / f"run{runs}", runs + 1
        for attempt in range(100):
            at = rng.choice(sorted(counts))
            nth = rng.randint(1, max(1, counts[at] // EPOCHS))
            with interrupts.armed(at, nth, sig=rng.choice([signal.SIGINT, signal.SIGINT, signal.SIGTERM])) as trig:
                try:
                    if attempt:
                        task, result = resume(run_dir)
                    else:
                        task = ToyTask()
                        result = fit(task, toy_cfg(), run_dir)
                except Interrupted as e:
                    assert trig.fired and "\n" not in str(e) and f"--resume {run_dir}" in str(e)
                    load_checkpoint(run_dir / "weights" / "last.pt")
                    interrupted += 1
                    continue
            assert not trig.fired  # a delivered signal always ends in Interrupted
            assert_same_as_reference(run_dir, task, result, reference)
            break
    assert runs >= 2


@no_escape
def test_resume_of_a_finished_run_returns_its_history_without_training(reference, tmp_path):
    fit(ToyTask(), toy_cfg(), tmp_path)
    before = (tmp_path / "weights" / "last.pt").stat().st_mtime_ns
    with interrupts.recording() as seen:
        task, result = resume(tmp_path)
    assert "fit:step" not in seen and (tmp_path / "weights" / "last.pt").stat().st_mtime_ns == before
    assert comparable(result.history) == comparable(reference["result"].history)
    best = load_checkpoint(tmp_path / "weights" / "best.pt")["model"]
    assert result.best_state is not None and all(torch.equal(result.best_state[k], best[k]) for k in best)
    task, result = resume(tmp_path, epochs=2)  # fewer epochs than done: still nothing to train
    assert len(result.history) == EPOCHS


@no_escape
def test_extending_a_finished_run(reference, tmp_path):
    """15 -> 17 in the issue; 3 -> 5 here. The schedule then follows the 5-epoch plan from step 18;
    extending, interrupted in the extension and resumed, equals extending in one go."""
    fit(ToyTask(), toy_cfg(), tmp_path / "a")
    task_a, longer = resume(tmp_path / "a", epochs=5)
    assert [r["epoch"] for r in longer.history] == [1, 2, 3, 4, 5]
    assert comparable(longer.history[:EPOCHS]) == comparable(reference["result"].history)
    lr_4 = 0.05 * (1 - (4 * STEPS - 1 - round(0.15 * 5 * STEPS)) / (5 * STEPS - round(0.15 * 5 * STEPS)))
    assert longer.history[3]["lr"] == pytest.approx(lr_4)  # the 5-epoch one-cycle at epoch 4's last step
    assert [r["epoch"] for r in read_rows(tmp_path / "a" / "metrics.csv")] == ["1", "2", "3", "4", "5"]

    fit(ToyTask(), toy_cfg(), tmp_path / "b")
    with interrupts.armed("fit:step", 4), pytest.raises(Interrupted):
        resume(tmp_path / "b", epochs=5)
    task_b, again = resume(tmp_path / "b")  # the checkpoint now carries the 5-epoch plan
    assert comparable(again.history) == comparable(longer.history)
    for k, v in task_a.model.state_dict().items():
        assert torch.equal(task_b.model.state_dict()[k], v), k


@no_escape
def test_resume_with_other_data_is_refused(tmp_path):
    from lensforge.errors import UsageError

    with interrupts.armed("fit:step", 2), pytest.raises(Interrupted):
        fit(ToyTask(), toy_cfg(), tmp_path)
    state = load_checkpoint(tmp_path / "weights" / "last.pt")
    task = ToyTask()
    task.train_batches = Batches(task.train_batches.data, 32, shuffle=True, drop_last=True)
    with pytest.raises(UsageError, match="batches per epoch"):
        fit(task, toy_cfg(), tmp_path, resume=state)


# ----------------------------------------------------------------------------- checkpoint writes

@no_escape
def test_signal_inside_torch_save_is_delivered_after_a_complete_file(tmp_path):
    """The original failure: SIGINT inside torch.save's zip writer became a RuntimeError from the
    writer's clean-up (a traceback) and no file. Now the write completes, then the interrupt."""
    payload = {"task": "toy", "model": {"w": torch.randn(64, 64)}, "history": []}
    for nth in (1, 3):
        with interrupts.armed("checkpoint:write", nth) as trigger, pytest.raises(KeyboardInterrupt):
            save_checkpoint(tmp_path / f"c{nth}.pt", payload)
        assert trigger.fired
        assert torch.equal(load_checkpoint(tmp_path / f"c{nth}.pt")["model"]["w"], payload["model"]["w"])
    # Outside catch(), the held signal goes to the handler that was installed before the write.
    got = []
    previous = signal.signal(signal.SIGTERM, lambda signum, frame: got.append(signum))
    try:
        with interrupts.armed("checkpoint:write", 2, sig=signal.SIGTERM):
            save_checkpoint(tmp_path / "t.pt", payload)
        assert got == [signal.SIGTERM]
        assert load_checkpoint(tmp_path / "t.pt")["task"] == "toy"
    finally:
        signal.signal(signal.SIGTERM, previous)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["c1.pt", "c3.pt", "t.pt"]


@no_escape
def test_deferred_inside_catch_raises_once_after_the_block():
    order = []
    with pytest.raises(KeyboardInterrupt):
        with interrupts.catch():
            with interrupts.deferred():
                signal.raise_signal(signal.SIGINT)
                order.append("after signal")
                signal.raise_signal(signal.SIGINT)  # a second press inside is the same interrupt
                order.append("block done")
            order.append("not reached")
    assert order == ["after signal", "block done"]
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler


@no_escape
def test_catch_raises_the_first_signal_and_holds_the_rest():
    order = []
    with interrupts.catch():
        try:
            signal.raise_signal(signal.SIGINT)
            order.append("not reached")
        except KeyboardInterrupt:
            order.append("caught")
            signal.raise_signal(signal.SIGINT)  # while cleaning up: held, not raised
            signal.raise_signal(signal.SIGTERM)
            order.append("clean-up done")
    assert order == ["caught", "clean-up done"]


# ----------------------------------------------------------------------------- file permissions

@no_escape
def test_atomic_writes_get_the_permissions_of_a_plain_open(tmp_path):
    old = os.umask(0o022)
    try:
        assert current_umask() == 0o022
        write_text(tmp_path / "a.txt", "x")
        with open(tmp_path / "plain.txt", "w") as f:
            f.write("x")
        assert stat.S_IMODE((tmp_path / "a.txt").stat().st_mode) == 0o644
        assert stat.S_IMODE((tmp_path / "plain.txt").stat().st_mode) == 0o644
        save_checkpoint(tmp_path / "w.pt", {"model": {}})
        assert stat.S_IMODE((tmp_path / "w.pt").stat().st_mode) == 0o644
        os.umask(0o077)
        with atomic_open(tmp_path / "private.bin") as f:
            f.write(b"x")
        assert stat.S_IMODE((tmp_path / "private.bin").stat().st_mode) == 0o600
        os.chmod(tmp_path / "a.txt", 0o664)  # replacing a file keeps its mode, as open() would
        write_text(tmp_path / "a.txt", "y")
        assert stat.S_IMODE((tmp_path / "a.txt").stat().st_mode) == 0o664
        assert (tmp_path / "a.txt").read_text() == "y"
    finally:
        os.umask(old)


# ----------------------------------------------------------------------------- the CLI

CLI_RUN = ["classify", "train", "--data", "digits", "--model", "mlp", "--epochs", "2", "--batch-size", "128",
           "--val-fraction", "0.5", "--no-progress"]


def cli(capsys, *args):
    from lensforge.cli import main

    capsys.readouterr()
    code = main(list(args))
    err = capsys.readouterr().err
    assert "Traceback" not in err and "Exception ignored" not in err, err
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler  # in-process: handlers put back
    return code, err


def cli_rows(run_dir):
    return [{k: v for k, v in r.items() if k != "seconds"} for r in read_rows(run_dir / "metrics.csv")]


@no_escape
def test_cli_fuzz_ctrl_c_then_resume_until_done(tmp_path, capsys):
    """`classify train` hit by Ctrl-C at seeded random points of the whole command (before fit,
    steps, evaluation, checkpoint writes, before the report, after it), then run again (--resume
    once last.pt exists) until it finishes: each interrupt is exit 130 with one 'lensforge:' line
    as the last line, and the finished run folder equals an uninterrupted run's."""
    ref = tmp_path / "ref"
    with interrupts.recording() as seen:
        code, _ = cli(capsys, *CLI_RUN, "--out", str(ref))
    assert code == 0
    counts = {name: seen.count(name) for name in dict.fromkeys(seen)}
    for name in ("run:before-fit", "fit:step", "fit:evaluate", "checkpoint:write", "run:before-report", "cli:done"):
        assert name in counts, name
    rng, run_dir, interrupted = random.Random(7), tmp_path / "run", 0
    pool = sorted(set(counts) - {"cli:done"})
    for _ in range(8):
        at = rng.choice(pool)
        args = ["classify", "train", "--resume", str(run_dir), "--no-progress"] \
            if (run_dir / "weights" / "last.pt").exists() else [*CLI_RUN, "--out", str(run_dir)]
        with interrupts.armed(at, rng.randint(1, max(1, counts[at] // 4))) as trigger:
            code, err = cli(capsys, *args)
        if code == 0:  # the run got through before the nth arrival
            assert not trigger.fired
            break
        assert trigger.fired and code == 130, err
        lines = err.strip().splitlines()
        assert lines[-1].startswith("lensforge: interrupted") and sum(l.startswith("lensforge:") for l in lines) == 1
        interrupted += 1
        if (run_dir / "weights" / "last.pt").exists():
            load_checkpoint(run_dir / "weights" / "last.pt")
    else:  # finish it; a Ctrl-C after the command's work is done is held: exit 0, no extra line
        with interrupts.armed("cli:done") as trigger:
            code, err = cli(capsys, "classify", "train", "--resume", str(run_dir), "--no-progress")
        assert trigger.fired and code == 0 and "lensforge:" not in err
    assert interrupted >= 5, interrupted
    assert cli_rows(run_dir) == cli_rows(ref)
    import json
    ours, theirs = (json.loads((d / "results.json").read_text()) for d in (run_dir, ref))
    assert ours["test_accuracy"] == theirs["test_accuracy"] and ours["epochs_run"] == 2


def test_ctrl_c_while_the_interpreter_shuts_down_is_not_a_traceback(tmp_path):
    """The `lensforge` program leaves SIGINT/SIGTERM ignored once main() is done: a Ctrl-C landing
    in the interpreter's shutdown (here: delivered from the first atexit callback) used to print
    'Exception ignored in atexit callback ... KeyboardInterrupt' after the last line."""
    script = ("import atexit, signal, sys\n"
              "from lensforge.cli import main\n"
              f"sys.argv = ['lensforge', 'classify', 'train', '--resume', {str(tmp_path / 'none')!r}]\n"
              "code = main()\n"
              "atexit.register(signal.raise_signal, signal.SIGINT)\n"
              "sys.exit(code)\n")
    r = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, cwd=ROOT,
                       env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert r.returncode == 2, r.stderr
    assert r.stderr.strip().splitlines() == [r.stderr.strip()] and "no weights/last.pt" in r.stderr, r.stderr
