"""ONNX export of classify end to end: parity with PyTorch, identical predictions on the digits test
set through onnxruntime, metadata, fixed and dynamic batch, int8 with its measured accuracy change,
and one clear line for each bad input (format, foreign checkpoint, corrupt or foreign .onnx)."""
from __future__ import annotations

import csv
import json

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from PIL import Image

from lensforge import export as lfexport
from lensforge.cli import main
from lensforge.data import load_dataset
from lensforge.errors import CheckpointError, UsageError
from lensforge.tasks import classify
from lensforge.tasks.classify import predict_logits

# compared with fp32 ONNX graphs to 1e-4: PyTorch in fp32 too, whatever the CPU (conftest.torch_fp32)
pytestmark = pytest.mark.usefixtures("torch_fp32")


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("exp") / "digits"
    classify.train("digits", out=out, epochs=2, batch_size=64, lr=3e-3, width=8, progress=False, precision="fp32")
    return out


@pytest.fixture(scope="module")
def onnx_dyn(run_dir):
    res = lfexport.export(run_dir, out=run_dir / "model.onnx", dynamic_batch=True)
    return res


def test_parity_and_identical_predictions_on_the_test_set(run_dir, onnx_dyn):
    assert onnx_dyn.files == {"classifier": run_dir / "model.onnx"}
    assert onnx_dyn.parity["classifier"] <= 1e-4 and "digits" in onnx_dyn.parity_inputs
    pt, ox = classify.load(run_dir), classify.load(run_dir / "model.onnx")
    assert type(ox).__name__ == "OnnxClassifier" and ox.classes == pt.classes and ox.spec == pt.spec
    test = load_dataset("digits").test
    a, y = predict_logits(pt.model, test, pt.rt, tta=pt.tta)
    b, _ = predict_logits(ox.model, test, ox.rt, tta=ox.tta)
    assert len(y) == 359
    assert (a - b).abs().max().item() <= 1e-4
    assert torch.equal(a.argmax(1), b.argmax(1))
    # evaluate() takes the .onnx like a .pt (data and seed come from the metadata)
    assert classify.evaluate(run_dir / "model.onnx")["test_accuracy"] == classify.evaluate(run_dir)["test_accuracy"]


def test_metadata_readable_by_plain_onnxruntime(onnx_dyn, run_dir):
    sess = ort.InferenceSession(str(run_dir / "model.onnx"), providers=["CPUExecutionProvider"])
    meta = sess.get_modelmeta().custom_metadata_map
    assert meta["lensforge.format"] == "lensforge-onnx"
    assert json.loads(meta["lensforge.task"]) == "classify"
    assert json.loads(meta["lensforge.classes"]) == [str(i) for i in range(10)]
    assert json.loads(meta["lensforge.preprocess"]) == {"size": [28, 28], "channels": 1, "style": "digit"}
    inp = sess.get_inputs()[0]
    assert inp.name == "images" and isinstance(inp.shape[0], str) and inp.shape[1:] == [1, 28, 28]
    assert json.loads(meta["lensforge.parity_max_abs_diff"])["classifier"] <= 1e-4


def test_predict_cli_gives_the_same_csv_from_pt_and_onnx(run_dir, onnx_dyn, tmp_path, capsys):
    test = load_dataset("digits").test
    x, _ = test.take(torch.arange(12))
    folder = tmp_path / "imgs"
    folder.mkdir()
    for i, img in enumerate(x):
        Image.fromarray(255 - img[0].numpy()).resize((84, 84)).save(folder / f"{i}.png")  # dark ink on paper
    (folder / "broken.png").write_bytes(b"not an image")
    rows = {}
    for w in (run_dir, run_dir / "model.onnx"):
        out = tmp_path / f"{w.name}.csv"
        assert main(["classify", "predict", "--weights", str(w), str(folder), "--top-k", "3", "--out", str(out)]) == 1
        rows[w.name] = list(csv.DictReader(out.open()))
    capsys.readouterr()
    a, b = rows["digits"], rows["model.onnx"]
    assert [r["file"] for r in a] == [r["file"] for r in b] and len(a) == 13
    for ra, rb in zip(a, b):
        assert ra["label"] == rb["label"] and ra["error"] == rb["error"]
        if ra["confidence"]:
            assert abs(float(ra["confidence"]) - float(rb["confidence"])) <= 1e-4


