"""Colourisation: quantised-ab machinery, a tiny training run, any-size apply, CLI errors."""
import json

import numpy as np
import pytest
import torch
from PIL import Image

from lensforge.cli import main
from lensforge.color import rgb_to_lab
from lensforge.options import make
from lensforge.specs.colorize import ColorizeOptions
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
    assert colorize.pick_decoding(sweep) is sweep[1]
    assert colorize.pick_decoding(sweep[2:]) is sweep[2]          # nothing beats grey: best PSNR
    assert colorize.pick_decoding([sweep[2], dict(sweep[0], psnr=23.5)])["temperature"] == 1.0


def test_decoding_texts_are_computed_from_the_numbers():
    above = {"temperature": 0.5, "correction": 0.6, "psnr": 25.80, "grey_psnr": 25.50, "colourfulness": 9}
    below = {"temperature": 0.38, "correction": 0.0, "psnr": 24.93, "grey_psnr": 26.91, "colourfulness": 15}
    text = colorize.describe_choice(above)
    assert "25.80 dB" in text and "beats the grey baseline (25.50 dB)" in text and "T=0.5" in text
    text = colorize.describe_choice(below)
    assert "no decoding beat the grey baseline" in text and "24.93" in text and "26.91" in text
    assert "beats" not in text
    # the user trial's run: test PSNR 24.93 against 26.91 for grey must not read as "above"
    assert colorize.describe_test(24.93, 26.91) == "test PSNR 24.93 dB is 1.98 dB below the grey baseline (26.91 dB)"
    assert colorize.describe_test(25.73, 25.50) == "test PSNR 25.73 dB is 0.23 dB above the grey baseline (25.50 dB)"


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
              "test_original_colourfulness", "temperature", "test_sweep", "val_sweep"):
        assert k in r
    assert r["test_grey_colourfulness"] < 1e-2 and r["test_original_colourfulness"] > 20
    assert r["test_colourfulness"] > 0
    for f in ("comparison.png", "report.html", "curves.png", "weights/best.pt", "weights/last.pt", "config.yaml"):
        assert (trained.dir / f).is_file()
    # atomic writes leave no temporary files behind
    assert [p.name for p in trained.dir.rglob("*") if p.name.endswith(".tmp")] == []
    # the strip is grey / ours / original for the 8 test images, each 16 px shown 8x (128 px), 2 px padding
    strip = np.asarray(Image.open(trained.dir / "comparison.png").convert("RGB"), np.float32) / 255
    assert strip.shape == (3 * 130 + 2, 8 * 130 + 2, 3)
    rows = [torch.from_numpy(strip[2 + i * 130: 130 + i * 130, 2:-2]).permute(2, 0, 1)[None] for i in range(3)]
    chroma = [float(rgb_to_lab(row)[:, 1:].abs().mean()) for row in rows]
    assert chroma[0] < 1.0 < chroma[1]                 # the grey row has no colour, ours has
    assert "comparison.png" in (trained.dir / "report.html").read_text() or "data:image/png" in \
        (trained.dir / "report.html").read_text()
    # the decoding chosen on validation is what best.pt carries, and the texts match the numbers
    best = torch.load(trained.dir / "weights" / "best.pt", weights_only=True)
    assert (best["temperature"], best["correction"]) == (r["temperature"], r["correction"])
    row = next(x for x in r["val_sweep"] if (x["temperature"], x["correction"]) == (r["temperature"], r["correction"]))
    assert r["decoding_choice"] == colorize.describe_choice(row)
    side = "above" if r["test_psnr"] > r["test_grey_psnr"] else "below"
    assert side in r["test_vs_grey"] and f"{r['test_psnr']:.2f} dB" in r["test_vs_grey"]


def test_calibrate_reruns_the_final_step_of_a_finished_run(trained, capsys):
    before = json.loads((trained.dir / "results.json").read_text())
    assert main(["colorize", "calibrate", "--weights", str(trained.dir)]) == 0
    assert f"temperature={before['temperature']}" in capsys.readouterr().out
    after = json.loads((trained.dir / "results.json").read_text())
    for k in ("temperature", "correction", "test_psnr", "test_grey_psnr", "decoding_choice", "best_epoch"):
        assert after[k] == before[k]


