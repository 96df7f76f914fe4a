"""`lensforge serve`: the REST API's answers, limits, errors and worker pool (in-process, no browser)."""
from __future__ import annotations

import csv
import io
import json
import os
import struct
import threading
import time
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

pytest.importorskip("fastapi")
with __import__("warnings").catch_warnings():   # starlette's notice that httpx2 exists; httpx is what we pin
    __import__("warnings").simplefilter("ignore")
    from fastapi.testclient import TestClient  # noqa: E402

from lensforge.cli import main as cli_main  # noqa: E402
from lensforge.errors import CheckpointError, UsageError  # noqa: E402
from lensforge.options import option  # noqa: E402
from lensforge.serve import Adapter, Output, WorkerPool, create_app, load_models  # noqa: E402
from lensforge.serve.adapters import parse_model_args  # noqa: E402
from lensforge.serve.server import exposure_warning, spawn  # noqa: E402


# ----------------------------------------------------------------------------- fixtures

@pytest.fixture(scope="module")
def clf_run(tmp_path_factory):
    from lensforge.tasks import classify

    out = tmp_path_factory.mktemp("serve") / "digits-mlp"
    classify.train("digits", model="mlp", epochs=1, batch_size=64, out=out, progress=False)
    return out


@pytest.fixture(scope="module")
def models(clf_run):
    return load_models([f"digits={clf_run}"])


@pytest.fixture()
def client(models):
    with TestClient(create_app(models)) as c:
        yield c


def png_bytes(img: Image.Image) -> bytes:
    buf = io.BytesIO()
    img.save(buf, "PNG")
    return buf.getvalue()


def digit_image(k: int = 3, side: int = 96) -> Image.Image:
    """A scikit-learn digit, dark ink on white paper and enlarged, as a person's scan would be."""
    from sklearn.datasets import load_digits

    d = load_digits()
    i = int(np.flatnonzero(d.target == k)[0])
    ink = (d.images[i] / 16 * 255).astype(np.uint8)
    return Image.fromarray(255 - ink).resize((side, side), Image.BILINEAR)