def test_fixed_batch_export_is_fed_one_image_at_a_time(run_dir, onnx_dyn):
    res = lfexport.export(run_dir, out=run_dir / "fixed.onnx", check=False)
    assert res.parity == {}
    m = onnx.load(str(run_dir / "fixed.onnx"))
    assert m.graph.input[0].type.tensor_type.shape.dim[0].dim_value == 1
    fixed, dyn = classify.load(run_dir / "fixed.onnx"), classify.load(run_dir / "model.onnx")
    x = torch.rand(5, 1, 28, 28, generator=torch.Generator().manual_seed(1))
    assert (fixed.model(x) - dyn.model(x)).abs().max().item() <= 1e-5


def test_int8_quantisation_measures_its_accuracy_change(run_dir, onnx_dyn, capsys):
    out = run_dir / "int8.onnx"
    assert main(["export", "--weights", str(run_dir), "--out", str(out), "--quantize", "int8", "--dynamic-batch"]) == 0
    printed = capsys.readouterr().out
    assert "int8: test accuracy" in printed
    sess = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    q = json.loads(sess.get_modelmeta().custom_metadata_map["lensforge.quantization"])
    assert q["test_images"] == 359 and q["calibration_images"] == 256
    assert q["int8_bytes"] < q["fp32_bytes"] / 2            # weights stored as int8
    assert abs(q["accuracy_change"]) <= 0.03                  # within 3 points of fp32 on digits
    assert any(n.op_type in ("QuantizeLinear", "DequantizeLinear") for n in onnx.load(str(out)).graph.node)
    clf = classify.load(out)
    assert clf.predict([np.zeros((28, 28), np.uint8)])[0].error is None


# ----------------------------------------------------------------------------- one clear line each

def _one_line(capsys) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1, err
    assert "Traceback" not in err[0]
    return err[0]


def test_bad_format_is_one_line(run_dir, capsys):
    with pytest.raises(SystemExit) as e:     # argparse: one line and exit code 2
        main(["export", "--weights", str(run_dir), "--format", "tflite"])
    assert e.value.code == 2 and "--format: invalid choice: 'tflite'" in _one_line(capsys)
    with pytest.raises(UsageError, match="--format tflite: choose one of onnx"):
        lfexport.export(run_dir, format="tflite")
    assert main(["export", "--weights", str(run_dir), "--out", str(run_dir / "x.pt")]) == 2
    assert "must end in .onnx" in _one_line(capsys)


def test_export_of_a_foreign_checkpoint_is_one_line(tmp_path, capsys):
    torch.save({"state_dict": {"w": torch.zeros(2)}}, tmp_path / "other.pt")
    assert main(["export", "--weights", str(tmp_path / "other.pt")]) == 1
    line = _one_line(capsys)
    assert "other.pt" in line and "not a lensforge checkpoint" in line
    assert not (tmp_path / "other.onnx").exists()
    assert main(["export", "--weights", str(tmp_path / "missing.pt")]) == 2
    assert "missing.pt: no such weights file" in _one_line(capsys)


def test_predict_with_corrupt_or_foreign_onnx_is_one_line(run_dir, onnx_dyn, tmp_path, capsys):
    img = tmp_path / "a.png"
    Image.fromarray(np.zeros((28, 28), np.uint8)).save(img)
    good = (run_dir / "model.onnx").read_bytes()
    (tmp_path / "cut.onnx").write_bytes(good[: len(good) // 3])
    (tmp_path / "empty.onnx").write_bytes(b"")
    for name in ("cut.onnx", "empty.onnx"):
        assert main(["classify", "predict", "--weights", str(tmp_path / name), str(img)]) == 1
        line = _one_line(capsys)
        assert name in line and "not a readable ONNX model" in line
    foreign = onnx.load_from_string(good)
    del foreign.metadata_props[:]
    (tmp_path / "foreign.onnx").write_bytes(foreign.SerializeToString())
    assert main(["classify", "predict", "--weights", str(tmp_path / "foreign.onnx"), str(img)]) == 1
    assert "not a lensforge ONNX export" in _one_line(capsys)
    with pytest.raises(CheckpointError, match="is a 'classify' ONNX export, not 'vae'"):
        lfexport.load(run_dir / "model.onnx", task="vae")
