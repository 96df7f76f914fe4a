"""The training loop learns, checkpoints round-trip, unsafe files are refused, resume is exact."""
from __future__ import annotations

import csv
import os
import pickle

import pytest
import torch

from lensforge.engine.checkpoint import load_checkpoint, save_checkpoint
from lensforge.engine.schedule import lr_factor
from lensforge.engine.trainer import Interrupted
from lensforge.errors import CheckpointError
from lensforge.tasks import classify

FAST = dict(batch_size=64, lr=3e-3, progress=False, precision="fp32")


def read_rows(path):
    with open(path) as f:
        return list(csv.DictReader(f))


def test_tiny_model_learns_far_above_chance(mnist_dir, tmp_path):
    run = classify.train("mnist", data_dir=mnist_dir, model="mlp", epochs=3, out=tmp_path / "run", **FAST)
    # 10 classes: chance is 0.10; the synthetic blobs are easy, so demand far more.
    assert run.results["test_accuracy"] >= 0.9
    rows = read_rows(tmp_path / "run" / "metrics.csv")
    assert [r["epoch"] for r in rows] == ["1", "2", "3"]
    assert float(rows[-1]["train_loss"]) < float(rows[0]["train_loss"])


def test_schedule_shapes():
    assert lr_factor(0, 100, "onecycle", 0.1) == pytest.approx(0.1)
    assert lr_factor(9, 100, "onecycle", 0.1) == pytest.approx(1.0)
    assert lr_factor(99, 100, "onecycle", 0.1) < 0.02
    assert lr_factor(55, 100, "cosine", 0.1) == pytest.approx(0.5, abs=0.02)
    assert lr_factor(80, 100, "constant", 0.1) == 1.0


def test_checkpoint_round_trip(tmp_path):
    state = {"task": "classify", "model": {"w": torch.randn(3, 3)}, "history": [{"epoch": 1, "loss": 0.5}],
             "classes": ["a", "b"], "rng": {"python": (3, tuple(range(5)), None)}}
    save_checkpoint(tmp_path / "w" / "c.pt", state)
    back = load_checkpoint(tmp_path / "w" / "c.pt", task="classify")
    assert back["model"]["w"].equal(state["model"]["w"]) and back["history"] == state["history"]
    assert [p.name for p in (tmp_path / "w").iterdir()] == ["c.pt"]  # no temp files left behind
    with pytest.raises(CheckpointError, match="is a 'classify' checkpoint, not 'gan'"):
        load_checkpoint(tmp_path / "w" / "c.pt", task="gan")


class _Exploit:
    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_malicious_pickle_is_refused_and_never_runs(tmp_path):
    marker = tmp_path / "pwned"
    _Exploit.marker = marker
    evil = tmp_path / "evil.pt"
    torch.save({"format": "lensforge-checkpoint", "model": _Exploit()}, evil)
    with pytest.raises(CheckpointError, match="refused to load") as e:
        load_checkpoint(evil)
    assert "\n" not in str(e.value)
    assert not marker.exists()
    (tmp_path / "plain.pkl").write_bytes(pickle.dumps({"a": 1}))
    with pytest.raises(CheckpointError):
        load_checkpoint(tmp_path / "plain.pkl")
    torch.save({"weights": torch.zeros(2)}, tmp_path / "foreign.pt")
    with pytest.raises(CheckpointError, match="not a lensforge checkpoint"):
        load_checkpoint(tmp_path / "foreign.pt")
    (tmp_path / "trunc.pt").write_bytes((tmp_path / "foreign.pt").read_bytes()[:50])
    with pytest.raises(CheckpointError, match="not a readable"):
        load_checkpoint(tmp_path / "trunc.pt")


def test_interrupt_and_resume_is_exact(mnist_dir, tmp_path, monkeypatch):
    opts = dict(data_dir=mnist_dir, model="cnn", epochs=3, ema=0.9, **FAST)
    full = classify.train("mnist", out=tmp_path / "full", **opts)

    original = classify.ClassifyTask.training_step
    calls = {"n": 0}

    def flaky(self, model, batch):
        calls["n"] += 1
        if calls["n"] == 13:  # mid-way through epoch 2 (9 steps per epoch)
            raise KeyboardInterrupt
        return original(self, model, batch)

    monkeypatch.setattr(classify.ClassifyTask, "training_step", flaky)
    with pytest.raises(Interrupted, match="--resume"):
        classify.train("mnist", out=tmp_path / "cut", **opts)
    saved = load_checkpoint(tmp_path / "cut" / "weights" / "last.pt")
    assert (saved["epoch"], saved["step_in_epoch"]) == (1, 3)
    monkeypatch.setattr(classify.ClassifyTask, "training_step", original)
    resumed = classify.train(resume=tmp_path / "cut", progress=False)

    a, b = read_rows(tmp_path / "full" / "metrics.csv"), read_rows(tmp_path / "cut" / "metrics.csv")
    assert [r["epoch"] for r in b] == ["1", "2", "3"]
    for ra, rb in zip(a, b):
        for key in ("train_loss", "test_loss", "test_accuracy", "lr"):
            assert float(ra[key]) == pytest.approx(float(rb[key]), rel=1e-4, abs=1e-5), key
    assert resumed.results["test_accuracy"] == pytest.approx(full.results["test_accuracy"], abs=1e-6)


def test_early_stopping_on_validation(mnist_dir, tmp_path, monkeypatch):
    scores = iter([0.5, 0.6, 0.6, 0.55, 0.9, 0.9])
    monkeypatch.setattr(classify.ClassifyTask, "evaluate", lambda self, model: {"val_accuracy": next(scores)})
    run = classify.train("mnist", data_dir=mnist_dir, model="mlp", epochs=6, early_stop=2, val_fraction=0.2,
                         out=tmp_path / "run", **FAST)
    # best 0.6 at epoch 2; epochs 3 and 4 bring no improvement -> stop after epoch 4
    assert run.results["epochs_run"] == 4 and run.results["best_epoch"] == 2
    best = load_checkpoint(tmp_path / "run" / "weights" / "best.pt")
    assert best["epoch"] == 2 and best["best"]["value"] == 0.6


def test_early_stop_needs_validation(mnist_dir, tmp_path):
    from lensforge.errors import UsageError
    with pytest.raises(UsageError, match="--val-fraction"):
        classify.train("mnist", data_dir=mnist_dir, model="mlp", epochs=2, early_stop=2, out=tmp_path / "r", **FAST)
