"""VAE task: ELBO arithmetic by hand, a tiny run that learns, sampling/interpolation, CLI."""
from __future__ import annotations

import csv
import math

import pytest
import torch
from PIL import Image

from lensforge.errors import UsageError
from lensforge.tasks import vae
from test_autoencode import FAST, write_folder


def cli(*argv) -> int:
    from lensforge.cli import main
    return main([str(a) for a in argv])


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    return write_folder(tmp_path_factory.mktemp("blobs"))


@pytest.fixture(scope="module")
def run(folder, tmp_path_factory):
    return vae.train(str(folder), model="dense", latent_dim=2, width=8, out=tmp_path_factory.mktemp("vae") / "run",
                     **FAST)


def test_elbo_bernoulli_hand_computed():
    x = torch.tensor([[1.0, 0.0]])
    logits = torch.tensor([[0.0, 0.0]])                 # p = 0.5 for both pixels: 2 ln 2 nats
    mu, logvar = torch.tensor([[1.0, 0.0]]), torch.tensor([[0.0, math.log(4.0)]])
    recon, kl = vae.elbo_terms(x, logits, mu, logvar)
    assert recon.item() == pytest.approx(2 * math.log(2), abs=1e-6)
    # KL = 0.5 * sum(mu^2 + var - 1 - log var) = 0.5 * [(1 + 1 - 1 - 0) + (0 + 4 - 1 - ln 4)]
    assert kl.item() == pytest.approx(0.5 * (1 + 3 - math.log(4)), abs=1e-6)
    logits2 = torch.tensor([[math.log(3.0), 0.0]])     # sigmoid = 0.75 -> -ln 0.75 for pixel 1
    recon2, _ = vae.elbo_terms(x, logits2, mu, logvar)
    assert recon2.item() == pytest.approx(-math.log(0.75) + math.log(2), abs=1e-6)


def test_elbo_gaussian_hand_computed():
    x = torch.tensor([[0.5]]).view(1, 1, 1, 1)
    mean = torch.tensor([[0.3]]).view(1, 1, 1, 1)
    log_sigma = torch.tensor(math.log(0.1)).view(1, 1, 1, 1)
    recon, kl = vae.elbo_terms(x, mean, torch.zeros(1, 1), torch.zeros(1, 1), "gaussian", log_sigma)
    # -log N(0.5; 0.3, 0.1^2) = 0.5 * (0.2/0.1)^2 + ln 0.1 + 0.5 ln 2pi
    assert recon.item() == pytest.approx(2.0 + math.log(0.1) + 0.5 * math.log(2 * math.pi), abs=1e-5)
    assert kl.item() == pytest.approx(0.0, abs=1e-7)


def test_tiny_run_learns(run):
    rows = list(csv.DictReader(open(run.dir / "metrics.csv")))
    first = float(rows[0]["train_neg_elbo"])
    # an untrained Bernoulli decoder scores about 784 ln 2 = 543 nats
    assert run.results["test_neg_elbo"] < 0.6 * 784 * math.log(2)
    assert run.results["test_neg_elbo"] < first
    for f in ("samples.png", "reconstructions.png", "interpolation.png", "manifold.png", "latent.png", "report.html"):
        assert (run.dir / f).exists(), f


def test_elbo_prefers_real_images_to_scrambled_ones(run, folder):
    # the bound is a likelihood: held-out images of the kind trained on must score better (fewer
    # nats) than the same pixels scrambled, which keep every grey level but lose the blob; the
    # fixture's backgrounds are noise, so most nats are the noise's (measured 267 vs 277)
    from lensforge.data import load_dataset
    from lensforge.data.sets import TensorSet
    from lensforge.engine.device import select_runtime

    test = load_dataset(str(folder)).test
    x, _ = test.take(torch.arange(len(test)))
    perm = torch.randperm(28 * 28, generator=torch.Generator().manual_seed(0))
    scrambled = TensorSet(x.flatten(1)[:, perm].view_as(x))
    model = vae.load(run.dir).model
    rt = select_runtime("cpu", "fp32")
    real = vae.evaluate_elbo(model, TensorSet(x), rt, "bernoulli")["neg_elbo"]
    fake = vae.evaluate_elbo(model, scrambled, rt, "bernoulli")["neg_elbo"]
    assert real < fake - 5, (real, fake)