def test_calibrate_refuses_an_unfinished_run(trained, tmp_path, capsys):
    run = tmp_path / "run"
    (run / "weights").mkdir(parents=True)
    last = torch.load(trained.dir / "weights" / "last.pt", weights_only=True)
    last["epoch"] = 3
    torch.save(last, run / "weights" / "last.pt")
    assert main(["colorize", "calibrate", "--weights", str(run)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "stopped at epoch 3 of 12" in err[0] and "--resume" in err[0]
    assert main(["colorize", "calibrate", "--weights", str(tmp_path / "none")]) == 2
    assert "no weights/last.pt" in capsys.readouterr().err


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
    assert col.colorize(img[..., 0], image_size=24).shape == img.shape
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


def test_image_size_must_fit_the_unet_and_the_old_flag_is_gone(tmp_path, capsys):
    data = make_folder(tmp_path / "d", n_train=4, n_test=2)
    assert main(["colorize", "train", "--data", str(data), "--image-size", "20", "--no-progress",
                 "--out", str(tmp_path / "r")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == ["lensforge: error: --image-size 20: must be a multiple of 8 (2**depth)"]
    assert not (tmp_path / "r").exists()
    with pytest.raises(SystemExit) as e:
        main(["colorize", "train", "--data", str(data), "--size", "16"])
    assert e.value.code == 2
    with pytest.raises(Exception, match="unknown option"):
        colorize.train(str(data), size=16)


@pytest.mark.parametrize("args, flag", [(["--image-size", "100000"], "--image-size 100000: must be between 8 and 1024"),
                                        (["--temperature", "0"], "--temperature 0.0: must be between 0.01 and 10")])
def test_apply_refuses_out_of_range_sizes_in_one_line_before_writing(trained, tmp_path, capsys, args, flag):
    img = tmp_path / "x.png"
    Image.fromarray(_scene(np.random.default_rng(8), 16)).save(img)
    assert main(["colorize", "apply", "--weights", str(trained.dir), str(img), "--out", str(tmp_path / "o"), *args]) == 2
    assert capsys.readouterr().err.strip().splitlines() == [f"lensforge: error: {flag}"]
    assert not (tmp_path / "o").exists()


def test_apply_refuses_an_out_that_is_a_file(trained, tmp_path, capsys):
    img = tmp_path / "x.png"
    Image.fromarray(_scene(np.random.default_rng(10), 16)).save(img)
    (tmp_path / "taken").write_text("a file")
    assert main(["colorize", "apply", "--weights", str(trained.dir), str(img), "--out", str(tmp_path / "taken")]) == 2
    assert capsys.readouterr().err.strip().splitlines() == [
        f"lensforge: error: --out {tmp_path / 'taken'}: exists and is not a folder"]


def test_apply_refuses_work_that_does_not_fit_in_memory(trained, tmp_path, capsys, monkeypatch):
    img = tmp_path / "x.png"
    Image.fromarray(_scene(np.random.default_rng(9), 64)).save(img)
    monkeypatch.setattr(colorize, "available_memory", lambda device: 64 << 10)  # 64 KB free
    assert main(["colorize", "apply", "--weights", str(trained.dir), str(img), "--out", str(tmp_path / "o")]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert err[0].startswith(f"error: {img}: colourising 64x64 at --image-size 16 needs about")
    assert "lower --image-size" in err[0] and len(err) == 2      # the file's line, then the count
    assert not (tmp_path / "o" / "x.png").exists()
    data = make_folder(tmp_path / "d", n_train=4, n_test=2)
    assert main(["colorize", "train", "--data", str(data), "--no-progress", "--out", str(tmp_path / "r")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "training at 16x16 with --batch-size 64 needs about" in err[0]
    assert not (tmp_path / "r").exists()


def test_data_help_lists_colour_datasets_only(capsys):
    with pytest.raises(SystemExit):
        main(["colorize", "train", "--help"])
    out = " ".join(capsys.readouterr().out.split())
    data_help = out[out.index("--data DATA colour"):out.index("--data-dir DATA_DIR where")]
    assert "cifar10" in data_help and "mnist" not in data_help and "digits" not in data_help
    assert main(["colorize", "train", "--data", "mnist", "--data-dir", "/nonexistent", "--no-download"]) == 2
    assert capsys.readouterr().err.strip().splitlines() == [
        "lensforge: error: --data mnist: a grey dataset cannot teach colour; use cifar10 or a folder/.zip of colour images"]


def test_unet_rejects_unknown_arguments():
    from lensforge.models import create_model

    with pytest.raises(TypeError):
        create_model("unet", in_channels=1, out_channels=4, size=32)


def test_resume_keeps_the_runs_bins_and_weights_and_extends_it(tmp_path, monkeypatch):
    data = make_folder(tmp_path / "d", n_train=16, n_test=4, size=16)
    kw = dict(batch_size=8, base=4, depth=1, val_fraction=0.25, progress=False, precision="fp32")
    first = colorize.train(str(data), out=tmp_path / "r", epochs=1, **kw)
    start = torch.load(first.dir / "weights" / "last.pt", weights_only=True)
    # a resumed run must use the stored rebalancing weights, not a fresh estimate from the data
    monkeypatch.setattr(colorize, "empirical_prior", lambda *a, **k: pytest.fail("prior recomputed on resume"))
    run = colorize.train(resume=first.dir, epochs=2, progress=False)
    assert [h["epoch"] for h in run.history] == [1, 2]
    end = torch.load(run.dir / "weights" / "last.pt", weights_only=True)
    assert torch.equal(end["class_weights"], start["class_weights"]) and torch.equal(end["bins"], start["bins"])
    with pytest.raises(Exception, match="--resume continues a run exactly"):
        colorize.train(resume=first.dir, base=8)


def test_apply_reads_zip_members_and_names_outputs_uniquely(trained, tmp_path):
    import zipfile

    rng = np.random.default_rng(11)
    for d in ("a", "b"):
        (tmp_path / d).mkdir()
        Image.fromarray(_scene(rng, 24)).save(tmp_path / d / "same.png")
    with zipfile.ZipFile(tmp_path / "photos.zip", "w") as zf:
        zf.write(tmp_path / "a" / "same.png", "inner/z.png")
    records = colorize.apply(trained.dir, [tmp_path / "a", tmp_path / "b", tmp_path / "photos.zip"], tmp_path / "o")
    assert [r.ok for r in records] == [True, True, True]
    assert sorted(p.name for p in (tmp_path / "o").iterdir()) == ["same-2.png", "same.png", "z.png"]
    assert records[2].file == f"{tmp_path / 'photos.zip'}/inner/z.png"


def test_fused_soft_cross_entropy_equals_the_autograd_reference():
    """The hand-written backward must give the same loss and gradient as log_softmax + gather."""
    torch.manual_seed(0)
    b, q, h, w_, k = 2, 37, 5, 6, 5
    logits = (3 * torch.randn(b, q, h, w_)).requires_grad_()
    idx = torch.randint(0, q, (b, k, h, w_))
    w = torch.rand(b, k, h, w_)
    w = w / w.sum(1, keepdim=True)
    pixel_w = torch.rand(b, h, w_) + 0.5
    fused = colorize.soft_cross_entropy(logits, idx, w, pixel_w)
    g_fused, = torch.autograd.grad(fused, logits)
    logp = logits.permute(0, 2, 3, 1).reshape(-1, q).log_softmax(1)
    flat = lambda t: t.permute(0, 2, 3, 1).reshape(-1, k)  # noqa: E731
    ref = (-(logp.gather(1, flat(idx)) * flat(w)).sum(1) * pixel_w.reshape(-1)).mean()
    g_ref, = torch.autograd.grad(ref, logits)
    assert fused.item() == pytest.approx(ref.item(), rel=1e-6)
    assert torch.allclose(g_fused, g_ref, atol=1e-8, rtol=1e-5) and g_ref.abs().max() > 1e-4


def test_sweep_gains_scale_the_chroma_and_keep_the_plain_rows(trained):
    """A gain of 1 reproduces the plain sweep's rows exactly; gain 0 is the grey image; the rows say their gain."""
    col = colorize.load(trained.dir)
    opts = torch.load(trained.dir / "weights" / "best.pt", weights_only=True)["options"]
    data = colorize.load_colour_data(make(ColorizeOptions, opts), 0)[0].test
    args = (col.model, data, col.bins, col.class_weights, col.rt)
    plain = colorize.sweep_decodings(*args, temps=(0.5,), corrections=(0.0, 1.0))
    gained = colorize.sweep_decodings(*args, temps=(0.5,), corrections=(0.0, 1.0), gains=(0.0, 1.0, 2.0))
    assert all("gain" not in r for r in plain) and {r["gain"] for r in gained} == {0.0, 1.0, 2.0}
    for p in plain:
        g1 = next(r for r in gained if (r["correction"], r["gain"]) == (p["correction"], 1.0))
        assert {k: v for k, v in g1.items() if k != "gain"} == p
    for r in gained:
        if r["gain"] == 0.0:
            assert r["psnr"] == pytest.approx(r["grey_psnr"], abs=1e-3) and r["colourfulness"] < 1e-2
    by_gain = {r["gain"]: r["colourfulness"] for r in gained if r["correction"] == 0.0}
    assert by_gain[0.0] < by_gain[1.0] < by_gain[2.0]


def test_greyscale_originals_are_counted_and_left_out_of_the_colour_measures(trained):
    """A test split with greyscale photos: the colour figures are those of its colour images alone,
    the greyscale ones are counted, and PSNR over every image is kept beside them."""
    from lensforge.data.sets import TensorSet

    col = colorize.load(trained.dir)
    opts = torch.load(trained.dir / "weights" / "best.pt", weights_only=True)["options"]
    colour = colorize.load_colour_data(make(ColorizeOptions, opts), 0)[0].test
    imgs = colour.take(torch.arange(len(colour)))[0]
    greys = imgs[:3].float().mean(1, keepdim=True).round().byte().repeat(1, 3, 1, 1)
    mixed = TensorSet(torch.cat([imgs, greys]))
    dec = (col.temperature, col.class_weights, col.correction)
    alone = colorize.evaluate_split(col.model, colour, col.bins, dec, col.rt)
    with_grey = colorize.evaluate_split(col.model, mixed, col.bins, dec, col.rt)
    assert (with_grey["test_images"], with_grey["test_greyscale_originals"]) == (len(colour), 3)
    for k in ("test_psnr", "test_grey_psnr", "test_colourfulness", "test_original_colourfulness"):
        assert with_grey[k] == pytest.approx(alone[k], abs=1e-3)
    # over every image grey's per-image mean jumps (100 dB, the cap, on each greyscale one); pooled, it rises
    assert with_grey["test_grey_psnr_all_images"] > alone["test_grey_psnr_all_images"] + 10
    assert with_grey["test_grey_pooled_psnr_all_images"] > alone["test_grey_pooled_psnr_all_images"]
    assert with_grey["test_grey_pooled_psnr_all_images"] < 60      # finite: the split's mean error is not 0
    rows = colorize.sweep_decodings(col.model, mixed, col.bins, col.class_weights, col.rt, temps=(0.5,),
                                    corrections=(1.0,))
    assert rows[0]["images"] == len(colour)
    assert rows[0]["grey_psnr"] == pytest.approx(alone["test_grey_psnr"], abs=1e-3)
    assert colorize.sweep_decodings(col.model, TensorSet(greys), col.bins, col.class_weights, col.rt) == []


def test_a_folder_of_greyscale_photos_is_refused_in_one_line(tmp_path, capsys):
    data = make_folder(tmp_path / "d", n_train=6, n_test=2)
    for f in data.rglob("*.png"):
        Image.open(f).convert("L").convert("RGB").save(f)
    assert main(["colorize", "train", "--data", str(data), "--no-progress", "--out", str(tmp_path / "r")]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and str(data) in err[0] and "greyscale" in err[0]
    assert not (tmp_path / "r").exists()
