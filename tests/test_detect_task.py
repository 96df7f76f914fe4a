"""`detect` on the lifecycle: a synthetic set is learned, run folder contents, COCO json re-scores,
predict writes boxes in original pixels, resume is exact, YOLO and COCO copies train identically."""
from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from lensforge.errors import DataError, UsageError

COLOURS = [(230, 40, 40), (40, 80, 230)]


def write_synth(root: Path, n_train=48, n_test=16, size=(96, 72), seed=0) -> Path:
    """YOLO-format set: 1-3 solid red or blue rectangles (12-31 px) per image on dark noise."""
    rng = np.random.default_rng(seed)
    for split, n in (("train", n_train), ("test", n_test)):
        (root / split / "images").mkdir(parents=True, exist_ok=True)
        (root / split / "labels").mkdir(parents=True, exist_ok=True)
        for i in range(n):
            w, h = size
            img = rng.integers(0, 120, (h, w, 3)).astype(np.uint8)
            lines = []
            for _ in range(rng.integers(1, 4)):
                c = int(rng.integers(0, 2))
                bw, bh = rng.integers(12, 32, 2)
                x, y = rng.integers(0, w - bw), rng.integers(0, h - bh)
                img[y:y + bh, x:x + bw] = COLOURS[c]
                lines.append(f"{c} {(x + bw / 2) / w} {(y + bh / 2) / h} {bw / w} {bh / h}")
            Image.fromarray(img).save(root / split / "images" / f"{i}.png")
            (root / split / "labels" / f"{i}.txt").write_text("\n".join(lines))
    (root / "data.yaml").write_text("train: train/images\ntest: test/images\nnames: [red, blue]\n")
    return root


FAST = dict(image_size=96, batch_size=8, lr=4e-3, mosaic=0.0, ema=0.0, progress=False)


@pytest.fixture(scope="module")
def learned(tmp_path_factory):
    from lensforge.tasks import detect

    root = tmp_path_factory.mktemp("det")
    data = write_synth(root / "synth")
    torch.set_num_threads(1)
    run = detect.train(str(data), out=str(root / "run"), epochs=20, **FAST)
    return data, run


def test_synthetic_rectangles_are_learned(learned):
    _, run = learned
    r = run.results
    # an untrained detector scores ~0; 20 epochs (120 steps) measured 0.933 mAP@0.5
    assert r["test_map50"] >= 0.9, r
    assert set(r["test_ap50"]) == {"red", "blue"} and min(r["test_ap50"].values()) > 0.8
    for key in ("test_map50_95", "train_seconds", "device", "precision"):
        assert key in r


def test_run_folder_and_pycocotools_rescore(learned):
    from lensforge.detect.cocoeval import pycocotools_score

    _, run = learned
    for f in ("config.yaml", "metrics.csv", "results.json", "report.html", "pr_curves.png", "confusion_matrix.png",
              "predictions.png", "weights/best.pt", "weights/last.pt"):
        assert (run.dir / f).exists(), f
    gt = json.loads((run.dir / "test_ground_truth.coco.json").read_text())
    assert len(gt["images"]) == 16 and gt["images"][0]["file_name"].endswith(".png")
    assert [c["name"] for c in gt["categories"]] == ["red", "blue"]
    m5095, m50 = pycocotools_score(run.dir / "test_ground_truth.coco.json", run.dir / "test_predictions.coco.json")
    assert round(m50, 3) == round(run.results["test_map50"], 3)
    assert round(m5095, 3) == round(run.results["test_map50_95"], 3)


def test_predict_maps_boxes_to_original_pixels(learned, tmp_path):
    from lensforge.cli import detect as cli
    from lensforge.data.boxes import load_detection

    data, run = learned
    sample = load_detection(data).splits["test"][0]
    big = np.array(Image.open(data / "test" / "images" / "0.png").resize((192 * 2, 144 * 2), Image.NEAREST))
    Image.fromarray(big).save(tmp_path / "big.png")
    (tmp_path / "broken.png").write_bytes(b"\x89PNG not really")
    code = cli.predict({"weights": str(run.dir), "inputs": [str(tmp_path / "big.png"), str(tmp_path / "broken.png")],
                        "out": str(tmp_path / "out"), "save_txt": True, "save_json": True})
    assert code == 1  # one unreadable file
    rows = list(csv.DictReader(open(tmp_path / "out" / "predictions.csv")))
    assert list(rows[0]) == ["file", "class", "confidence", "x1", "y1", "x2", "y2", "error"]
    bad = [r for r in rows if r["file"].endswith("broken.png")]
    assert len(bad) == 1 and bad[0]["error"] and not bad[0]["class"]
    got = np.array([[float(r[k]) for k in ("x1", "y1", "x2", "y2")] for r in rows if r["file"].endswith("big.png")])
    truth = sample.boxes * 4  # the image was enlarged 4x
    from lensforge.detect.boxops import box_iou
    iou = box_iou(torch.tensor(truth), torch.tensor(got, dtype=torch.float32))
    assert (iou.max(1).values > 0.6).all()  # every true rectangle found at the enlarged scale
    assert (tmp_path / "out" / "big.png").exists() and (tmp_path / "out" / "labels" / "big.txt").exists()
    coco = json.loads((tmp_path / "out" / "predictions.coco.json").read_text())
    assert len(coco["annotations"]) == len(got)


