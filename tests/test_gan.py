"""GAN task: Frechet distance arithmetic, a tiny conditional run measured by a classifier, a judge
at chance flagged, sampling shapes/labels, discriminator state through resume, CLI errors."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from lensforge.data import load_dataset
from lensforge.errors import UsageError
from lensforge.models import create_model
from lensforge.tasks import classify, gan
from test_autoencode import write_folder


def cli(*argv) -> int:
    from lensforge.cli import main
    return main([str(a) for a in argv])


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    return write_folder(tmp_path_factory.mktemp("blobs"), n=240)


@pytest.fixture(scope="module")
def judge_run(folder, tmp_path_factory):
    return classify.train(str(folder), model="mlp", out=tmp_path_factory.mktemp("clf") / "run", epochs=3,
                          batch_size=32, lr=2e-3, ema=0.0, weight_decay=5e-4, progress=False, precision="fp32",
                          label_smoothing=0.0)


@pytest.fixture(scope="module")
def run(folder, judge_run, tmp_path_factory):
    # DiffAugment off: it slows a 4-epoch run's progress, which is what this fixture measures
    return gan.train(str(folder), conditional=True, latent_dim=16, width=8, epochs=4, batch_size=16, lr=3e-3,
                     fd_classifier=str(judge_run.dir), fd_samples=200, out=tmp_path_factory.mktemp("gan") / "run",
                     progress=False, augment="off")


def test_frechet_distance_closed_forms():
    rng = np.random.default_rng(0)
    a = rng.normal(size=(20000, 3))
    assert gan.frechet_distance(a, a) == pytest.approx(0.0, abs=1e-6)
    # N(0, I) vs N(m, s^2 I): |m|^2 + 3 (1 - s)^2
    b = rng.normal(size=(20000, 3)) * 2.0 + np.array([1.0, 0.0, -1.0])
    assert gan.frechet_distance(a, b) == pytest.approx(2.0 + 3 * (1 - 2.0) ** 2, rel=0.05)


def test_tiny_run_measures_quality_that_improves(run, folder, judge_run):
    r = run.results
    fds = r["fd_per_epoch"]
    assert len(fds) == 4 and all(np.isfinite(fds)) and fds[-1] < 0.8 * fds[0]
    # an untrained generator, judged by the same classifier, is far worse than the trained one
    task_like = gan.FeatureJudge(judge_run.dir, (1, 28, 28), torch.device("cpu"))
    fresh = create_model("dcgan-g", **gan.load(run.dir).meta["model_kwargs"]).eval()
    with torch.no_grad():
        z = torch.randn(200, 16, generator=torch.Generator().manual_seed(0))
        untrained = fresh(z, torch.arange(200) % 10)
    ref = gan.real_images(load_dataset(str(folder)).train, 200)
    f_untrained, _ = task_like(untrained)
    f_real, _ = task_like(ref)
    assert r["fd_vs_train"] < 0.7 * gan.frechet_distance(f_untrained, f_real)
    assert r["fd_classifier"] == str(judge_run.dir) and 0 <= r["recognisable_fraction"] <= 1
    assert r["fd_judge_ok"] is True and r["fd_judge_accuracy"] >= r["fd_judge_needed"] and "fd_warning" not in r
    assert "label_agreement" in r and r["fd_real_test_vs_train"] < r["fd_vs_test"]
    assert len(list((run.dir / "samples").glob("epoch_*.png"))) == 4
    assert (run.dir / "progress.png").exists() and (run.dir / "report.html").exists()
    # --precision auto on a CPU: bf16 where the CPU has AMX-BF16, else fp32 (tasks/gan.py)
    assert r["precision"] == gan.GANTask.cpu_auto_precision


def test_judge_check_needs_clearly_better_than_chance():
    assert not gan.judge_check(12, 100, 10)["fd_judge_ok"]      # 0.12: chance is 0.10
    assert not gan.judge_check(3, 8, 10)["fd_judge_ok"]         # 0.375 on 8 images: could be luck
    assert gan.judge_check(90, 100, 10)["fd_judge_ok"]
    assert gan.judge_check(40, 100, 40)["fd_judge_ok"] and not gan.judge_check(5, 100, 40)["fd_judge_ok"]


def test_a_judge_at_chance_is_flagged_and_measures_nothing(folder, judge_run, tmp_path):
    # the fixture's judge with its weights reset to the untrained network's: a classifier at chance,
    # whose Frechet distance would be a number without meaning (the ORL auto judge of the user trial)
    from lensforge.engine.checkpoint import load_checkpoint, save_checkpoint
    ckpt = load_checkpoint(judge_run.dir, task="classify")
    torch.manual_seed(0)
    untrained = create_model(ckpt["model_name"], **ckpt["model_kwargs"]).state_dict()
    save_checkpoint(tmp_path / "dud.pt", {k: v for k, v in ckpt.items() if k not in ("format", "version")} |
                    {"model": untrained})
    r = gan.train(str(folder), latent_dim=8, width=4, epochs=1, batch_size=64, fd_classifier=str(tmp_path / "dud.pt"),
                  fd_samples=100, out=tmp_path / "g", progress=False)
    res = r.results
    assert res["fd_judge_ok"] is False and res["fd_judge_accuracy"] < res["fd_judge_needed"]
    assert "not clearly better than chance" in res["fd_warning"] and res["fd"].startswith("not measured")
    assert "fd_vs_train" not in res and "fd" not in r.history[0]
    assert "not clearly better than chance" in (r.dir / "report.html").read_text()


def test_diff_augment_is_differentiable_and_on_for_small_sets(run, folder, tmp_path):
    x = torch.rand(6, 1, 32, 32, requires_grad=True)
    y = gan.diff_augment(x)
    assert y.shape == x.shape and not torch.equal(y, x)
    y.sum().backward()                       # G must get gradients through the augmentation
    assert x.grad is not None and 0 < float((x.grad != 0).float().mean()) < 1   # cutout zeroes some
    assert run.results["diff_augment"] is False
    small = gan.train(str(folder), latent_dim=8, width=4, epochs=1, batch_size=32, fd_classifier="none",
                      out=tmp_path / "aug", progress=False)
    assert small.results["diff_augment"] is True    # "auto" below 10,000 images
    with pytest.raises(UsageError, match="--augment"):
        gan.train(str(folder), augment="sometimes", out=tmp_path / "bad")


def test_sampling_shapes_ranges_and_labels(run):
    g = gan.load(run.dir)
    s = g.sample(12)
    assert s.shape == (12, 1, 28, 28) and s.min() >= 0 and s.max() <= 1
    assert torch.equal(g.sample(4, seed=1), g.sample(4, seed=1))
    one = g.sample(3, labels=[g.class_index("c5")])
    assert one.shape == (3, 1, 28, 28) and not torch.equal(one, g.sample(3, labels=[g.class_index("c6")]))
    with pytest.raises(UsageError):
        g.sample(2, labels=[0, 99])


def test_cli_sample_each_and_label(run, tmp_path, monkeypatch):
    assert cli("gan", "sample", "--weights", run.dir, "--n", 4, "--label", "c3",
               "--out", tmp_path / "g.png", "--each", tmp_path / "each") == 0
    files = sorted((tmp_path / "each").glob("*.png"))
    assert len(files) == 4 and Image.open(files[0]).size == (28, 28)


def test_discriminator_survives_resume(folder, tmp_path):
    r1 = gan.train(str(folder), latent_dim=8, width=4, epochs=1, batch_size=64, fd_classifier="none",
                   out=tmp_path / "r", progress=False)
    from lensforge.engine.checkpoint import load_checkpoint
    state = load_checkpoint(r1.dir / "weights" / "last.pt", task="gan")
    assert set(state["task_state"]) == {"disc", "d_opt", "progress"} and len(state["task_state"]["progress"]) == 1
    assert state["d_kwargs"]["width"] == 4
    r2 = gan.train(resume=r1.dir, epochs=2, progress=False)             # extend the run by one epoch
    assert r2.results["epochs_run"] == 2
    after = load_checkpoint(r1.dir / "weights" / "last.pt", task="gan")["task_state"]
    assert len(after["progress"]) == 2
    moved = [not torch.equal(a, b) for a, b in zip(state["task_state"]["disc"].values(), after["disc"].values())
             if a.is_floating_point()]
    assert any(moved)


@pytest.mark.parametrize("argv, code, needle", [
    (["train", "--data", "digits", "--fd-classifier", "/no/clf"], 2, "/no/clf"),
    (["train", "--data", "digits", "--latent-dim", "0"], 2, "--latent-dim"),
    (["train", "--data", "digits", "--model", "stylegan"], 2, "invalid choice"),
    (["sample", "--weights", "/no/run"], 2, "/no/run"),
    (["train", "--data", "digits", "--early-stop", "2"], 2, "--early-stop: gan has no validation split"),
    (["train", "--data", "digits", "--fd-samples", "5"], 2, "--fd-samples 5: must be between 10 and 100000"),
])
def test_cli_errors(argv, code, needle, monkeypatch, capsys, tmp_path):
    monkeypatch.chdir(tmp_path)
    try:
        rc = cli("gan", *argv)
    except SystemExit as e:
        rc = e.code
    err = capsys.readouterr().err.strip()
    assert rc == code and needle in err and len(err.splitlines()) == 1, err
    assert not (tmp_path / "runs").exists()          # a refused run leaves no folder behind


def test_progress_rows_are_capped_and_keep_first_and_last_epoch():
    assert gan.progress_epochs(5) == [1, 2, 3, 4, 5]
    shown = gan.progress_epochs(150)
    assert len(shown) == gan.PROGRESS_ROWS and shown[0] == 1 and shown[-1] == 150 and shown == sorted(set(shown))


def test_help_is_built_without_torch():
    # every flag of the three generative tasks' verbs, built from lensforge.specs alone
    import subprocess
    import sys
    code = """
import argparse, importlib, sys
from lensforge.options import add_options
for name in ("autoencode", "vae", "gan"):
    for verb in importlib.import_module(f"lensforge.specs.{name}").CLI.verbs:
        parser = argparse.ArgumentParser()
        for cls in verb.options:
            add_options(parser, cls, verb.defaults)
        parser.format_help()
assert "torch" not in sys.modules, "torch was imported"
"""
    subprocess.run([sys.executable, "-c", code], check=True)
