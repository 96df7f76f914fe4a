"""Autoencoder task: tiny runs that learn, PCA baseline, denoising, anomaly scores (photos among
real digits), the apply verbs' CSV and exit rules, CLI errors."""
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


def cli(*argv) -> int:
    """The real CLI entry point (parser generated from lensforge.specs)."""
    from lensforge.cli import main
    return main([str(a) for a in argv])


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
    assert len(errs) == run.results["test_images"] and errs[0]["file"].endswith(".png")
    assert run.results["precision"] == "fp32"     # --precision auto on a CPU: fp32 for this task


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
    assert cli("autoencode", "denoise", "--weights", tmp_path / "dn", folder / "c3", "--out", out,
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
    assert cli("autoencode", "score", "--weights", run.dir, folder / "c1", odd, "--out", csv_path) == 0
    rows = list(csv.DictReader(open(csv_path)))
    assert rows[0]["file"].endswith("checker.png") and rows[0]["rank"] == "1"
    mses = [float(r["mse"]) for r in rows]
    assert mses == sorted(mses, reverse=True)


def test_score_csv_columns_and_exit_code_with_an_unreadable_file(run, folder, tmp_path, capsys):
    bad = tmp_path / "in"
    bad.mkdir()
    (bad / "broken.png").write_bytes(b"not an image")
    good = sorted((folder / "c2").glob("*.png"))[:3]
    csv_path = tmp_path / "scores.csv"
    assert cli("autoencode", "score", "--weights", run.dir, *good, bad, "--out", csv_path) == 1
    text = csv_path.read_text()
    assert text.endswith("\n") and text.splitlines()[0] == "file,rank,mse,reading,label,error"
    rows = list(csv.DictReader(open(csv_path)))
    assert [r["rank"] for r in rows[:3]] == ["1", "2", "3"] and all(r["error"] == "" for r in rows[:3])
    assert rows[3]["file"].endswith("broken.png") and rows[3]["rank"] == "" and "broken.png" in rows[3]["error"]
    err = capsys.readouterr().err
    assert "broken.png" in err and "1 of 4" in err


def _photos_and_digits(tmp_path: Path, digits: np.ndarray) -> tuple[Path, set[str]]:
    """The four skimage photos from the user trial, saved as files among real digit images."""
    import skimage.data

    d = tmp_path / "mixed"
    d.mkdir()
    photos = {"astronaut", "camera", "chelsea", "coffee"}
    for name in photos:
        Image.fromarray(getattr(skimage.data, name)()).save(d / f"{name}.png")
    for i, img in enumerate(digits):
        Image.fromarray(img).save(d / f"digit_{i:03d}.png")
    return d, photos


@pytest.fixture(scope="module")
def digit_model(tmp_path_factory):
    """An autoencoder on the bundled `digits` (digit-style preprocessing, as MNIST)."""
    return autoencode.train("digits", model="dense", latent_dim=16, width=16, out=tmp_path_factory.mktemp("d") / "ae",
                            epochs=3, batch_size=64, lr=3e-3, progress=False)


def _assert_photos_rank_first(rows: list[dict], photos: set[str], n_digits: int) -> None:
    assert len(rows) == len(photos) + n_digits and all(r["error"] == "" for r in rows)
    top = {Path(r["file"]).stem for r in rows[:len(photos)]}
    assert top == photos, [(r["file"], r["mse"], r["reading"]) for r in rows[:6]]
    assert all(r["reading"].startswith("resize (no ink") for r in rows[:len(photos)])
    assert all(r["reading"] == "digit" for r in rows[len(photos):])


def test_photos_rank_as_more_anomalous_than_real_digits(digit_model, tmp_path):
    # the user trial: with the digit reading alone, all four photos became blank canvases and
    # scored 0.000868, *below* every digit. They must rank as the most anomalous inputs.
    ds = load_dataset("digits")
    x, _ = ds.test.take(torch.arange(60))
    mixed, photos = _photos_and_digits(tmp_path, x[:, 0].numpy())
    out = tmp_path / "s.csv"
    assert cli("autoencode", "score", "--weights", digit_model.dir, mixed, "--out", out) == 0
    _assert_photos_rank_first(list(csv.DictReader(open(out))), photos, 60)


MNIST = Path(__file__).resolve().parents[2] / "shared" / "datasets" / "mnist"


@pytest.mark.skipif(not MNIST.is_dir(), reason="needs ../shared/datasets/mnist")
def test_photos_rank_above_real_mnist_test_digits(digit_model, tmp_path):
    ds = load_dataset("mnist", data_dir=MNIST.parent, download=False)
    x, _ = ds.test.take(torch.arange(0, 10000, 50))              # 200 real MNIST test digits
    mixed, photos = _photos_and_digits(tmp_path, x[:, 0].numpy())
    rows = [r.values | {"file": r.file, "error": r.error or ""} for r in autoencode.score(digit_model.dir, [mixed])]
    _assert_photos_rank_first(rows, photos, 200)


def test_denoise_refuses_an_image_without_ink_instead_of_writing_black(digit_model, tmp_path, capsys):
    import skimage.data

    Image.fromarray(skimage.data.astronaut()).save(tmp_path / "astronaut.png")
    ds = load_dataset("digits")
    Image.fromarray(ds.test.take(torch.arange(1))[0][0, 0].numpy()).save(tmp_path / "digit.png")
    out = tmp_path / "clean"
    assert cli("autoencode", "denoise", "--weights", digit_model.dir, tmp_path / "astronaut.png",
               tmp_path / "digit.png", "--out", out) == 1
    assert [p.name for p in out.iterdir()] == ["digit.png"]
    err = capsys.readouterr().err
    assert "astronaut.png" in err and "no ink found" in err


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
    (["train", "--data", "digits", "--image-size", "2"], 2, "--image-size 2: must be between 4 and 1024"),
    (["denoise", "--weights", "/no/such.pt", "x.png", "--out", "o"], 2, "/no/such.pt"),
    (["denoise", "--weights", "/no/such.pt", "missing.png", "--out", "o"], 2, "missing.png: no such file"),
    (["score", "--weights", "/no/such.pt", "--out", "s.csv"], 2, "give image files/folders, or --data"),
])
def test_cli_errors_are_one_line(argv, code, needle, monkeypatch, capsys, tmp_path):
    monkeypatch.chdir(tmp_path)
    Image.new("L", (28, 28)).save(tmp_path / "x.png")
    try:
        rc = cli("autoencode", *argv)
    except SystemExit as e:     # argparse errors exit directly
        rc = e.code
    err = capsys.readouterr().err.strip()
    assert rc == code and needle in err and len(err.splitlines()) == 1, err
    assert not (tmp_path / "runs").exists() or not any((tmp_path / "runs").rglob("*.pt"))


