"""Autoencoder task: tiny runs that learn, PCA baseline, denoising, anomaly scores, CLI errors."""
from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from conftest import blob_digits
from lensforge.data import load_dataset
from lensforge.errors import UsageError
from lensforge.tasks import autoencode
from lensforge.tasks.generative_common import psnr

FAST = dict(epochs=10, batch_size=32, lr=1e-2, progress=False, weight_decay=0.0)


def write_folder(root: Path, n: int = 200, labelled: bool = True, seed: int = 0) -> Path:
    """A user's image folder of learnable blob 'digits' (class sub-folders optional)."""
    x, y = blob_digits(n, np.random.default_rng(seed))
    for i, (img, k) in enumerate(zip(x, y)):
        d = root / f"c{k}" if labelled else root
        d.mkdir(parents=True, exist_ok=True)
        Image.fromarray(img).save(d / f"{i:04d}.png")
    return root


def cli(monkeypatch, *argv) -> int:
    """The real CLI entry point, with only this task's commands registered."""
    import lensforge.cli as c
    monkeypatch.setattr(c, "COMMANDS", ["lensforge.cli.autoencode"])
    return c.main([str(a) for a in argv])


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    return write_folder(tmp_path_factory.mktemp("blobs"))


@pytest.fixture(scope="module")
def run(folder, tmp_path_factory):
    return autoencode.train(str(folder), model="dense", latent_dim=2, width=8,
                            out=tmp_path_factory.mktemp("ae") / "run", **FAST)


def test_tiny_run_learns_and_writes_run_folder(run, folder):
    # it must beat the best code-free guess (the mean training image) by a clear margin
    ds = load_dataset(str(folder), require_labels=False)
    mean_image = ds.train.images.float().div(255).mean(0)
    baseline = (ds.test.images.float().div(255) - mean_image).pow(2).mean().item()
    assert run.results["test_mse"] < 0.85 * baseline, (run.results["test_mse"], baseline)
    rows = list(csv.DictReader(open(run.dir / "metrics.csv")))
    assert float(rows[-1]["train_mse"]) < 0.5 * float(rows[0]["train_mse"])
    for f in ("reconstructions.png", "latent.png", "worst.png", "curves.png", "report.html", "results.json",
              "reconstruction_errors.csv", "config.yaml", "weights/best.pt"):
        assert (run.dir / f).exists(), f
    assert "pca2_test_mse" in run.results
    errs = list(csv.DictReader(open(run.dir / "reconstruction_errors.csv")))
    assert len(errs) == run.results["test_images"] and errs[0]["name"].endswith(".png")


def test_reconstruct_shape_and_range(run):
    ae = autoencode.load(run.dir)
    x = torch.rand(3, 1, 28, 28)
    y = ae.reconstruct(x)
    assert y.shape == x.shape and y.min() >= 0 and y.max() <= 1
    assert ae.encode(x).shape == (3, 2)


def test_pca_baseline_is_exact_on_rank_k_data():
    from lensforge.data.sets import TensorSet
    g = torch.Generator().manual_seed(0)
    basis = torch.randn(2, 64, generator=g)
    codes = torch.rand(300, 2, generator=g)
    imgs = (codes @ basis)
    imgs = ((imgs - imgs.min()) / (imgs.max() - imgs.min()) * 255).round().to(torch.uint8).view(300, 1, 8, 8)
    ts = TensorSet(imgs)
    assert autoencode.pca_baseline_mse(ts, ts, 2) < 1e-5      # only rounding error left
    assert autoencode.pca_baseline_mse(ts, ts, 1) > 1e-4


def test_psnr_hand_case():
    a = torch.zeros(1, 1, 2, 2)
    b = torch.full((1, 1, 2, 2), 0.1)                          # mse 0.01 -> 20 dB
    assert psnr(b, a).item() == pytest.approx(20.0, abs=1e-4)


def test_denoising_beats_noisy_input_and_cli_applies_it(folder, tmp_path, monkeypatch):
    r = autoencode.train(str(folder), model="dense", latent_dim=8, width=16, denoise=0.3, out=tmp_path / "dn", **FAST)
    assert r.results["test_psnr_gain_db"] > 2.5, r.results
    out = tmp_path / "clean"
    assert cli(monkeypatch, "autoencode", "denoise", "--weights", tmp_path / "dn", folder / "c3", "--out", out,
               "--add-noise", "0.3") == 0
    made = sorted(out.glob("*.png"))
    n_in = len(list((folder / "c3").glob("*.png")))
    assert len(made) == 2 * n_in                               # <name>.png and <name>_noisy.png
    assert Image.open(made[0]).size == (28, 28)


def test_score_ranks_an_anomaly_first(run, folder, tmp_path, monkeypatch):
    odd = tmp_path / "odd"
    odd.mkdir()
    Image.fromarray((np.indices((28, 28)).sum(0) % 2 * 255).astype(np.uint8)).save(odd / "checker.png")
    csv_path = tmp_path / "scores.csv"
    assert cli(monkeypatch, "autoencode", "score", "--weights", run.dir, folder / "c1", odd, "--out", csv_path) == 0
    rows = list(csv.DictReader(open(csv_path)))
    assert rows[0]["name"].endswith("checker.png") and rows[0]["rank"] == "1"
    mses = [float(r["mse"]) for r in rows]
    assert mses == sorted(mses, reverse=True)


def test_unlabelled_folder_trains(tmp_path):
    flat = write_folder(tmp_path / "flat", n=80, labelled=False)
    r = autoencode.train(str(flat), model="conv", latent_dim=3, width=4, out=tmp_path / "u", epochs=1, batch_size=32,
                         progress=False)
    assert (r.dir / "latent.png").exists() and r.results["test_mse"] < 0.25


@pytest.mark.parametrize("argv, code, needle", [
    (["train", "--data", "digits", "--latent-dim", "0"], 2, "--latent-dim"),
    (["train", "--data", "digits", "--model", "resnet"], 2, "invalid choice"),
    (["train", "--data", "/no/such/folder"], 2, "/no/such/folder"),
    (["train", "--data", "digits", "--denoise", "-1"], 2, "--denoise"),
    (["denoise", "--weights", "/no/such.pt", "x.png", "--out", "o"], 2, "/no/such.pt"),
])
def test_cli_errors_are_one_line(argv, code, needle, monkeypatch, capsys, tmp_path):
    monkeypatch.chdir(tmp_path)
    try:
        rc = cli(monkeypatch, "autoencode", *argv)
    except SystemExit as e:     # argparse errors exit directly
        rc = e.code
    err = capsys.readouterr().err.strip()
    assert rc == code and needle in err and len(err.splitlines()) == 1, err
    assert not (tmp_path / "runs").exists() or not any((tmp_path / "runs").rglob("*.pt"))


def test_score_refuses_a_checkpoint_of_another_task(tmp_path, monkeypatch, capsys):
    from lensforge.engine.checkpoint import save_checkpoint
    save_checkpoint(tmp_path / "v.pt", {"task": "vae", "model": {}})
    rc = cli(monkeypatch, "autoencode", "score", "--weights", tmp_path / "v.pt", tmp_path, "--out", tmp_path / "s.csv")
    err = capsys.readouterr().err
    assert rc == 1 and "'vae' checkpoint" in err and not (tmp_path / "s.csv").exists()


def test_options_are_validated():
    with pytest.raises(UsageError, match="unknown option"):
        autoencode.train("digits", latent=3)