def png_header_only(width: int, height: int) -> bytes:
    """A PNG that claims width x height pixels and holds none: a decompression bomb's header."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 64)) + chunk(b"IEND", b"")


def post(client, name="digits", data: bytes | None = None, filename="x.png", options=None, headers=None):
    files = {"image": (filename, data, "application/octet-stream")} if data is not None else None
    form = {"options": json.dumps(options) if isinstance(options, dict) else options} if options is not None else None
    return client.post(f"/api/models/{name}/predict", files=files, data=form, headers=headers)


def one_line_error(r, status: int, *parts: str) -> str:
    assert r.status_code == status, r.text
    body = r.json()
    assert set(body) == {"error"}, body
    msg = body["error"]
    assert "\n" not in msg and "Traceback" not in msg
    for p in parts:
        assert p in msg, (p, msg)
    return msg


# ----------------------------------------------------------------------------- what the API says

def test_models_health_and_schema(client):
    m = client.get("/api/models").json()
    assert [x["name"] for x in m] == ["digits"]
    info = m[0]
    assert info["task"] == "classify" and info["model"] == "mlp"
    assert info["classes"] == [str(i) for i in range(10)] and info["input_size"] == [28, 28]
    assert info["accepts"] == "image" and info["draw"] is True
    assert info["options"] == [{"name": "top_k", "type": "integer", "default": 5, "nullable": False, "minimum": 1,
                                "maximum": 10, "choices": None, "help": "also list the K most likely classes"}]
    assert client.get("/api/models/digits").json() == info
    h = client.get("/api/health").json()
    assert h["status"] == "ok" and h["models"] == 1 and h["workers"] == 1
    schema = client.get("/openapi.json").json()
    assert {"/api/health", "/api/models", "/api/models/{name}", "/api/models/{name}/predict"} <= set(schema["paths"])
    assert "securitySchemes" not in schema.get("components", {})       # no token: none claimed
    assert client.get("/docs").status_code == 200
    page = client.get("/")
    assert page.status_code == 200 and 'id="canvas"' in page.text
    assert client.get("/static/app.js").status_code == 200


def test_api_prediction_equals_cli_predict(client, clf_run, tmp_path, capsys):
    path = tmp_path / "three.png"
    path.write_bytes(png_bytes(digit_image(3)))
    out_csv = tmp_path / "preds.csv"
    assert cli_main(["classify", "predict", "--weights", str(clf_run), str(path), "--out", str(out_csv)]) == 0
    row = next(csv.DictReader(out_csv.open()))
    r = post(client, data=path.read_bytes(), filename="three.png", options={"top_k": 3})
    assert r.status_code == 200, r.text
    res = r.json()["result"]
    assert res["label"] == row["label"]
    assert res["confidence"] == pytest.approx(float(row["confidence"]), rel=1e-5)   # the CSV keeps 6 digits
    assert [t["label"] for t in res["top"]][0] == row["label"] and len(res["top"]) == 3
    confs = [t["confidence"] for t in res["top"]]
    assert confs == sorted(confs, reverse=True)
    # the model input image comes back as a PNG: the digit centred in 28x28, shown 4x larger
    img = Image.open(io.BytesIO(__import__("base64").b64decode(r.json()["images"]["model input"])))
    assert img.size == (112, 112)


def test_classifier_reads_digits(client):
    """The tiny model beats chance (10%) by far on clean digits sent through the API."""
    hits = sum(post(client, data=png_bytes(digit_image(k))).json()["result"]["label"] == str(k) for k in range(10))
    assert hits >= 6


# ----------------------------------------------------------------------------- bad input: 4xx, one line

def test_bad_uploads_get_422_with_one_line(client):
    one_line_error(post(client, data=b"hello, I am text\n", filename="notes.txt"), 422, "notes.txt", "not an image")
    one_line_error(post(client, data=b"", filename="empty.png"), 422, "empty.png", "empty")
    good = png_bytes(digit_image(5))
    one_line_error(post(client, data=good[: len(good) // 2], filename="cut.png"), 422, "cut.png")
    one_line_error(post(client, data=png_header_only(100_000, 100_000), filename="bomb.png"), 422, "bomb.png",
                   "decompression bomb")
    one_line_error(post(client), 422, "image")                               # no upload at all
    one_line_error(client.post("/api/models/digits/predict", json={"image": "x"}), 422)   # not multipart


def test_unknown_model_is_404(client):
    one_line_error(post(client, name="nope", data=png_bytes(digit_image())), 404, "nope", "digits")
    one_line_error(client.get("/api/models/nope"), 404, "no model named")
    assert client.get("/api/nothing").status_code == 404


def test_bad_options_are_400_naming_the_option(client):
    img = png_bytes(digit_image())
    one_line_error(post(client, data=img, options="{top_k: 3"), 400, "not valid JSON")
    one_line_error(post(client, data=img, options="[1, 2]"), 400, "JSON object")
    one_line_error(post(client, data=img, options={"top_k": 11}), 400, "top_k 11", "between 1 and 10")
    one_line_error(post(client, data=img, options={"top_k": "many"}), 400, "top_k", "whole number")
    one_line_error(post(client, data=img, options={"colour": True}), 400, "unknown option", "colour")


def test_oversize_upload_is_413(models):
    big = os.urandom(300_000)   # 0.3 MB against a 0.1 MB limit
    with TestClient(create_app(models, max_upload_mb=0.1)) as c:
        one_line_error(post(c, data=big), 413, "0.1 MB", "--max-upload-mb")
        # without a Content-Length (chunked), the count while reading stops it
        boundary = "b0undary"
        head = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"image\"; filename=\"big.png\"\r\n"
                f"Content-Type: image/png\r\n\r\n").encode()

        def chunks():
            yield head
            for i in range(0, len(big), 16384):
                yield big[i:i + 16384]
            yield f"\r\n--{boundary}--\r\n".encode()

        r = c.post("/api/models/digits/predict", content=chunks(),
                   headers={"content-type": f"multipart/form-data; boundary={boundary}"})
        one_line_error(r, 413, "--max-upload-mb")
        assert post(c, data=png_bytes(digit_image())).status_code == 200   # small ones still pass


def test_token_is_required_when_set(models):
    with TestClient(create_app(models, token="s3cret")) as c:
        r = c.get("/api/models")
        one_line_error(r, 401, "bearer token")
        assert r.headers["www-authenticate"] == "Bearer"
        one_line_error(c.get("/api/models", headers={"Authorization": "Bearer wrong"}), 401)
        one_line_error(post(c, data=png_bytes(digit_image())), 401)
        ok = {"Authorization": "Bearer s3cret"}
        assert c.get("/api/models", headers=ok).status_code == 200
        assert post(c, data=png_bytes(digit_image()), headers=ok).status_code == 200
        assert c.get("/api/health").status_code == 200          # liveness stays open
        assert "HTTPBearer" in c.get("/openapi.json").json()["components"]["securitySchemes"]


# ----------------------------------------------------------------------------- the worker pool

@dataclass(kw_only=True)
class _NoOptions:
    wait: bool = option(True, "block on the test's event")


class Blocking(Adapter):
    """A model whose run blocks until the test releases it: a worker held as long as we like."""

    task = "test-blocking"
    accepts = "none"
    Options = _NoOptions

    def __init__(self):
        super().__init__("blocker", Path("."), {"model_name": "blocker"}, "cpu")
        self.release, self.started = threading.Event(), threading.Event()

    def run(self, upload, opts):
        self.started.set()
        if opts.wait:
            assert self.release.wait(60), "the test never released the worker"
        return Output({"ok": True})


def _until(cond, what: str, limit: float = 30.0) -> None:
    end = time.monotonic() + limit
    while not cond():
        assert time.monotonic() < end, f"gave up waiting for {what}"
        time.sleep(0.005)


def test_busy_worker_gives_503_not_a_hang():
    m = Blocking()
    pool = WorkerPool(workers=1, queue=4, timeout=0.2)
    with TestClient(create_app([m], pool=pool)) as c:
        # A holds the only worker past the timeout: 503, and the worker stays held (it cannot be killed)
        msg = one_line_error(post(c, name="blocker"), 503, "did not answer within --timeout 0.2 s")
        assert m.started.is_set() and pool.running == 1
        # B finds no free worker within the timeout: 503 too
        r = post(c, name="blocker", options={"wait": False})
        assert one_line_error(r, 503, "no worker became free") != msg and r.headers["retry-after"] == "1"
        # a full queue refuses at once
        pool.queue = 0
        one_line_error(post(c, name="blocker", options={"wait": False}), 503, "already waiting")
        m.release.set()
        _until(lambda: c.get("/api/health").json()["running"] == 0, "the worker to finish")
        pool.timeout, pool.queue = 60.0, 4
        r = post(c, name="blocker", options={"wait": False})
        assert r.status_code == 200 and r.json()["result"] == {"ok": True}
        h = c.get("/api/health").json()
        assert h["refused"] == 3 and h["served"] == 1 and h["waiting"] == 0


# ----------------------------------------------------------------------------- command line

def test_model_names_and_load_errors(clf_run, tmp_path):
    best = clf_run / "weights" / "best.pt"
    assert parse_model_args([str(clf_run), str(best), f"mine={best}"]) == [
        ("digits-mlp", clf_run), ("digits-mlp-2", best), ("mine", best)]
    with pytest.raises(UsageError, match="no such run folder"):
        parse_model_args([str(tmp_path / "missing")])
    with pytest.raises(UsageError, match="given twice"):
        parse_model_args([f"a={best}", f"a={clf_run}"])
    junk = tmp_path / "junk.pt"
    junk.write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointError, match="junk.pt"):
        load_models([str(junk)])
    assert exposure_warning("127.0.0.1") is None and exposure_warning("localhost") is None
    assert "0.0.0.0" in exposure_warning("0.0.0.0")


def test_cli_refuses_bad_options_in_one_line(clf_run, tmp_path, capsys):
    import socket

    taken = socket.socket()
    taken.bind(("127.0.0.1", 0))
    taken.listen(1)
    for argv, part in ((["serve", "--port", str(taken.getsockname()[1]), str(clf_run)], "Address already in use"),
                       (["serve", "--port", "70000", str(clf_run)], "--port 70000"),
                       (["serve", str(tmp_path / "none")], "no such run folder"),
                       (["serve", "--token", " ", str(clf_run)], "--token"),
                       (["serve", "--max-upload-mb", "0", str(clf_run)], "--max-upload-mb")):
        assert cli_main(argv) == 2
        err = capsys.readouterr().err.strip()
        assert part in err and len(err.splitlines()) == 1, err
    taken.close()


def test_lensforge_serve_command_serves(clf_run):
    """The real command: binds loopback on a free port, says where, answers, stops on SIGTERM."""
    import httpx

    proc, url, lines = spawn([str(clf_run)], timeout=120, env={"OMP_NUM_THREADS": "1"})
    try:
        assert url and url.startswith("http://127.0.0.1:"), lines
        assert any("model digits-mlp: classify (mlp)" in l for l in lines)
        assert httpx.get(url + "api/health", timeout=30).json()["models"] == 1
        r = httpx.post(url + "api/models/digits-mlp/predict", timeout=30,
                       files={"image": ("d.png", png_bytes(digit_image(7)), "image/png")})
        assert r.status_code == 200 and r.json()["result"]["label"] in [str(i) for i in range(10)]
    finally:
        proc.terminate()
        proc.wait(30)
    assert "Traceback" not in proc.stderr.read()
