"""`lensforge serve` for face swap: an uploaded photo is converted exactly as `faceswap convert`'s
FrameConverter converts it (largest face, direction, label), with the provenance record in the
answer; a photo without a face is a normal answer, not an error (tiny model trained here)."""
from __future__ import annotations

import base64
import json

import cv2
import numpy as np
import pytest
import torch
from PIL import Image
from skimage import data as skdata

pytest.importorskip("fastapi")
with __import__("warnings").catch_warnings():   # starlette's notice that httpx2 exists; httpx is what we pin
    __import__("warnings").simplefilter("ignore")
    from fastapi.testclient import TestClient  # noqa: E402

from conftest import astronaut_face_pair, b64_image, png_bytes  # noqa: E402
from lensforge.faces.provenance import KEY, read_provenance  # noqa: E402
from lensforge.options import make  # noqa: E402
from lensforge.serve import Upload, create_app, load_model, load_models  # noqa: E402
from lensforge.specs.faceswap import ConvertOptions  # noqa: E402
from lensforge.tasks import faceswap  # noqa: E402
from lensforge.tasks.apply import encode_image  # noqa: E402


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """The astronaut face pair (conftest). One short epoch: what is served is under test, not how
    well it swaps."""
    root = tmp_path_factory.mktemp("serve-fs")
    astronaut_face_pair(root)
    torch.set_num_threads(1)
    return faceswap.train(a=root / "a", b=root / "b", out=root / "run", image_size=32, width=8, latent=16, epochs=1,
                          steps=2, batch_size=4, holdout=2, progress=False).dir


@pytest.fixture(scope="module")
def client(run):
    with TestClient(create_app(load_models([f"swap={run}"], device="cpu"))) as c:
        yield c


PHOTO = cv2.resize(skdata.astronaut(), (200, 200), interpolation=cv2.INTER_AREA)


def _post(client, image: bytes | None, **options):
    files = {"image": ("in.png", image, "image/png")} if image is not None else None
    return client.post("/api/models/swap/predict", files=files, data={"options": json.dumps(options)})


def _python_api(run, photo, **options):
    o = make(ConvertOptions, {"weights": str(run), "inputs": ["-"], "out": "-", **options})
    conv = faceswap.FrameConverter(faceswap.load(run, device="cpu"), o)
    out, n = conv(photo)
    return out, n, conv.touched


def test_model_describes_its_options(client):
    info = client.get("/api/models/swap").json()
    assert (info["task"], info["accepts"], info["input_size"], info["classes"]) == ("faceswap", "image", None, None)
    opts = {o["name"]: o for o in info["options"]}
    assert list(opts) == ["direction", "all_faces", "mask", "color", "seamless", "feather", "label"]
    assert opts["direction"]["choices"] == ["a2b", "b2a"] and opts["direction"]["default"] == "a2b"
    assert opts["all_faces"]["default"] is False and opts["label"]["default"] is False


@pytest.mark.parametrize("options", [{"mask": "landmarks"},
                                     {"mask": "landmarks", "direction": "b2a", "seamless": True}])
def test_photo_is_converted_as_the_python_api_converts_it(client, run, options):
    r = _post(client, png_bytes(PHOTO), **options)
    assert r.status_code == 200, r.text
    body = r.json()
    res, imgs = body["result"], {k: b64_image(v) for k, v in body["images"].items()}
    assert list(imgs) == ["before", "after"] and np.array_equal(imgs["before"], PHOTO)
    want, n, touched = _python_api(run, PHOTO, **options)
    assert n == 1 and np.array_equal(imgs["after"], want)
    assert res["faces_found"] >= 1 and res["faces_swapped"] == 1 and len(res["faces"]) == 1
    assert res["direction"] == options.get("direction", "a2b") and "message" not in res
    assert res["changed_pixels"] == int(touched.sum()) > 300
    assert np.array_equal(imgs["after"][~touched], PHOTO[~touched])      # nothing outside the blend mask
    assert (imgs["after"][touched] != PHOTO[touched]).any()
    assert res["provenance"]["altered_by"] == "lensforge faceswap" and res["provenance"]["source"] == "in.png"
    assert res["provenance"]["direction"] == res["direction"]


def test_label_is_stamped_and_recorded(client):
    plain = b64_image(_post(client, png_bytes(PHOTO), mask="landmarks").json()["images"]["after"])
    r = _post(client, png_bytes(PHOTO), mask="landmarks", label=True).json()
    labelled = b64_image(r["images"]["after"])
    changed = np.any(labelled != plain, axis=2)
    ys, xs = np.nonzero(changed)
    assert changed.sum() > 50 and ys.min() > 150 and xs.max() < 120  # the mark, bottom left, and nothing else
    assert r["result"]["provenance"]["visible_label"] is True


def test_photo_without_a_face_is_a_clear_answer(client):
    cup = cv2.resize(skdata.coffee(), (160, 120), interpolation=cv2.INTER_AREA)
    r = _post(client, png_bytes(cup))
    assert r.status_code == 200, r.text
    res, imgs = r.json()["result"], r.json()["images"]
    assert res["faces_found"] == 0 and res["faces_swapped"] == 0 and res["faces"] == [] and res["changed_pixels"] == 0
    assert "no face found" in res["message"] and "unchanged" in res["message"]
    assert np.array_equal(b64_image(imgs["after"]), cup)


def test_bad_options_and_bad_uploads_are_one_line_4xx(client):
    bad = _post(client, png_bytes(PHOTO), direction="sideways")
    assert bad.status_code == 400 and "direction" in bad.json()["error"]
    assert _post(client, png_bytes(PHOTO), weights="x").status_code == 400   # only the served options are taken
    broken = _post(client, b"\x89PNG\r\n\x1a\n truncated")
    assert broken.status_code == 422 and "in.png" in broken.json()["error"]
    assert _post(client, None).status_code == 422


def test_converted_image_carries_the_provenance_text_chunks(run, tmp_path):
    """The adapter hands the server the same PNG text chunks `faceswap convert` writes (Comment,
    lensforge-provenance), so `read_provenance` recognises an image encoded with them."""
    m = load_model("swap", run, device="cpu")
    out = m.run(Upload(png_bytes(PHOTO), "photo.png"), m.options({"mask": "landmarks"}))
    assert set(out.text) == {"after"} and json.loads(out.text["after"][KEY]) == out.result["provenance"]
    path = tmp_path / "served.png"
    path.write_bytes(encode_image(out.images["after"], "PNG", out.text["after"]))
    assert read_provenance(path) == out.result["provenance"]
    assert np.array_equal(np.asarray(Image.open(path)), out.images["after"])


def test_after_png_carries_the_provenance_tag(client, tmp_path):
    r = _post(client, png_bytes(PHOTO), mask="landmarks").json()
    path = tmp_path / "after.png"
    path.write_bytes(base64.b64decode(r["images"]["after"]))
    assert read_provenance(path) == r["result"]["provenance"]
    before = tmp_path / "before.png"
    before.write_bytes(base64.b64decode(r["images"]["before"]))
    assert read_provenance(before) is None     # the upload as it came is not tagged
