"""GAN task: Frechet distance arithmetic, a tiny conditional run measured by a classifier,
sampling shapes/labels, discriminator state through resume, CLI errors."""
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


def cli(monkeypatch, *argv) -> int:
    import lensforge.cli as c
    monkeypatch.setattr(c, "COMMANDS", ["lensforge.cli.gan"])
    return c.main([str(a) for a in argv])


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
    assert "label_agreement" in r and r["fd_real_test_vs_train"] < r["fd_vs_test"]
    assert len(list((run.dir / "samples").glob("epoch_*.png"))) == 4
    assert (run.dir / "progress.png").exists() and (run.dir / "report.html").exists()


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
    assert cli(monkeypatch, "gan", "sample", "--weights", run.dir, "--n", 4, "--label", "c3",
               "--out", tmp_path / "g.png", "--each", tmp_path / "each") == 0
    files = sorted((tmp_path / "each").glob("*.png"))
    assert len(files) == 4 and Image.open(files[0]).size == (28, 28)


def test_discriminator_survives_resume(folder, tmp_path):
    r1 = gan.train(str(folder), latent_dim=8, width=4, epochs=1, batch_size=64, fd_classifier="none",
                   out=tmp_path / "r", progress=False)
    from lensforge.engine.checkpoint import load_checkpoint
    state = load_checkpoint(r1.dir / "weights" / "last.pt", task="gan")
    assert set(state["task_state"]) == {"disc", "d_opt", "progress"} and len(state["task_state"]["progress"]) == 1
    # pretend the run was meant to go 2 epochs, and continue it
    state["config"]["epochs"] = 2
    from lensforge.engine.checkpoint import save_checkpoint
    save_checkpoint(r1.dir / "weights" / "last.pt", {k: v for k, v in state.items() if k not in ("format", "version")})
    r2 = gan.train(resume=r1.dir, progress=False)
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
])
def test_cli_errors(argv, code, needle, monkeypatch, capsys, tmp_path):
    monkeypatch.chdir(tmp_path)
    try:
        rc = cli(monkeypatch, "gan", *argv)
    except SystemExit as e:
        rc = e.code
    err = capsys.readouterr().err.strip()
    assert rc == code and needle in err and len(err.splitlines()) == 1, err


def test_conditional_needs_labels_and_label_needs_conditional(tmp_path, monkeypatch, capsys):
    flat = write_folder(tmp_path / "flat", n=40, labelled=False)
    rc = cli(monkeypatch, "gan", "train", "--data", flat, "--conditional", "--out", tmp_path / "x", "--no-progress")
    assert rc == 1 and "--conditional needs labelled images" in capsys.readouterr().err
    r = gan.train(str(flat), latent_dim=8, width=4, epochs=1, batch_size=16, out=tmp_path / "u", progress=False)
    assert r.results["fd"].startswith("not measured")
    rc = cli(monkeypatch, "gan", "sample", "--weights", r.dir, "--label", "c1", "--out", tmp_path / "s.png")
    assert rc == 2 and "not a conditional GAN" in capsys.readouterr().err
