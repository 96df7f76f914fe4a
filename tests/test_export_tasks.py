"""ONNX export of every other exportable task: tiny real runs, exported, compared with PyTorch on the
run's own images (max abs difference <= 1e-4 in fp32), and the onnxruntime-backed loaded model gives
the task API's outputs (reconstruct, sample, colorize, stylize) within the same tolerance."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from lensforge import export as lfexport
from lensforge.tasks import autoencode, colorize, gan, stylize, vae

# compared with fp32 ONNX graphs to 1e-4: PyTorch in fp32 too, whatever the CPU (conftest.torch_fp32)
pytestmark = pytest.mark.usefixtures("torch_fp32")

SHARED_WEIGHTS = Path(__file__).resolve().parents[2] / "shared" / "weights" / "squeezenet1_1-features-caffe.pth"
TOL = 1e-4


def _digit_batch(n=16) -> torch.Tensor:
    from lensforge.data import load_dataset

    x, _ = load_dataset("digits").test.take(torch.arange(n))
    return x.float() / 255


def _diff(a, b) -> float:
    return float((a.float() - b.float()).abs().max())


def test_autoencoder_encoder_and_decoder(tmp_path):
    run = autoencode.train("digits", out=tmp_path / "ae", model="conv", latent_dim=4, width=8, epochs=1, batch_size=64,
                           progress=False)
    res = lfexport.export(run.dir, out=tmp_path / "ae.onnx", dynamic_batch=True)
    assert set(res.files) == {"encoder", "decoder"} and res.files["decoder"].name == "ae-decoder.onnx"
    assert max(res.parity.values()) <= TOL and "digits" in res.parity_inputs
    pt, ox = autoencode.load(run.dir), lfexport.load(tmp_path / "ae.onnx", task="autoencode")
    x = _digit_batch()
    assert _diff(pt.reconstruct(x), ox.reconstruct(x)) <= TOL
    assert _diff(pt.encode(x), ox.encode(x)) <= TOL
    assert ox.spec == pt.spec
    # either file opens the pair; without its sibling it says which file is missing
    assert _diff(lfexport.load(tmp_path / "ae-decoder.onnx").errors(x), pt.errors(x)) <= TOL
    (tmp_path / "ae-decoder.onnx").unlink()
    with pytest.raises(Exception, match="ae-decoder.onnx should lie next to it"):
        lfexport.load(tmp_path / "ae.onnx")


def test_vae_decoder_samples_match(tmp_path):
    run = vae.train("digits", out=tmp_path / "vae", model="conv", latent_dim=2, width=8, epochs=1, batch_size=64,
                    progress=False)
    res = lfexport.export(run.dir, out=tmp_path / "vae.onnx")          # fixed batch 1: fed in chunks
    assert max(res.parity.values()) <= TOL
    pt, ox = vae.load(run.dir), lfexport.load(tmp_path / "vae.onnx", task="vae")
    assert _diff(pt.sample(9, seed=3), ox.sample(9, seed=3)) <= TOL
    assert _diff(pt.manifold(4), ox.manifold(4)) <= TOL
    x = _digit_batch(2)
    assert _diff(pt.interpolate(x[0], x[1], 5), ox.interpolate(x[0], x[1], 5)) <= TOL


def test_conditional_gan_generator(tmp_path):
    run = gan.train("digits", out=tmp_path / "gan", conditional=True, latent_dim=8, width=8, epochs=1, batch_size=64,
                    fd_classifier="none", progress=False)
    res = lfexport.export(run.dir, out=tmp_path / "g.onnx", dynamic_batch=True)
    assert res.parity["generator"] <= TOL and "prior draws" in res.parity_inputs
    pt, ox = gan.load(run.dir), lfexport.load(tmp_path / "g.onnx", task="gan")
    assert ox.conditional and ox.classes == pt.classes
    assert _diff(pt.sample(20, seed=1), ox.sample(20, seed=1)) <= TOL
    assert _diff(pt.sample(5, labels=[7], seed=2), ox.sample(5, labels=[7], seed=2)) <= TOL


def _scene(rng, size=16) -> np.ndarray:
    img = np.zeros((size, size, 3), np.float32)
    img[: size // 2] = rng.uniform(0.3, 1, 3)
    img[size // 2:] = rng.uniform(0, 0.7, 3)
    img += rng.normal(0, 0.03, img.shape)
    return (np.clip(img, 0, 1) * 255).astype(np.uint8)


def test_colorizer_any_size(tmp_path):
    rng = np.random.default_rng(0)
    for split, n in (("train", 24), ("test", 6)):
        (tmp_path / "data" / split).mkdir(parents=True)
        for i in range(n):
            Image.fromarray(_scene(rng)).save(tmp_path / "data" / split / f"{i}.png")
    run = colorize.train(str(tmp_path / "data"), out=tmp_path / "col", epochs=1, batch_size=8, base=4, depth=2,
                         val_fraction=0.2, progress=False, precision="fp32")
    res = lfexport.export(run.dir, out=tmp_path / "col.onnx")
    assert res.parity["colorizer"] <= TOL
    pt, ox = colorize.load(run.dir), lfexport.load(tmp_path / "col.onnx", task="colorize")
    assert ox.temperature == pt.temperature and torch.equal(ox.bins, pt.bins)
    photo = _scene(rng, 40)[:, :30]                                      # not the training size: dynamic H, W
    a, b = pt.colorize(photo), ox.colorize(photo)
    assert a.shape == b.shape == (40, 30, 3) and np.abs(a.astype(int) - b.astype(int)).max() <= 1


@pytest.mark.skipif(not SHARED_WEIGHTS.is_file(), reason="needs ../shared/weights (the loss network)")
def test_stylizer_any_size(tmp_path):
    rng = np.random.default_rng(1)
    for split, n in (("train", 8), ("test", 2)):
        (tmp_path / "photos" / split).mkdir(parents=True)
        for i in range(n):
            Image.fromarray(rng.integers(0, 255, (40, 48, 3), dtype=np.uint8)).save(tmp_path / "photos" / split / f"{i}.png")
    Image.fromarray(rng.integers(0, 255, (64, 64, 3), dtype=np.uint8)).save(tmp_path / "style.png")
    run = stylize.train(str(tmp_path / "photos"), style=str(tmp_path / "style.png"), out=tmp_path / "st", image_size=32,
                        base=4, blocks=1, epochs=1, batch_size=4, features=str(SHARED_WEIGHTS), progress=False,
                        precision="fp32")
    res = lfexport.export(run.dir, out=tmp_path / "st.onnx")
    assert res.parity["stylizer"] <= TOL
    pt, ox = stylize.load(run.dir), lfexport.load(tmp_path / "st.onnx", task="stylize")
    for h, w in ((37, 53), (32, 32), (61, 30)):
        x = torch.rand(1, 3, h, w, generator=torch.Generator().manual_seed(h))
        y = ox.stylize(x)
        assert y.shape == x.shape and _diff(pt.stylize(x), y) <= TOL


def test_quantize_is_refused_for_other_tasks(tmp_path):
    run = autoencode.train("digits", out=tmp_path / "ae", model="dense", latent_dim=2, width=2, epochs=1,
                           batch_size=128, progress=False)
    with pytest.raises(Exception, match="int8 quantisation is offered for classify, not autoencode"):
        lfexport.export(run.dir, quantize="int8")
    assert not (run.dir / "weights" / "best.onnx").exists()


def test_segmenter_tiled_prediction_matches(tmp_path):
    from lensforge.tasks import segment

    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[:72, :72]
    for split, n in (("train", 6), ("test", 2)):
        for sub in ("images", "masks"):
            (tmp_path / "disks" / split / sub).mkdir(parents=True)
        for i in range(n):
            m = np.zeros((72, 72), np.uint8)
            for _ in range(4):
                cy, cx, r = rng.integers(8, 64, 2).tolist() + [int(rng.integers(5, 10))]
                m[(yy - cy) ** 2 + (xx - cx) ** 2 < r * r] = 1
            img = (rng.normal(80, 20, (72, 72)) + 150 * m).clip(0, 255).astype(np.uint8)
            Image.fromarray(img).save(tmp_path / "disks" / split / "images" / f"{i}.png")
            Image.fromarray(m * 255).save(tmp_path / "disks" / split / "masks" / f"{i}.png")
    run = segment.train(str(tmp_path / "disks"), out=tmp_path / "seg", model="unet", width=4, depth=2, crop=48,
                        batch_size=4, steps_per_epoch=4, epochs=1, tile=64, overlap=16, progress=False, elastic=0.0,
                        precision="fp32")
    res = lfexport.export(run.dir, out=tmp_path / "seg.onnx")
    assert res.parity["segmenter"] <= TOL and "disks" in res.parity_inputs
    pt, ox = segment.load(run.dir), lfexport.load(tmp_path / "seg.onnx", task="segment")
    assert ox.classes.names == pt.classes.names and ox.tile == pt.tile == 64
    img = np.array(Image.open(tmp_path / "disks" / "test" / "images" / "0.png"))
    big = np.tile(img, (2, 2))[:130, :101]                               # tiled: larger than one 64 px tile
    for image in (img, big):
        assert _diff(pt.probabilities(image), ox.probabilities(image)) <= TOL


def test_detector_raw_head_in_graph_decoding_and_nms_outside(tmp_path):
    from lensforge.tasks import detect

    rng = np.random.default_rng(0)
    for split, n in (("train", 16), ("test", 4)):
        (tmp_path / "boxes" / split / "images").mkdir(parents=True)
        (tmp_path / "boxes" / split / "labels").mkdir(parents=True)
        for i in range(n):
            img = rng.integers(0, 120, (72, 96, 3)).astype(np.uint8)
            x, y = int(rng.integers(0, 60)), int(rng.integers(0, 40))
            img[y:y + 24, x:x + 30] = (230, 40, 40)
            Image.fromarray(img).save(tmp_path / "boxes" / split / "images" / f"{i}.png")
            (tmp_path / "boxes" / split / "labels" / f"{i}.txt").write_text(f"0 {(x + 15) / 96} {(y + 12) / 72} "
                                                                             f"{30 / 96} {24 / 72}")
    (tmp_path / "boxes" / "data.yaml").write_text("train: train/images\ntest: test/images\nnames: [red]\n")
    run = detect.train(str(tmp_path / "boxes"), out=str(tmp_path / "det"), epochs=1, image_size=64, batch_size=8,
                       mosaic=0.0, ema=0.0, progress=False)
    res = lfexport.export(run.dir, out=tmp_path / "det.onnx")
    assert res.parity["detector"] <= TOL and "letterboxed images" in res.parity_inputs
    pt, ox = detect.load(run.dir, device="cpu"), lfexport.load(tmp_path / "det.onnx", task="detect")
    files = sorted((tmp_path / "boxes" / "test" / "images").glob("*.png"))
    for a, b in zip(pt.predict(files, conf=0.001), ox.predict(files, conf=0.001)):
        assert a.labels == b.labels and len(a.boxes) == len(b.boxes) > 0
        assert np.abs(a.boxes - b.boxes).max() <= 1e-3 and np.abs(a.scores - b.scores).max() <= TOL
