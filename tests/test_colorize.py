"""Colourisation: quantised-ab machinery, a tiny training run, any-size apply, CLI errors."""
import json

import numpy as np
import pytest
import torch
from PIL import Image

from lensforge.cli import main
from lensforge.color import rgb_to_lab
from lensforge.tasks import colorize


def _scene(rng, size):
    """Blue sky (bright top), green ground (dark bottom), a red sun: colour follows from layout/light."""
    h = w = size
    img = np.zeros((h, w, 3), np.float32)
    horizon = int(rng.integers(h // 3, 2 * h // 3))
    img[:horizon] = (0.35, 0.55, 0.95)
    img[horizon:] = (0.15, 0.5, 0.1)
    cy, cx, r = rng.integers(2, horizon), rng.integers(2, w - 2), 2 + size // 8
    yy, xx = np.mgrid[:h, :w]
    img[(yy - cy) ** 2 + (xx - cx) ** 2 < r * r] = (0.95, 0.2, 0.1)
    img += rng.normal(0, 0.02, img.shape)
    return (np.clip(img, 0, 1) * 255).astype(np.uint8)


def make_folder(root, n_train=48, n_test=8, size=16):
    rng = np.random.default_rng(0)
    for split, n in (("train", n_train), ("test", n_test)):
        (root / split).mkdir(parents=True)
        for i in range(n):
            Image.fromarray(_scene(rng, size)).save(root / split / f"{i}.png")
    return root


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    root = tmp_path_factory.mktemp("col")
    data = make_folder(root / "data")
    run = colorize.train(str(data), out=root / "run", epochs=12, batch_size=8, lr=5e-3, base=8, depth=2,
                         val_fraction=0.2, progress=False, precision="fp32", seed=0)
    return run


def test_bins_cover_the_gamut_and_soft_encoding_is_local():
    bins = colorize.ab_bins()
    assert 150 < len(bins) < 330                       # in-gamut 10x10 cells (Zhang et al.: 313 with their grid)
    assert torch.equal(bins, colorize.ab_bins())
    ab = torch.tensor([[0.0, 0.0], [43.0, -17.0], [-80.0, 70.0]])
    idx, w = colorize.encode_soft(ab, bins)
    assert torch.allclose(w.sum(1), torch.ones(3), atol=1e-5)
    nearest = torch.cdist(ab, bins).argmin(1)
    assert torch.equal(idx[:, 0], nearest)
    assert (torch.cdist(ab, bins).gather(1, idx) < 25).all()


def test_rebalancing_upweights_rare_colours_and_decode_temperature_sharpens():
    bins = colorize.ab_bins()
    prior = torch.full((len(bins),), 1e-4)
    common = int(torch.cdist(torch.zeros(1, 2), bins).argmin())
    prior[common] = 1.0
    prior /= prior.sum()
    w = colorize.class_weights(prior, bins, 0.5)
    assert w[common] < 1 < w.max()
    assert (w > 0).all() and w.max() / w.min() < len(bins)  # raw 1/p would give 1e4
    assert torch.equal(colorize.class_weights(prior, bins, 0.0), torch.ones(len(bins)))
    logits = torch.zeros(1, len(bins), 1, 1)
    logits[0, 5] = 2.0
    sharp, flat = colorize.decode(logits, bins, 0.1), colorize.decode(logits, bins, 1.0)
    assert torch.allclose(sharp.flatten(), bins[5], atol=1.0)
    assert (flat.flatten() - bins[5]).norm() > 5


def test_pick_decoding_prefers_vivid_only_while_beating_grey():
    sweep = [{"temperature": 1.0, "correction": 1.0, "psnr": 25.0, "grey_psnr": 24.0, "colourfulness": 5},
             {"temperature": 0.5, "correction": 0.5, "psnr": 24.5, "grey_psnr": 24.0, "colourfulness": 9},
             {"temperature": 0.3, "correction": 0.0, "psnr": 23.0, "grey_psnr": 24.0, "colourfulness": 15}]
    assert colorize.pick_decoding(sweep) == (0.5, 0.5)
    assert colorize.pick_decoding(sweep[2:]) == (0.3, 0.0)          # nothing beats grey: best PSNR
    assert colorize.pick_decoding([sweep[2], dict(sweep[0], psnr=23.5)]) == (1.0, 1.0)


def test_prior_correction_undoes_rebalancing():
    bins = colorize.ab_bins()
    weights = torch.ones(len(bins))
    weights[7] = 100.0                                   # a rare colour the network was pushed towards
    logits = torch.zeros(1, len(bins), 1, 1)
    logits[0, 7] = float(torch.tensor(100.0).log())      # what a rebalanced net predicts for a flat posterior
    biased = colorize.decode(logits, bins, 1.0)
    fixed = colorize.decode(logits, bins, 1.0, weights, 1.0)
    assert torch.allclose(fixed.flatten(), bins.mean(0), atol=1e-3)
    assert (biased.flatten() - bins[7]).norm() < (fixed.flatten() - bins[7]).norm()


def test_tiny_training_reduces_loss_and_writes_a_full_run(trained):
    hist = trained.history
    assert hist[-1]["train_loss"] < hist[0]["train_loss"] * 0.8
    assert hist[-1]["val_loss"] < hist[0]["val_loss"]
    r = json.loads((trained.dir / "results.json").read_text())
    for k in ("test_psnr", "test_ssim", "test_grey_psnr", "test_grey_ssim", "test_colourfulness",
              "test_original_colourfulness", "temperature", "test_sweep"):
        assert k in r
    assert r["test_grey_colourfulness"] < 1e-2 and r["test_original_colourfulness"] > 20
    assert r["test_colourfulness"] > 0
    for f in ("comparison.png", "report.html", "curves.png", "weights/best.pt", "config.yaml"):
        assert (trained.dir / f).is_file()
    assert "comparison.png" not in [p.name for p in trained.dir.iterdir() if p.name.endswith(".tmp")]


def test_apply_any_size_grey_rgb_rgba_keeps_full_resolution_lightness(trained, tmp_path):
    rng = np.random.default_rng(5)
    rgb = Image.fromarray(_scene(rng, 64)).resize((53, 37))
    rgb.save(tmp_path / "wide.jpg")
    rgb.convert("L").save(tmp_path / "grey.png")
    rgba = rgb.convert("RGBA")
    rgba.putalpha(Image.fromarray(np.tile(np.linspace(0, 255, 53).astype(np.uint8), (37, 1))))
    rgba.save(tmp_path / "alpha.png")
    (tmp_path / "broken.jpg").write_bytes(b"not an image")
    out = tmp_path / "out"
    code = main(["colorize", "apply", "--weights", str(trained.dir), str(tmp_path / "wide.jpg"),
                 str(tmp_path / "grey.png"), str(tmp_path / "alpha.png"), str(tmp_path / "broken.jpg"),
                 "--out", str(out)])
    assert code == 1                                    # one unreadable file, the others still written
    grey_in = np.asarray(Image.open(tmp_path / "grey.png").convert("RGB"), np.float32) / 255
    for name in ("wide", "grey", "alpha"):
        img = Image.open(out / f"{name}.png")
        assert img.size == (53, 37)
    assert Image.open(out / "alpha.png").mode == "RGBA"
    assert np.array_equal(np.asarray(Image.open(out / "alpha.png"))[..., 3], np.asarray(rgba)[..., 3])
    got = np.asarray(Image.open(out / "grey.png").convert("RGB"), np.float32) / 255
    L_in = rgb_to_lab(torch.from_numpy(grey_in).permute(2, 0, 1)[None])[:, 0]
    L_out = rgb_to_lab(torch.from_numpy(got).permute(2, 0, 1)[None])[:, 0]
    assert (L_in - L_out).abs().mean() < 1.5            # lightness is the user's, at full resolution
    assert not (out / "broken.png").exists()


def test_colorizer_api_matches_shapes_and_bigger_work_size(trained):
    col = colorize.load(trained.dir / "weights" / "best.pt")
    img = _scene(np.random.default_rng(6), 40)
    assert col.colorize(img).shape == img.shape
    assert col.colorize(img[..., 0], size=24).shape == img.shape
    assert col._work_shape(300, 500, 16) == (16, 28)


def test_wrong_weights_and_bad_options_fail_with_one_line(trained, tmp_path, capsys):
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"garbage")
    img = tmp_path / "x.png"
    Image.fromarray(_scene(np.random.default_rng(7), 16)).save(img)
    assert main(["colorize", "apply", "--weights", str(bad), str(img), "--out", str(tmp_path / "o")]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "bad.pt" in err[0] and "not a readable" in err[0]
    torch.save({"format": "lensforge-checkpoint", "version": 1, "task": "classify"}, tmp_path / "cls.pt")
    assert main(["colorize", "apply", "--weights", str(tmp_path / "cls.pt"), str(img), "--out", str(tmp_path / "o")]) == 1
    assert "not 'colorize'" in capsys.readouterr().err
    assert main(["colorize", "train", "--data", str(tmp_path / "missing"), "--no-progress"]) == 2
    assert "missing" in capsys.readouterr().err
    with pytest.raises(SystemExit) as e:
        main(["colorize", "apply", str(img)])
    assert e.value.code == 2


def test_size_must_fit_the_unet(tmp_path, capsys):
    data = make_folder(tmp_path / "d", n_train=4, n_test=2)
    assert main(["colorize", "train", "--data", str(data), "--size", "20", "--no-progress",
                 "--out", str(tmp_path / "r")]) == 2
    assert "multiple of 8" in capsys.readouterr().err