def test_eval_verb_matches_training_report(learned, tmp_path, capsys):
    from lensforge.cli import detect as cli
    from lensforge.tasks import detect

    data, run = learned
    res = detect.evaluate(run.dir, str(data), out=tmp_path / "ev")
    assert res["map50"] == pytest.approx(run.results["test_map50"], abs=1e-9)
    assert (tmp_path / "ev" / "test_predictions.coco.json").exists() and (tmp_path / "ev" / "pr_curves.png").exists()
    assert cli.evaluate({"weights": str(run.best_weights), "json": True}) == 0  # data from the checkpoint
    printed = json.loads(capsys.readouterr().out)
    assert printed["map50"] == pytest.approx(run.results["test_map50"], abs=1e-9) and set(printed["ap50"]) == {"red", "blue"}
    with pytest.raises(UsageError, match="--split val: .* has no such split"):
        detect.evaluate(run.dir, str(data), split="val")


def _tiny(tmp_path):
    return write_synth(tmp_path / "tiny", n_train=16, n_test=4, size=(64, 48))


def test_resume_after_interrupt_is_exact(tmp_path, monkeypatch):
    from lensforge.engine.trainer import Interrupted
    from lensforge.tasks import detect

    data = _tiny(tmp_path)
    opts = dict(FAST, image_size=64, epochs=3, close_mosaic=1, mosaic=1.0)
    whole = detect.train(str(data), out=str(tmp_path / "a"), **opts)
    real, calls = detect.make_batch, [0]

    def flaky(*a, **k):
        calls[0] += 1
        if calls[0] == 5:  # epoch 3, step 1
            raise KeyboardInterrupt
        return real(*a, **k)

    monkeypatch.setattr(detect, "make_batch", flaky)
    with pytest.raises(Interrupted, match="continue with --resume"):
        detect.train(str(data), out=str(tmp_path / "b"), **opts)
    monkeypatch.setattr(detect, "make_batch", real)
    resumed = detect.train(resume=str(tmp_path / "b"), progress=False)
    a = torch.load(whole.best_weights, weights_only=True)["model"]
    b = torch.load(resumed.best_weights, weights_only=True)["model"]
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert resumed.results["test_map50"] == whole.results["test_map50"]


def test_yolo_and_coco_copies_train_identically(tmp_path):
    import sys
    sys.path.insert(0, str(Path(__file__).parent))
    from test_detect_data import to_coco

    from lensforge.data.boxes import load_detection
    from lensforge.tasks import detect

    data = _tiny(tmp_path)
    coco = to_coco(load_detection(data), tmp_path / "coco")
    opts = dict(FAST, image_size=64, epochs=2)
    ra = detect.train(str(data), out=str(tmp_path / "ya"), **opts)
    rb = detect.train(str(coco), out=str(tmp_path / "co"), **opts)
    a = torch.load(ra.best_weights, weights_only=True)["model"]
    b = torch.load(rb.best_weights, weights_only=True)["model"]
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert ra.results["test_map50_95"] == rb.results["test_map50_95"]


def test_bad_options_and_data_leave_nothing(tmp_path):
    from lensforge.tasks import detect

    data = _tiny(tmp_path)
    with pytest.raises(UsageError, match="--image-size 100: must be a multiple of 32"):
        detect.train(str(data), out=str(tmp_path / "r1"), image_size=100)
    (data / "train" / "labels" / "0.txt").write_text("5 0.5 0.5 0.1 0.1\n")
    with pytest.raises(DataError, match=r"0.txt line 1: class 5 does not exist"):
        detect.train(str(data), out=str(tmp_path / "r2"), **FAST)
    assert not (tmp_path / "r1").exists() and not (tmp_path / "r2").exists()