def test_sampling_shapes_ranges_and_determinism(run):
    gen = vae.load(run.dir)
    s = gen.sample(7, seed=3)
    assert s.shape == (7, 1, 28, 28) and s.min() >= 0 and s.max() <= 1
    assert torch.equal(s, gen.sample(7, seed=3)) and not torch.equal(s, gen.sample(7, seed=4))
    assert gen.manifold(5).shape == (25, 1, 28, 28)


def test_interpolation_ends_at_the_reconstructions(run):
    gen = vae.load(run.dir)
    x = torch.rand(2, 1, 28, 28)
    path = gen.interpolate(x[0], x[1], 6)
    assert path.shape == (6, 1, 28, 28)
    rec = gen.reconstruct(x)
    assert torch.allclose(path[0], rec[0], atol=1e-5) and torch.allclose(path[-1], rec[1], atol=1e-5)


def test_gaussian_likelihood_trains(folder, tmp_path):
    r = vae.train(str(folder), model="dense", latent_dim=4, width=8, likelihood="gaussian", out=tmp_path / "g", **FAST)
    rows = list(csv.DictReader(open(r.dir / "metrics.csv")))
    assert float(rows[-1]["train_neg_elbo"]) < float(rows[0]["train_neg_elbo"]) - 100
    assert vae.load(r.dir).sample(2).shape == (2, 1, 28, 28)


def test_cli_sample_and_interpolate(run, folder, tmp_path, monkeypatch):
    out = tmp_path / "grid.png"
    assert cli("vae", "sample", "--weights", run.dir, "--n", 9, "--out", out) == 0
    w, h = Image.open(out).size
    assert (w, h) == (3 * 56 + 4 * 2, 3 * 56 + 4 * 2)         # 3x3 grid of 2x-scaled 28px images, 2px gaps
    a, b = sorted((folder / "c2").glob("*.png"))[:2]
    strip = tmp_path / "path.png"
    assert cli("vae", "interpolate", "--weights", run.dir, a, b, "--steps", 5, "--out", strip) == 0
    assert Image.open(strip).size[0] == 5 * 56 + 6 * 2


@pytest.mark.parametrize("argv, code, needle", [
    (["train", "--data", "digits", "--beta", "-1"], 2, "--beta"),
    (["train", "--data", "digits", "--likelihood", "poisson"], 2, "invalid choice"),
    (["sample", "--weights", "/no/run", "--n", "4"], 2, "/no/run"),
    (["sample", "--weights", "/no/run", "--n", "0"], 2, "--n"),
])
def test_cli_errors(argv, code, needle, monkeypatch, capsys, tmp_path):
    monkeypatch.chdir(tmp_path)
    try:
        rc = cli("vae", *argv)
    except SystemExit as e:
        rc = e.code
    err = capsys.readouterr().err.strip()
    assert rc == code and needle in err and len(err.splitlines()) == 1, err


def test_manifold_needs_2d_latent_and_interpolate_names_bad_file(folder, tmp_path, monkeypatch, capsys):
    r = vae.train(str(folder), model="dense", latent_dim=3, width=4, out=tmp_path / "k3", epochs=1, batch_size=64,
                  progress=False)
    assert not (r.dir / "manifold.png").exists()
    assert cli("vae", "manifold", "--weights", r.dir, "--out", tmp_path / "m.png") == 2
    assert "--latent-dim 2" in capsys.readouterr().err
    bad = tmp_path / "broken.png"
    bad.write_bytes(b"not an image")
    good = next((folder / "c1").glob("*.png"))
    rc = cli("vae", "interpolate", "--weights", r.dir, good, bad, "--out", tmp_path / "i.png")
    err = capsys.readouterr().err
    assert rc == 1 and "broken.png" in err and not (tmp_path / "i.png").exists()


def test_unknown_option_is_refused():
    with pytest.raises(UsageError, match="betaa"):
        vae.train("digits", betaa=2)
    with pytest.raises(UsageError, match="--beta -1"):
        vae.train("digits", beta=-1)
