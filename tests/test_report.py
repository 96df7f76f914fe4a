import re
import warnings

import numpy as np
import pytest
from PIL import Image

from lensforge.report import write_report
from lensforge.report.plots import (
    image_grid,
    per_class_table,
    plot_confusion_matrix,
    plot_curves,
    save_image_grid_png,
)

PNG_SIG = b"\x89PNG\r\n\x1a\n"


def assert_png(path):
    assert path.read_bytes()[:8] == PNG_SIG
    with Image.open(path) as im:
        im.verify()
    with Image.open(path) as im:
        return im.size


def assert_no_temp_files(folder):
    leftovers = [p.name for p in folder.iterdir() if p.name.startswith(".") or p.name.endswith(".tmp")]
    assert leftovers == []


def test_plot_curves_one_epoch(tmp_path):
    path = tmp_path / "curves.png"
    plot_curves([{"epoch": 1, "train_loss": 0.9, "val_loss": 1.1, "val_accuracy": 0.6, "lr": 0.1}], path)
    assert_png(path)
    assert_no_temp_files(tmp_path)


def test_plot_curves_five_epochs_csv_strings_and_gaps(tmp_path):
    # Rows as csv.DictReader returns them: strings, "" where a value is missing.
    rows = [
        {"epoch": str(e), "train_loss": str(1 / e), "val_loss": "" if e == 3 else str(1.2 / e),
         "train_accuracy": str(0.5 + e / 20), "val_accuracy": str(0.4 + e / 20),
         "lr": str(0.1 * 0.5 ** e), "top5_accuracy": "nan" if e == 2 else "0.9"}
        for e in range(1, 6)
    ]
    path = tmp_path / "curves.png"
    plot_curves(rows, path)
    assert_png(path)


def test_plot_curves_without_metric_columns(tmp_path):
    path = tmp_path / "curves.png"
    plot_curves([{"epoch": 1, "train_loss": 1.0}, {"epoch": 2, "train_loss": 0.5}], path)
    assert_png(path)


@pytest.mark.parametrize("k", [3, 30])
def test_confusion_matrix(tmp_path, k):
    rng = np.random.default_rng(0)
    cm = rng.integers(0, 50, size=(k, k)) + np.eye(k, dtype=int) * 200
    cm[0] = 0  # a class absent from the data must not break normalisation
    path = tmp_path / "cm.png"
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        plot_confusion_matrix(cm, [f"class_{i}" for i in range(k)], path)
    assert_png(path)
    plot_confusion_matrix(cm, [str(i) for i in range(k)], tmp_path / "raw.png", normalize=False)
    assert_png(tmp_path / "raw.png")


def test_confusion_matrix_rejects_wrong_names(tmp_path):
    with pytest.raises(ValueError):
        plot_confusion_matrix(np.eye(3), ["a", "b"], tmp_path / "cm.png")


def test_image_grid_grey_uint8_upscaled(tmp_path):
    images = np.random.default_rng(0).integers(0, 256, size=(10, 1, 28, 28), dtype=np.uint8)
    path = tmp_path / "grid.png"
    image_grid(images, path, ncols=5)
    w, h = assert_png(path)
    assert w >= 5 * 28 * 2 and h >= 2 * 28 * 2  # tiny digits are enlarged


def test_image_grid_rgb_float_with_titles(tmp_path):
    images = np.random.default_rng(1).random((6, 3, 32, 32), dtype=np.float32)
    titles = [f"true: {i} / pred: {(i + 1) % 10} ({0.9 + i / 100:.2f})" for i in range(6)]
    colors = ["red" if i % 2 else "green" for i in range(6)]
    path = tmp_path / "mistakes.png"
    image_grid(images, path, titles=titles, title_colors=colors, ncols=3, scale=2)
    assert_png(path)
    assert_no_temp_files(tmp_path)