def test_score_refuses_a_checkpoint_of_another_task(tmp_path, capsys):
    from lensforge.engine.checkpoint import save_checkpoint
    save_checkpoint(tmp_path / "v.pt", {"task": "vae", "model": {}})
    Image.new("L", (28, 28)).save(tmp_path / "x.png")
    rc = cli("autoencode", "score", "--weights", tmp_path / "v.pt", tmp_path, "--out", tmp_path / "s.csv")
    err = capsys.readouterr().err
    assert rc == 1 and "'vae' checkpoint" in err and not (tmp_path / "s.csv").exists()


def test_options_are_validated(tmp_path):
    with pytest.raises(UsageError, match="unknown option"):
        autoencode.train("digits", latent=3)
    with pytest.raises(UsageError, match="--early-stop: autoencode has no validation split.*--val-fraction"):
        autoencode.train("digits", early_stop=2, out=tmp_path / "es")
    assert not (tmp_path / "es").exists()


def test_unknown_model_kwarg_is_rejected(run):
    from lensforge.engine.checkpoint import load_checkpoint
    from lensforge.models import create_model
    from lensforge.tasks.common import restore_model

    ckpt = load_checkpoint(run.dir, task="autoencode")
    assert set(ckpt["model_kwargs"]) == {"in_channels", "image_size", "latent_dim", "width"}
    restore_model(ckpt)                                   # a stored checkpoint's kwargs still fit
    for name in ("ae-dense", "ae-conv", "vae-dense", "vae-conv", "dcgan-g", "dcgan-d"):
        with pytest.raises(TypeError, match="colour"):
            create_model(name, colour=3)


def test_latent_legend_stays_clear_of_the_axes():
    from lensforge.report.latent import latent_figure

    rng = np.random.default_rng(0)
    for dim in (2, 3):
        fig = latent_figure(rng.normal(size=(300, dim)), labels=rng.integers(0, 10, 300), class_names=list("abcdefghij"))
        r = fig.canvas.get_renderer()
        legend = fig.legends[0].get_window_extent(r)
        ax = fig.axes[0]
        for t in ax.get_xticklabels() + ax.get_yticklabels() + [ax.xaxis.label, ax.yaxis.label]:
            box = t.get_window_extent(r)
            assert not (t.get_text() and box.overlaps(legend)), t.get_text()
        assert not ax.get_window_extent(r).overlaps(legend) or dim == 3
        assert legend.x1 <= fig.bbox.x1 and legend.x0 >= ax.get_position().x1 * fig.bbox.width
