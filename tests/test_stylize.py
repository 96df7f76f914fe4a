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
def weights(tmp_path_factory) -> Path:
    """The real ImageNet SqueezeNet when present (style losses need trained features), else a random one."""
    if SHARED_WEIGHTS.is_file():
        return SHARED_WEIGHTS
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("w") / "squeeze.pth"
    torch.save({f"features.{k}": v for k, v in feats._squeezenet11_layers().state_dict().items()}, path)
    return path


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
    with pytest.raises(DataError, match="offline"):
        feats.fetch_known_weights("vgg19", tmp_path / "cache", download=False)


def test_gatys_reduces_style_loss_and_writes_the_image(tmp_path, weights):
    c = _photo(tmp_path / "c.png", 80, 60)
    s = _style(tmp_path / "s.png")
    res = stylize.gatys(c, s, tmp_path / "out.png", size=64, steps=40, features=str(weights))
    assert res["style_loss_end"] < res["style_loss_start"] / 2
    assert res["content_loss_end"] > res["content_loss_start"]     # it had to move away from the photo
    with Image.open(tmp_path / "out.png") as im:
        assert im.size == (64, 48)
    adam = stylize.gatys(c, s, None, size=48, steps=15, optimizer="adam", features=str(weights))
    assert adam["style_loss_end"] < adam["style_loss_start"]


def test_gatys_cli_reports_and_rejects_bad_input(tmp_path, weights, capsys):
    c = _photo(tmp_path / "c.png", 40, 40)
    s = _style(tmp_path / "s.png", 32)
    # the form, without the verb: `lensforge stylize CONTENT STYLE --out OUT`
    assert main(["stylize", str(c), str(s), "--out", str(tmp_path / "o.png"), "--size", "32", "--steps", "5",
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
    run = stylize.train(str(tmp_path / "photos"), style=str(s), out=tmp_path / "run", size=32, base=4, blocks=1,
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
    assert main(["stylize", "train", "--style", str(s), "--data", str(tmp_path / "photos"), "--size", "32",
                 "--style-weight", "-1", "--features", str(weights), "--out", str(tmp_path / "run")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == ["lensforge: error: --style-weight -1: must be >= 0"]
    assert not (tmp_path / "run").exists()
