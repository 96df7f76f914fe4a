"""The web page in a real headless Chromium (Debian's `chromium`, driven by Playwright's Python
package): upload a digit, draw one on the canvas, read the predicted class off the page, see an
error as a readable line. Skips, saying why, only where no Chromium is installed (`make browser`
installs it where apt-get may run).

LENSFORGE_SERVE_SCREENSHOTS=DIR also keeps the screenshots there (docs/img/serve_*.png come from it).
"""
from __future__ import annotations

import base64
import io
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

sync_api = pytest.importorskip("playwright.sync_api", reason="the playwright Python package is not installed")

CHROMIUM = os.environ.get("LENSFORGE_CHROMIUM") or shutil.which("chromium") or (
    "/usr/bin/chromium" if Path("/usr/bin/chromium").exists() else None)
if CHROMIUM is None:
    pytest.skip("no Chromium: install Debian's chromium package (`make browser` does, as root)", allow_module_level=True)

FLAGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update"]


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    from lensforge.serve import create_app, load_models, start_background
    from lensforge.tasks import classify

    run = tmp_path_factory.mktemp("serve-browser") / "digits-mlp"
    classify.train("digits", model="mlp", epochs=1, batch_size=64, out=run, progress=False)
    server = start_background(create_app(load_models([f"digits={run}"])))
    yield server.url, classify.load(run)
    server.stop()


@pytest.fixture(scope="module")
def browser():
    with sync_api.sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=FLAGS)
        yield b
        b.close()


def _shot(page, tmp_path: Path, name: str) -> Path:
    path = tmp_path / name
    page.screenshot(path=str(path), full_page=True)
    keep = os.environ.get("LENSFORGE_SERVE_SCREENSHOTS")
    if keep:
        Path(keep).mkdir(parents=True, exist_ok=True)
        shutil.copyfile(path, Path(keep) / name)
    return path


def _digit_png(path: Path, k: int) -> Path:
    from sklearn.datasets import load_digits

    d = load_digits()
    ink = (d.images[int(np.flatnonzero(d.target == k)[0])] / 16 * 255).astype(np.uint8)
    Image.fromarray(255 - ink).resize((96, 96), Image.BILINEAR).save(path)
    return path


def test_page_upload_draw_and_error(served, browser, tmp_path):
    url, clf = served
    page = browser.new_page(viewport={"width": 1100, "height": 760})
    page.goto(url + "/")
    page.wait_for_selector("#model option[value=digits]", state="attached")
    assert page.is_visible("#canvas") and page.is_visible("#file")

    # upload: the page shows the class the Python API gives for the same file, with top-5 bars
    digit = _digit_png(tmp_path / "four.png", 4)
    page.set_input_files("#file", str(digit))
    page.wait_for_selector("#top-label")
    expected = clf.predict([digit], top_k=5)[0]
    assert page.inner_text("#top-label") == expected.label
    assert page.locator(".bar-row").count() == 5
    assert page.locator(".bar-row .bar-label").all_inner_texts() == [l for l, _ in expected.top]
    assert page.is_visible("figure img[alt='model input']")
    shot = _shot(page, tmp_path, "serve_classify_upload.png")
    assert Image.open(shot).size[0] >= 1000

    # draw a "1" with the mouse: a vertical stroke; the page's answer is the model's for that drawing
    page.click("#clear")
    box = page.locator("#canvas").bounding_box()
    x = box["x"] + box["width"] * 0.5
    page.mouse.move(x, box["y"] + box["height"] * 0.15)
    page.mouse.down()
    for i in range(1, 21):
        page.mouse.move(x + i * 0.4, box["y"] + box["height"] * (0.15 + 0.7 * i / 20))
    page.mouse.up()
    page.click("#predict-drawing")
    page.wait_for_selector("#top-label")
    shown = page.inner_text("#top-label")
    drawn = page.evaluate("document.getElementById('canvas').toDataURL('image/png')")
    png = base64.b64decode(drawn.split(",", 1)[1])
    grey = np.asarray(Image.open(io.BytesIO(png)).convert("L"))
    assert (grey < 128).mean() > 0.01, "the stroke did not reach the canvas"
    assert shown == clf.predict([png])[0].label
    _shot(page, tmp_path, "serve_classify_draw.png")

    # a text file: a readable one-line message on the page, no stack trace
    bad = tmp_path / "notes.txt"
    bad.write_text("not a picture")
    page.set_input_files("#file", str(bad))
    page.wait_for_selector("#error:not([hidden])")
    msg = page.inner_text("#error")
    assert "notes.txt" in msg and "not an image" in msg and "Traceback" not in msg
    assert page.locator("#top-label").count() == 0
    _shot(page, tmp_path, "serve_error.png")
    page.close()
