"""`lensforge serve` beyond classification: each task's adapter answers through the API exactly
what the task's own Python API gives (tiny models trained here on synthetic images)."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image

pytest.importorskip("fastapi")
with __import__("warnings").catch_warnings():   # starlette's notice that httpx2 exists; httpx is what we pin
    __import__("warnings").simplefilter("ignore")
    from fastapi.testclient import TestClient  # noqa: E402

from conftest import b64_image, blob_digits, png_bytes  # noqa: E402
from lensforge.serve import create_app, load_models  # noqa: E402

FAST = dict(epochs=1, batch_size=32, progress=False)


def _scene(rng, size=16) -> np.ndarray:
    """Blue sky over green ground with a red sun: colour follows from layout and lightness."""
    img = np.zeros((size, size, 3), np.float32)
    horizon = int(rng.integers(size // 3, 2 * size // 3))
    img[:horizon], img[horizon:] = (0.35, 0.55, 0.95), (0.15, 0.5, 0.1)
    img += rng.normal(0, 0.02, img.shape)
    return (np.clip(img, 0, 1) * 255).astype(np.uint8)


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    from lensforge.tasks import autoencode, colorize, gan, vae

    root = tmp_path_factory.mktemp("serve-tasks")
    x, y = blob_digits(160, np.random.default_rng(0))
    for i, (img, k) in enumerate(zip(x, y)):
        (root / "blobs" / f"c{k}").mkdir(parents=True, exist_ok=True)
        Image.fromarray(img).save(root / "blobs" / f"c{k}" / f"{i:04d}.png")
    rng = np.random.default_rng(0)
    for split, n in (("train", 24), ("test", 8)):
        (root / "scenes" / split).mkdir(parents=True)
        for i in range(n):
            Image.fromarray(_scene(rng)).save(root / "scenes" / split / f"{i}.png")
    blobs = str(root / "blobs")
    return {
        "denoise": autoencode.train(blobs, model="dense", latent_dim=4, width=8, denoise=0.3, out=root / "ae", **FAST).dir,
        "vae": vae.train(blobs, model="dense", latent_dim=2, width=8, out=root / "vae", **FAST).dir,
        "gan": gan.train(blobs, conditional=True, latent_dim=8, width=4, fd_classifier="none", out=root / "gan",
                         **FAST).dir,
        "colour": colorize.train(str(root / "scenes"), base=8, depth=2, precision="fp32", out=root / "col",
                                 **{**FAST, "batch_size": 8}).dir,
    }


@pytest.fixture(scope="module")
def client(runs):
    models = load_models([f"{k}={v}" for k, v in runs.items()], device="cpu")
    with TestClient(create_app(models)) as c:
        yield c


def _post(client, name, image: bytes | None = None, **options):
    files = {"image": ("in.png", image, "image/png")} if image is not None else None
    return client.post(f"/api/models/{name}/predict", files=files, data={"options": json.dumps(options)})


def test_models_describe_their_input_and_options(client):
    info = {m["name"]: m for m in client.get("/api/models").json()}
    assert {k: (v["task"], v["accepts"]) for k, v in info.items()} == {
        "denoise": ("autoencode", "image"), "vae": ("vae", "none"), "gan": ("gan", "none"),
        "colour": ("colorize", "image")}
    opts = {k: [o["name"] for o in v["options"]] for k, v in info.items()}
    assert opts == {"denoise": ["add_noise"], "vae": ["n", "seed"], "gan": ["n", "label", "seed"],
                    "colour": ["image_size", "temperature"]}
    gan_label = next(o for o in info["gan"]["options"] if o["name"] == "label")
    assert gan_label["choices"] == info["gan"]["classes"] and len(gan_label["choices"]) == 10
    assert next(o for o in info["vae"]["options"] if o["name"] == "n")["maximum"] == 64


def test_denoiser_answers_like_its_python_api(client, runs):
    from lensforge.tasks import autoencode

    x, _ = blob_digits(1, np.random.default_rng(5))
    r = _post(client, "denoise", png_bytes(x[0]))
    assert r.status_code == 200, r.text
    body = r.json()
    assert list(body["images"]) == ["input", "output"] and body["result"]["denoising_model"] is True
    ae = autoencode.load(runs["denoise"], device="cpu")
    t = torch.tensor(np.asarray(Image.fromarray(x[0]).convert("L"))[None, None]).float() / 255
    want = ae.reconstruct(t)
    got = b64_image(body["images"]["output"])[::4, ::4]          # shown 4x enlarged, nearest neighbour
    assert got.shape == (28, 28)
    assert np.abs(got.astype(int) - (want[0, 0].numpy() * 255).round()).max() <= 1
    assert body["result"]["mse"] == pytest.approx(float((want - t).pow(2).mean()), rel=1e-4)
    noisy = _post(client, "denoise", png_bytes(x[0]), add_noise=0.5).json()
    assert list(noisy["images"]) == ["input", "noisy", "output"]


def test_samplers_are_seeded_and_bounded(client):
    a = _post(client, "vae", n=4, seed=3).json()
    b = _post(client, "vae", n=4, seed=3).json()
    c = _post(client, "vae", n=4, seed=4).json()
    assert a["images"]["samples"] == b["images"]["samples"] != c["images"]["samples"]
    assert b64_image(a["images"]["samples"]).ndim == 2          # grey grid of 4 samples
    r = _post(client, "vae", n=65)
    assert r.status_code == 400 and "n 65" in r.json()["error"]
    g = _post(client, "gan", n=2, label="c3", seed=1)
    assert g.status_code == 200 and g.json()["result"]["label"] == "c3"
    bad = _post(client, "gan", label="c99")
    assert bad.status_code == 400 and "label c99" in bad.json()["error"]


def test_colouriser_returns_before_and_after_at_full_size(client, runs):
    from lensforge.tasks import colorize

    photo = _scene(np.random.default_rng(9), 40)
    r = _post(client, "colour", png_bytes(photo))
    assert r.status_code == 200, r.text
    imgs = {k: b64_image(v) for k, v in r.json()["images"].items()}
    assert list(imgs) == ["before", "grey input", "after"]
    assert imgs["before"].shape == imgs["after"].shape == (40, 40, 3) and imgs["grey input"].shape == (40, 40)
    want = colorize.load(runs["colour"], device="cpu").colorize(photo)
    assert np.array_equal(imgs["after"], want)
    r = _post(client, "colour", png_bytes(photo), temperature=0)
    assert r.status_code == 400 and "temperature" in r.json()["error"]


# ----------------------------------------------------------------------------- segmentation, detection

def _disks(root, n, rng, size=64):
    """Grey noise with bright discs (class 1) for segmentation, as images/ + masks/."""
    for sub in ("images", "masks"):
        (root / sub).mkdir(parents=True, exist_ok=True)
    for i in range(n):
        yy, xx = np.mgrid[:size, :size]
        m = np.zeros((size, size), np.uint8)
        for _ in range(3):
            cy, cx, r = rng.integers(8, size - 8, 2).tolist() + [int(rng.integers(5, 10))]
            m[(yy - cy) ** 2 + (xx - cx) ** 2 < r * r] = 1
        img = (rng.normal(80, 20, (size, size)) + m * 150).clip(0, 255).astype(np.uint8)
        Image.fromarray(img).save(root / "images" / f"{i}.png")
        Image.fromarray(m * 255).save(root / "masks" / f"{i}.png")


def _boxes(root, n, rng, size=(64, 48)):
    """YOLO layout: solid red rectangles on dark noise."""
    (root / "images").mkdir(parents=True, exist_ok=True)
    (root / "labels").mkdir(parents=True, exist_ok=True)
    w, h = size
    for i in range(n):
        img = rng.integers(0, 120, (h, w, 3)).astype(np.uint8)
        bw, bh = rng.integers(12, 24, 2)
        x, y = rng.integers(0, w - bw), rng.integers(0, h - bh)
        img[y:y + bh, x:x + bw] = (230, 40, 40)
        Image.fromarray(img).save(root / "images" / f"{i}.png")
        (root / "labels" / f"{i}.txt").write_text(f"0 {(x + bw / 2) / w} {(y + bh / 2) / h} {bw / w} {bh / h}")


@pytest.fixture(scope="module")
def seg_det(tmp_path_factory):
    from lensforge.tasks import detect, segment

    root = tmp_path_factory.mktemp("serve-segdet")
    rng = np.random.default_rng(0)
    for split, n in (("train", 6), ("test", 2)):
        _disks(root / "disks" / split, n, rng)
        _boxes(root / "rects" / split, {"train": 16, "test": 4}[split], rng)
    (root / "rects" / "data.yaml").write_text("train: train/images\ntest: test/images\nnames: [red]\n")
    seg = segment.train(str(root / "disks"), out=root / "seg", epochs=1, model="unet", width=8, depth=2, crop=48,
                        batch_size=4, steps_per_epoch=4, tile=64, overlap=16, progress=False, elastic=0.0).dir
    det = detect.train(str(root / "rects"), out=str(root / "det"), epochs=1, image_size=64, batch_size=8, mosaic=0.0,
                       ema=0.0, progress=False).dir
    return seg, det


def test_segmenter_and_detector_answer_like_their_python_api(seg_det):
    from lensforge.data.imageio import read_image
    from lensforge.tasks import detect, segment

    seg, det = seg_det
    rng = np.random.default_rng(7)
    grey = (rng.normal(80, 20, (50, 70))).clip(0, 255).astype(np.uint8)
    grey[10:30, 20:40] = 230
    photo = rng.integers(0, 120, (48, 64, 3)).astype(np.uint8)
    photo[10:30, 20:44] = (230, 40, 40)
    with TestClient(create_app(load_models([f"seg={seg}", f"det={det}"], device="cpu"))) as c:
        s = _post(c, "seg", png_bytes(grey))
        assert s.status_code == 200, s.text
        mask = segment.load(seg, device="cpu").predict(read_image(png_bytes(grey), "L"))
        share = s.json()["result"]["share"]
        assert share == pytest.approx({n: float((mask == i).mean()) for i, n in enumerate(share)})
        assert {k: b64_image(v).shape[:2] for k, v in s.json()["images"].items()} == {"overlay": (50, 70),
                                                                                   "mask": (50, 70)}
        d = _post(c, "det", png_bytes(photo), conf=0.0)
        assert d.status_code == 200, d.text
        want = detect.load(det, device="cpu").predict([photo], conf=0.0)[0]
        got = d.json()["result"]["detections"]
        assert got, "conf=0 should keep some boxes even from a 1-epoch detector"
        assert [g["label"] for g in got] == want.labels
        assert np.allclose([g["box"] for g in got], np.round(want.boxes, 1).reshape(-1, 4), atol=0.051)
        assert b64_image(d.json()["images"]["boxes"]).shape == (48, 64, 3)
        bad = _post(c, "det", png_bytes(photo), iou=2)
        assert bad.status_code == 400 and "iou 2" in bad.json()["error"]


def test_style_network_answers_like_its_python_api(tmp_path):
    from pathlib import Path

    from lensforge.tasks import stylize

    weights = Path(__file__).resolve().parents[2] / "shared" / "weights" / "squeezenet1_1-features-caffe.pth"
    if not weights.is_file():
        pytest.skip("shared SqueezeNet weights not present (the style loss needs trained features)")
    rng = np.random.default_rng(0)
    (tmp_path / "photos" / "train").mkdir(parents=True)
    for i in range(4):
        Image.fromarray(rng.integers(0, 255, (40, 48, 3)).astype(np.uint8)).save(tmp_path / "photos" / "train" / f"{i}.png")
    yy, xx = np.mgrid[:32, :32]
    Image.fromarray(np.array([[230, 40, 40], [40, 40, 230]], np.uint8)[((xx + yy) // 4) % 2]).save(tmp_path / "s.png")
    run = stylize.train(str(tmp_path / "photos"), style=str(tmp_path / "s.png"), out=tmp_path / "run", image_size=32,
                        base=4, blocks=1, epochs=1, batch_size=4, features=str(weights), progress=False,
                        precision="fp32")
    photo = rng.integers(0, 255, (30, 60, 3)).astype(np.uint8)
    with TestClient(create_app(load_models([f"style={run.dir}"], device="cpu"))) as c:
        r = _post(c, "style", png_bytes(photo), long_side=40)
        assert r.status_code == 200, r.text
        imgs = {k: b64_image(v) for k, v in r.json()["images"].items()}
        want = stylize.load(run.dir, device="cpu").stylize(stylize.load_rgb(png_bytes(photo), 40))
        assert imgs["before"].shape == imgs["after"].shape == (20, 40, 3)
        assert np.abs(imgs["after"].astype(int) - (want[0].permute(1, 2, 0).numpy() * 255).round()).max() <= 1
        bad = _post(c, "style", png_bytes(photo), long_side=8)
        assert bad.status_code == 400 and "long_side 8" in bad.json()["error"]
