"""The classify CLI end to end: run folder artefacts, predict on awkward files, clear errors."""
from __future__ import annotations

import csv
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageDraw

from lensforge.cli import main

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def digits_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("runs") / "digits"
    code = main(["classify", "train", "--data", "digits", "--epochs", "6", "--batch-size", "64", "--lr", "3e-3",
                 "--out", str(out), "--no-progress"])
    assert code == 0
    return out


def test_run_folder_has_everything(digits_run):
    for name in ("config.yaml", "metrics.csv", "results.json", "weights/best.pt", "weights/last.pt",
                 "curves.png", "confusion_matrix.png", "report.html", "per_class.csv"):
        assert (digits_run / name).is_file(), name
    res = json.loads((digits_run / "results.json").read_text())
    for key in ("test_accuracy", "best_epoch", "train_seconds", "device", "precision"):
        assert key in res
    assert res["test_accuracy"] > 0.9  # chance is 0.1
    html = (digits_run / "report.html").read_text()
    assert html.count("data:image/png;base64,") >= 2 and "src=\"http" not in html


def _draw_digit_one(path, size=(300, 200), mode="RGB", ink=0, paper=255):
    img = Image.new(mode, size, paper if mode == "L" else (paper,) * 3)
    d = ImageDraw.Draw(img)
    w, h = size
    d.line([(w // 2, h // 5), (w // 2, 4 * h // 5)], fill=ink if mode == "L" else (ink,) * 3, width=max(6, w // 25))
    img.save(path)


def test_predict_awkward_files(digits_run, tmp_path, capsys):
    files = tmp_path / "in"
    files.mkdir()
    _draw_digit_one(files / "one.jpg")
    _draw_digit_one(files / "one_grey.png", mode="L")
    rgba = Image.new("RGBA", (64, 80), (0, 0, 0, 0))
    ImageDraw.Draw(rgba).line([(32, 10), (32, 70)], fill=(0, 0, 0, 255), width=6)
    rgba.save(files / "alpha.png")
    Image.new("CMYK", (40, 40), (0, 0, 0, 0)).save(files / "cmyk.jpg")
    Image.fromarray((np.arange(1600).reshape(40, 40) * 20).astype(np.uint16)).save(files / "sixteen.png")
    frames = [Image.new("P", (30, 30), i) for i in range(3)]
    frames[0].save(files / "anim.gif", save_all=True, append_images=frames[1:])
    (files / "empty.png").write_bytes(b"")
    good = (files / "one.jpg").read_bytes()
    (files / "truncated.jpg").write_bytes(good[: len(good) // 2])
    (files / "notes.txt").write_text("hello")
    out_csv = tmp_path / "preds.csv"
    # A path that does not exist is one usage error for every apply verb, before any work.
    code = main(["classify", "predict", "--weights", str(digits_run), str(files), str(tmp_path / "missing.png"),
                 "--out", str(out_csv)])
    captured = capsys.readouterr()
    assert code == 2 and "missing.png: no such file or folder" in captured.err and not out_csv.exists()
    code = main(["classify", "predict", "--weights", str(digits_run), str(files), str(files / "notes.txt"),
                 "--top-k", "3", "--out", str(out_csv)])
    captured = capsys.readouterr()
    assert code == 1  # some files failed
    assert "Traceback" not in captured.err
    rows = {Path(r["file"]).name: r for r in csv.DictReader(out_csv.open())}
    assert set(rows) >= {"one.jpg", "alpha.png", "cmyk.jpg", "sixteen.png", "anim.gif", "empty.png",
                         "truncated.jpg", "notes.txt"}
    for ok in ("one.jpg", "one_grey.png", "alpha.png", "cmyk.jpg", "sixteen.png", "anim.gif"):
        assert rows[ok]["error"] == "" and rows[ok]["label"] != "", ok
    assert out_csv.read_text().endswith("\n") and out_csv.read_text().splitlines()[0] == "file,label,confidence,top_k,error"
    for bad in ("empty.png", "truncated.jpg", "notes.txt"):
        assert rows[bad]["error"] and rows[bad]["label"] == "", bad
        assert sum(bad in line for line in captured.err.splitlines()) == 1
    assert rows["one.jpg"]["label"] == "1"  # a photo of a '1', inverted and centred like MNIST
    assert len(rows["one.jpg"]["top_k"].split(";")) == 3


def test_python_api_predict_and_eval(digits_run):
    from lensforge.tasks import classify

    clf = classify.load(digits_run / "weights" / "best.pt")
    img = np.zeros((28, 28), np.uint8)
    img[4:24, 12:16] = 255
    preds = clf.predict([img, b"not an image"])
    assert preds[0].label == "1" and 0 < preds[0].confidence <= 1
    assert preds[1].error and preds[1].label is None
    res = classify.evaluate(digits_run)  # the data the run was trained on, by default
    assert res["data"] == "digits" and res["test_accuracy"] > 0.9 and res["test_images"] == 359


def run_cli(*args):
    return subprocess.run([sys.executable, "-m", "lensforge", *args], capture_output=True, text=True, cwd=ROOT)


@pytest.mark.parametrize("args, code, text", [
    (["classify", "train", "--epochs", "abc"], 2, "invalid int value"),
    (["classify", "train", "--bogus"], 2, "unrecognized arguments"),
    (["classify", "train", "--data", "/no/such/folder"], 2, "not a known dataset"),
    (["classify", "train", "--epochs", "0", "--no-progress"], 2, "--epochs 0: must be between 1 and"),
    (["classify", "train", "--image-size", "100000"], 2, "--image-size 100000: must be between 4 and 1024"),
    (["classify", "train", "--model", "mlp", "--width", "8"], 2, "--width/--blocks apply to the cnn, resnet and whitenet"),
    (["classify", "train", "--model", "vgg99", "--epochs", "1"], 2, "invalid choice: 'vgg99'"),
    (["classify", "predict", "--weights", "/no/such.pt", "x.png"], 2, "no such weights file"),
    (["classify", "train", "--resume", "/no/such/run"], 2, "no weights/last.pt"),
    (["nosuchtask"], 2, "invalid choice"),
])
def test_cli_errors_are_one_line(args, code, text):
    r = run_cli(*args)
    assert r.returncode == code, r.stderr
    assert text in r.stderr
    assert "Traceback" not in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1, r.stderr


def test_predict_with_not_a_checkpoint(tmp_path):
    (tmp_path / "w.pt").write_bytes(b"garbage")
    r = run_cli("classify", "predict", "--weights", str(tmp_path / "w.pt"), str(tmp_path))
    assert r.returncode == 1 and "not a readable PyTorch checkpoint" in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1


def test_own_folder_zip_train_and_predict(tmp_path):
    """A user's zip of class folders trains a resnet; predict on a full-size photo of one class."""
    import zipfile

    from conftest import write_image_folder

    root = write_image_folder(tmp_path / "src" / "colours", classes=("red", "green", "blue"), n=16, size=(24, 24))
    zpath = tmp_path / "colours.zip"
    with zipfile.ZipFile(zpath, "w") as z:
        for f in root.rglob("*.png"):
            z.write(f, f.relative_to(tmp_path / "src").as_posix())
    out = tmp_path / "run"
    assert main(["classify", "train", "--data", str(zpath), "--model", "resnet", "--epochs", "8", "--batch-size", "16",
                 "--out", str(out), "--no-progress"]) == 0
    res = json.loads((out / "results.json").read_text())
    assert res["test_accuracy"] >= 0.8  # chance is 1/3
    photo = tmp_path / "big_green.jpg"
    arr = np.random.default_rng(1).integers(0, 60, (480, 640, 3)).astype(np.uint8)
    arr[..., 1] += 150
    Image.fromarray(arr).save(photo)
    from lensforge.tasks import classify
    pred = classify.load(out).predict([photo])[0]
    assert pred.error is None and pred.label == "green"
