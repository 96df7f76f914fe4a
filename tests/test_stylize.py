"""Style transfer: feature-network weights, Gatys optimisation, the fast network, CLI errors."""
import hashlib
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from lensforge.cli import main
from lensforge.errors import CheckpointError, DataError
from lensforge.models import features as feats
from lensforge.tasks import stylize

SHARED_WEIGHTS = Path(__file__).resolve().parents[2] / "shared" / "weights" / "squeezenet1_1-features-caffe.pth"


@pytest.fixture(scope="module")
def weights() -> Path:
    """The real ImageNet SqueezeNet (Caffe conversion): style losses need trained features, and
    tests never download (the default torchvision file is fetched only by users)."""
    if not SHARED_WEIGHTS.is_file():
        pytest.skip("shared SqueezeNet weights not present")
    return SHARED_WEIGHTS


def _photo(path, w, h, seed=0, mode="RGB"):
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:h, :w]
    img = np.stack([xx / w, yy / h, 0.5 + 0.5 * np.sin(xx / 3.0)], -1) * 200 + rng.integers(0, 40, (h, w, 3))
    Image.fromarray(img.clip(0, 255).astype(np.uint8)).convert(mode).save(path)
    return path


def _style(path, size=64):
    """Diagonal coloured stripes: a texture whose Gram statistics differ clearly from the photo's."""
    yy, xx = np.mgrid[:size, :size]
    k = ((xx + yy) // 4) % 3
    pal = np.array([[230, 40, 40], [40, 40, 230], [250, 230, 30]], np.uint8)
    Image.fromarray(pal[k]).save(path)
    return path


def test_shared_squeezenet_loads_with_caffe_convention():
    if not SHARED_WEIGHTS.is_file():
        pytest.skip("shared SqueezeNet weights not present")
    net = feats.load_feature_net(SHARED_WEIGHTS)
    assert (net.arch, net.convention) == ("squeezenet1_1", "caffe")
    out = net(torch.rand(1, 3, 64, 64), net.layers.style)
    assert sorted(out) == sorted(net.layers.style) and all(torch.isfinite(v).all() for v in out.values())
    # Caffe input: BGR, 0-255, mean subtracted
    x = net.normalise(torch.tensor([1.0, 0.0, 0.0]).view(1, 3, 1, 1)).flatten()
    assert torch.allclose(x, torch.tensor([-104.0, -116.7, 255 - 122.7]), atol=1e-3)


def test_vgg_layouts_are_recognised_from_torchvision_keys(tmp_path):
    for name, n_convs in (("vgg16", 13), ("vgg19", 16)):
        layers = feats._vgg_layers(feats._VGG_CFG[name])
        state = {f"features.{k}": v for k, v in layers.state_dict().items()}
        assert sum(1 for k in state if k.endswith(".weight")) == n_convs
        state["classifier.0.weight"] = torch.zeros(2, 2)  # torchvision files carry the classifier too
        assert feats.detect_arch(state) == name
    net = feats.FeatureNet("vgg16", layers if name == "vgg16" else feats._vgg_layers(feats._VGG_CFG["vgg16"]),
                           "torchvision")
    out = net(torch.rand(1, 3, 32, 32), net.layers.style)
    assert out[1].shape[1] == 64 and out[25].shape[1] == 512


def test_wrong_weight_files_are_refused_clearly(tmp_path):
    garbage = tmp_path / "garbage.pth"
    garbage.write_bytes(b"\x00" * 100)
    with pytest.raises(CheckpointError, match="garbage.pth: not a readable"):
        feats.load_feature_net(garbage)
    other = tmp_path / "resnet.pth"
    torch.save({"conv1.weight": torch.zeros(64, 3, 7, 7), "fc.weight": torch.zeros(10, 512)}, other)
    with pytest.raises(CheckpointError, match="resnet.pth: not VGG16/VGG19/SqueezeNet"):
        feats.load_feature_net(other)
    broken = {f"features.{k}": v for k, v in feats._squeezenet11_layers().state_dict().items()}
    broken["features.0.weight"] = torch.zeros(32, 3, 3, 3)
    torch.save(broken, tmp_path / "broken.pth")
    with pytest.raises(CheckpointError, match="does not fit its layout"):
        feats.load_feature_net(tmp_path / "broken.pth")
    torch.save({"features.0.weight": Path("x")}, tmp_path / "pickled.pth")  # an arbitrary pickled object
    with pytest.raises(CheckpointError, match="refused to load"):
        feats.load_feature_net(tmp_path / "pickled.pth")
    with pytest.raises(CheckpointError, match="no such weights file"):
        feats.load_feature_net(tmp_path / "absent.pth")


def test_known_weights_download_checks_the_sha256_prefix(tmp_path, monkeypatch):
    payload = b"pretend these are weights"
    prefix = hashlib.sha256(payload).hexdigest()[:8]
    src = tmp_path / "srv"
    src.mkdir()
    (src / f"vgg16-{prefix}.pth").write_bytes(payload)
    (src / "vgg19-00000000.pth").write_bytes(payload)
    monkeypatch.setitem(feats.KNOWN_URLS, "vgg16", (src / f"vgg16-{prefix}.pth").as_uri())
    monkeypatch.setitem(feats.KNOWN_URLS, "vgg19", (src / "vgg19-00000000.pth").as_uri())
    got = feats.fetch_known_weights("vgg16", tmp_path / "cache", progress=False)
    assert got.read_bytes() == payload
    with pytest.raises(DataError, match="checksum mismatch"):
        feats.fetch_known_weights("vgg19", tmp_path / "cache", progress=False)
    assert not list((tmp_path / "cache").glob("vgg19*"))
    with pytest.raises(DataError, match="downloads are off") as e:
        feats.fetch_known_weights("vgg19", tmp_path / "cache", download=False)
    assert "--features FILE" in str(e.value) and "LENSFORGE_FEATURE_WEIGHTS" in str(e.value)
    monkeypatch.setitem(feats.KNOWN_URLS, "vgg16", (src / "vgg16-00000000.pth").as_uri())    # not served
    with pytest.raises(DataError, match="download failed") as e:
        feats.fetch_known_weights("vgg16", tmp_path / "cache2", progress=False)
    assert "--features FILE" in str(e.value) and len(str(e.value).splitlines()) == 1


def test_gatys_reduces_style_loss_and_writes_the_image(tmp_path, weights):
    c = _photo(tmp_path / "c.png", 80, 60)
    s = _style(tmp_path / "s.png")
    res = stylize.gatys(c, s, tmp_path / "out.png", long_side=64, steps=40, features=str(weights))
    assert res["style_loss_end"] < res["style_loss_start"] / 2
    assert res["content_loss_end"] > res["content_loss_start"]     # it had to move away from the photo
    with Image.open(tmp_path / "out.png") as im:
        assert im.size == (64, 48)
    adam = stylize.gatys(c, s, None, long_side=48, steps=15, optimizer="adam", features=str(weights))
    assert adam["style_loss_end"] < adam["style_loss_start"]


def test_gatys_cli_reports_and_rejects_bad_input(tmp_path, weights, capsys):
    c = _photo(tmp_path / "c.png", 40, 40)
    s = _style(tmp_path / "s.png", 32)
    # the form, without the verb: `lensforge stylize CONTENT STYLE --out OUT`
    assert main(["stylize", str(c), str(s), "--out", str(tmp_path / "o.png"), "--long-side", "32", "--steps", "5",
                 "--features", str(weights), "--report", str(tmp_path / "r.json")]) == 0
    assert (tmp_path / "o.png").stat().st_size > 0
    rep = json.loads((tmp_path / "r.json").read_text())
    assert {"seconds", "style_loss_start", "style_loss_end", "content_loss_start", "content_loss_end"} <= set(rep)
    capsys.readouterr()
    assert main(["stylize", "run", str(tmp_path / "nope.jpg"), str(s), "--out", str(tmp_path / "o.png"),
                 "--features", str(weights)]) == 2
    assert "nope.jpg: no such file" in capsys.readouterr().err
    bad = tmp_path / "bad.pth"
    bad.write_text("hello")
    assert main(["stylize", "run", str(c), str(s), "--out", str(tmp_path / "o2.png"), "--features", str(bad)]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "bad.pth" in err[0]
    assert not (tmp_path / "o2.png").exists()


def test_fast_network_trains_and_applies_to_any_size(tmp_path, weights):
    for split, n in (("train", 12), ("test", 4)):
        (tmp_path / "photos" / split).mkdir(parents=True)
        for i in range(n):
            _photo(tmp_path / "photos" / split / f"{i}.png", 48, 40, seed=i)
    s = _style(tmp_path / "s.png")
    run = stylize.train(str(tmp_path / "photos"), style=str(s), out=tmp_path / "run", image_size=32, base=4, blocks=1,
                        epochs=6, batch_size=4, lr=1e-2, features=str(weights), progress=False, precision="fp32")
    assert run.history[-1]["val_style"] < run.history[0]["val_style"]
    assert run.history[-1]["train_loss"] < run.history[0]["train_loss"]
    for f in ("results.json", "report.html", "samples.png", "weights/best.pt"):
        assert (run.dir / f).is_file()
    odd = _photo(tmp_path / "odd.jpg", 53, 37, mode="RGB")
    grey = _photo(tmp_path / "grey.png", 30, 45, mode="L")
    rgba = _photo(tmp_path / "rgba.png", 21, 19, mode="RGBA")
    assert main(["stylize", "apply", "--weights", str(run.dir), str(odd), str(grey), str(rgba),
                 "--out", str(tmp_path / "styled")]) == 0
    for name, size in (("odd", (53, 37)), ("grey", (30, 45)), ("rgba", (21, 19))):
        with Image.open(tmp_path / "styled" / f"{name}.png") as im:
            assert im.size == size and im.mode == "RGB"
    net = stylize.load(run.dir / "weights" / "best.pt")
    assert net.stylize(torch.rand(1, 3, 17, 29)).shape == (1, 3, 17, 29)


def test_fast_network_refuses_other_checkpoints(tmp_path, capsys):
    torch.save({"format": "lensforge-checkpoint", "version": 1, "task": "colorize"}, tmp_path / "c.pt")
    img = _photo(tmp_path / "x.png", 20, 20)
    assert main(["stylize", "apply", "--weights", str(tmp_path / "c.pt"), str(img), "--out", str(tmp_path / "o")]) == 1
    assert "not 'stylize'" in capsys.readouterr().err


def test_fast_network_refuses_a_negative_loss_weight_before_writing(tmp_path, weights, capsys):
    (tmp_path / "photos").mkdir()
    for i in range(4):
        _photo(tmp_path / "photos" / f"{i}.png", 40, 40, seed=i)
    s = _style(tmp_path / "s.png")
    assert main(["stylize", "train", "--style", str(s), "--data", str(tmp_path / "photos"), "--image-size", "32",
                 "--style-weight", "-1", "--features", str(weights), "--out", str(tmp_path / "run")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == ["lensforge: error: --style-weight -1.0: must be >= 0"]
    assert not (tmp_path / "run").exists()


def test_fast_network_apply_takes_long_side_and_refuses_out_of_range_sizes(tmp_path, weights, capsys):
    (tmp_path / "photos").mkdir()
    for i in range(6):
        _photo(tmp_path / "photos" / f"{i}.png", 40, 40, seed=i)
    s = _style(tmp_path / "s.png")
    run = stylize.train(str(tmp_path / "photos"), style=str(s), out=tmp_path / "run", image_size=32, base=4,
                        blocks=1, epochs=1, batch_size=4, features=str(weights), progress=False, precision="fp32")
    img = _photo(tmp_path / "wide.png", 60, 30)
    assert main(["stylize", "apply", "--weights", str(run.dir), str(img), "--long-side", "40",
                 "--out", str(tmp_path / "styled")]) == 0
    with Image.open(tmp_path / "styled" / "wide.png") as im:
        assert im.size == (40, 20)
    capsys.readouterr()
    assert main(["stylize", "apply", "--weights", str(run.dir), str(img), "--long-side", "100000",
                 "--out", str(tmp_path / "big")]) == 2
    assert capsys.readouterr().err.strip().splitlines() == [
        "lensforge: error: --long-side 100000: must be between 16 and 4096"]
    assert not (tmp_path / "big").exists()
    with pytest.raises(SystemExit) as e:                     # the old, ambiguous flag is gone
        main(["stylize", "apply", "--weights", str(run.dir), str(img), "--size", "40", "--out", str(tmp_path / "b")])
    assert e.value.code == 2
    with pytest.raises(Exception, match="unknown option"):
        stylize.train(str(tmp_path / "photos"), style=str(s), size=32)


def test_gatys_refuses_sizes_out_of_range_and_beyond_memory_before_starting(tmp_path, weights, capsys, monkeypatch):
    from lensforge.tasks import colorize

    c = _photo(tmp_path / "c.png", 40, 40)
    s = _style(tmp_path / "s.png", 32)
    assert main(["stylize", "run", str(c), str(s), "--out", str(tmp_path / "o.png"), "--long-side", "100000",
                 "--features", str(weights)]) == 2
    assert capsys.readouterr().err.strip().splitlines() == [
        "lensforge: error: --long-side 100000: must be between 32 and 4096"]
    monkeypatch.setattr(colorize, "available_memory", lambda device: 100 << 20)   # 100 MB free
    assert main(["stylize", "run", str(c), str(s), "--out", str(tmp_path / "o.png"), "--long-side", "1024",
                 "--features", str(weights)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "stylize run at 1024x1024 with lbfgs needs about" in err[0]
    assert "lower --long-side" in err[0]
    assert not (tmp_path / "o.png").exists()


def test_default_feature_weights_offline_give_one_line_naming_the_ways_out(tmp_path, capsys, monkeypatch):
    monkeypatch.delenv("LENSFORGE_FEATURE_WEIGHTS", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))   # an empty cache: nothing downloaded yet
    c = _photo(tmp_path / "c.png", 40, 40)
    s = _style(tmp_path / "s.png", 32)
    assert main(["stylize", "run", str(c), str(s), "--out", str(tmp_path / "o.png"), "--no-download"]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1
    assert "squeezenet1_1-b8a52dc0.pth" in err[0] and "https://download.pytorch.org/models/" in err[0]
    assert "--features FILE" in err[0] and "LENSFORGE_FEATURE_WEIGHTS" in err[0]
    assert str(tmp_path / "cache" / "lensforge" / "weights") in err[0]
    assert not (tmp_path / "o.png").exists()


def test_feature_weights_come_from_the_variable_and_torchvision_files_get_their_convention(tmp_path, monkeypatch):
    monkeypatch.setenv("LENSFORGE_FEATURE_WEIGHTS", str(tmp_path / "mine.pth"))
    assert feats.resolve_weights(None) == tmp_path / "mine.pth"
    monkeypatch.delenv("LENSFORGE_FEATURE_WEIGHTS")
    assert feats.default_features() == "squeezenet1_1"
    state = {f"features.{k}": v for k, v in feats._squeezenet11_layers().state_dict().items()}
    torch.save(state, tmp_path / "squeezenet1_1-b8a52dc0.pth")       # torchvision's published name
    torch.save(state, tmp_path / "squeeze-caffe.pth")
    assert feats.load_feature_net(tmp_path / "squeezenet1_1-b8a52dc0.pth").convention == "torchvision"
    assert feats.load_feature_net(tmp_path / "squeeze-caffe.pth").convention == "caffe"


def test_feature_options_in_help_match_the_loader():
    from lensforge.specs import stylize as spec

    assert set(spec.KNOWN_FEATURES) == set(feats.KNOWN_URLS)
    assert (spec.DEFAULT_FEATURES, spec.FEATURES_ENV) == (feats.DEFAULT_FEATURES, feats.FEATURES_ENV)


def test_style_network_rejects_unknown_arguments():
    from lensforge.models import create_model

    with pytest.raises(TypeError):
        create_model("style-transformer", base=4, blocks=1, size=32)


def test_help_of_both_image_to_image_tasks_is_built_without_torch():
    import subprocess
    import sys

    code = ("import sys, contextlib, io; from lensforge.cli import main\n"
            "for argv in (['stylize', '--help'], ['stylize', 'run', '--help'], ['stylize', 'train', '--help'],\n"
            "             ['stylize', 'apply', '--help'], ['colorize', 'train', '--help'], ['colorize', 'apply', '--help'],\n"
            "             ['colorize', 'calibrate', '--help']):\n"
            "    with contextlib.suppress(SystemExit), contextlib.redirect_stdout(io.StringIO()):\n"
            "        main(argv)\n"
            "print('torch' in sys.modules)")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "False"


def test_fast_network_training_beyond_memory_is_refused_before_a_run_folder_exists(tmp_path, weights, capsys,
                                                                                   monkeypatch):
    from lensforge.tasks import colorize

    (tmp_path / "photos").mkdir()
    for i in range(4):
        _photo(tmp_path / "photos" / f"{i}.png", 40, 40, seed=i)
    s = _style(tmp_path / "s.png")
    monkeypatch.setattr(colorize, "available_memory", lambda device: 10 << 20)   # 10 MB free
    assert main(["stylize", "train", "--style", str(s), "--data", str(tmp_path / "photos"), "--image-size", "128",
                 "--features", str(weights), "--no-progress", "--out", str(tmp_path / "run")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "training at 128x128 with --batch-size 8 needs about" in err[0]
    assert not (tmp_path / "run").exists()