def test_image_grid_empty_and_bad_titles(tmp_path):
    image_grid(np.zeros((0, 1, 28, 28), np.uint8), tmp_path / "empty.png")
    assert_png(tmp_path / "empty.png")
    with pytest.raises(ValueError):
        image_grid(np.zeros((2, 1, 8, 8), np.uint8), tmp_path / "x.png", titles=["only one"])


def test_save_image_grid_png(tmp_path):
    grey = np.full((5, 1, 8, 6), 200, dtype=np.uint8)
    save_image_grid_png(grey, tmp_path / "grey.png", ncols=4, padding=2)
    assert assert_png(tmp_path / "grey.png") == (4 * (6 + 2) + 2, 2 * (8 + 2) + 2)
    with Image.open(tmp_path / "grey.png") as im:
        assert im.mode == "L"
        assert im.getpixel((2, 2)) == 200
    rgb = np.ones((3, 3, 4, 4), dtype=np.float32)
    save_image_grid_png(rgb, tmp_path / "rgb.png", ncols=8, padding=0)
    with Image.open(tmp_path / "rgb.png") as im:
        assert im.mode == "RGB" and im.size == (12, 4)
        assert im.getpixel((0, 0)) == (255, 255, 255)


def test_per_class_table_2x2():
    # true 0: 8 right, 2 wrong; true 1: 1 wrong, 4 right
    rows = per_class_table(np.array([[8, 2], [1, 4]]), ["cat", "dog"])
    assert rows[0] == {"class": "cat", "precision": round(8 / 9, 4), "recall": 0.8,
                       "f1": round(2 * (8 / 9) * 0.8 / (8 / 9 + 0.8), 4), "support": 10}
    assert rows[1] == {"class": "dog", "precision": round(4 / 6, 4), "recall": 0.8,
                       "f1": round(2 * (4 / 6) * 0.8 / (4 / 6 + 0.8), 4), "support": 5}


def test_per_class_table_3x3_never_predicted_and_absent():
    cm = np.array([[5, 0, 0],   # class a: all correct
                   [2, 0, 3],   # class b: never predicted -> precision 0, recall 0, f1 0
                   [0, 0, 0]])  # class c: absent, but predicted 3 times -> precision 0, recall 0
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        rows = per_class_table(cm, ["a", "b", "c"])
    assert rows[0] == {"class": "a", "precision": round(5 / 7, 4), "recall": 1.0,
                       "f1": round(2 * (5 / 7) / (5 / 7 + 1), 4), "support": 5}
    assert rows[1] == {"class": "b", "precision": 0.0, "recall": 0.0, "f1": 0.0, "support": 5}
    assert rows[2] == {"class": "c", "precision": 0.0, "recall": 0.0, "f1": 0.0, "support": 0}


def test_write_report_self_contained_and_escaped(tmp_path):
    out = tmp_path / "run"
    a, b = out / "a.png", out / "b.png"
    save_image_grid_png(np.zeros((2, 1, 4, 4), np.uint8), a)
    save_image_grid_png(np.full((2, 3, 4, 4), 255, np.uint8), b)
    report = out / "report.html"
    write_report(
        report,
        title="MNIST <run>",
        summary={"accuracy": 0.98765, "note": "<script>alert(1)</script>", "epochs": 5},
        images=[("curves", str(a)), ("samples & mistakes", b), ("gone", str(out / "missing.png"))],
        tables=[("Per class", per_class_table(np.array([[3, 1], [0, 4]]), ["<x>", "y"]))],
        config={"model": "lenet", "data": {"root": out, "splits": (0.9, 0.1)}},
    )
    text = report.read_text(encoding="utf-8")
    assert text.count("data:image/png;base64,") == 2
    assert 'src="http' not in text and "<link" not in text and "<script" not in text
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in text
    assert "MNIST &lt;run&gt;" in text and "&lt;x&gt;" in text
    assert "missing.png" in text  # skipped with a note
    assert "lenet" in text and "0.9877" in text
    assert re.search(r"<pre>.*model: lenet", text, re.S)
    assert_no_temp_files(out)
