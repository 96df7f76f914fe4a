"""ONNX export of face swap: a tiny real run exported as its shared encoder and two decoders,
compared with PyTorch on the run's own aligned faces (max abs difference <= 1e-4 per output, fp32),
the metadata a deployment needs, and `faceswap convert` through onnxruntime giving the .pt's image."""
from __future__ import annotations

import json

import cv2
import numpy as np
import onnxruntime as ort
import pytest
import torch
from PIL import Image
from skimage import data as skdata

from conftest import astronaut_face_pair
from lensforge import export as lfexport
from lensforge.cli import main
from lensforge.faces.align import template_points
from lensforge.faces.provenance import read_provenance
from lensforge.options import make
from lensforge.specs.faceswap import ConvertOptions
from lensforge.tasks import faceswap

TOL = 1e-4
SIZE, MARGIN = 32, 0.1


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """The astronaut face pair (conftest). One short epoch: parity is a property of the graph's
    arithmetic, not of how well the model learned."""
    root = tmp_path_factory.mktemp("fsx")
    astronaut_face_pair(root)
    torch.set_num_threads(1)
    r = faceswap.train(a=root / "a", b=root / "b", out=root / "run", image_size=SIZE, width=8, latent=16, epochs=1,
                       steps=2, batch_size=4, holdout=2, margin=MARGIN, progress=False)
    return r.dir


@pytest.fixture(scope="module")
def exported(run):
    res = lfexport.export(run, out=run.parent / "fs.onnx", dynamic_batch=True)
    return res


def _faces(run) -> torch.Tensor:
    """The run's own faces of both identities, re-cut as training reads them."""
    sets = [faceswap.load_face_set(run.parent / who, SIZE, MARGIN) for who in ("a", "b")]
    return torch.cat([s.images for s in sets]).float() / 255


def _diff(a, b) -> float:
    return float((a.float() - b.float()).abs().max())


def test_three_graphs_match_pytorch_on_the_runs_faces(run, exported):
    assert exported.task == "faceswap"
    assert {k: v.name for k, v in exported.files.items()} == {
        "encoder": "fs.onnx", "decoder-a": "fs-decoder-a.onnx", "decoder-b": "fs-decoder-b.onnx"}
    assert set(exported.parity) == {"encoder", "decoder-a", "decoder-b"} and max(exported.parity.values()) <= TOL
    pt, ox = faceswap.load(run, device="cpu"), faceswap.load(run.parent / "fs.onnx")
    assert type(ox.model).__name__ == "_SwapModel" and (ox.size, ox.margin) == (pt.size, pt.margin) == (SIZE, MARGIN)
    x = _faces(run)
    assert len(x) == 12
    with torch.no_grad():
        codes = pt.model.encoder(x)
        assert _diff(ox.model.encoder(x), codes) <= TOL
        for who in ("a", "b"):   # each output of each decoder, on the codes of real faces
            want, got = pt.model.decoders[who](codes), ox.model.decoders[who](codes)
            assert len(got) == 2 and got[0].shape == (12, 3, SIZE, SIZE) and got[1].shape == (12, 1, SIZE, SIZE)
            assert _diff(got[0], want[0]) <= TOL and _diff(got[1], want[1]) <= TOL
        for direction in ("a2b", "b2a"):  # the whole swap, through FaceSwapNet.swap's wiring of the graphs
            want, got = pt.model.swap(x, direction), ox.model.swap(x, direction)
            assert _diff(got[0], want[0]) <= TOL and _diff(got[1], want[1]) <= TOL
        assert _diff(ox.model.swap(x, "a2b")[0], ox.model.swap(x, "b2a")[0]) > 1e-3   # two different decoders
    crops = (x[:5] * 255).round().byte().permute(0, 2, 3, 1).numpy()
    for direction in ("a2b", "b2a"):   # FaceSwapper.swap (uint8 crops in, uint8 faces out) agrees too
        (fa, ma), (fb, mb) = pt.swap(crops, direction), ox.swap(crops, direction)
        assert np.abs(fa.astype(int) - fb).max() <= 1 and np.abs(ma - mb).max() <= TOL


def test_fixed_batch_export_and_any_file_opens_the_set(run, tmp_path):
    res = lfexport.export(run, out=tmp_path / "one.onnx")      # batch 1: several faces are fed one at a time
    assert max(res.parity.values()) <= TOL
    pt = faceswap.load(run, device="cpu")
    x = _faces(run)[:3]
    ox = faceswap.load(tmp_path / "one-decoder-a.onnx")          # any of the three files opens all of them
    with torch.no_grad():
        want, got = pt.model.swap(x, "b2a"), ox.model.swap(x, "b2a")
    assert got[0].shape == (3, 3, SIZE, SIZE) and _diff(got[0], want[0]) <= TOL and _diff(got[1], want[1]) <= TOL
    (tmp_path / "one-decoder-b.onnx").unlink()
    with pytest.raises(Exception, match="one-decoder-b.onnx should lie next to it"):
        faceswap.load(tmp_path / "one.onnx")


def test_metadata_says_how_to_cut_the_faces(run, exported):
    sess = ort.InferenceSession(str(run.parent / "fs.onnx"), providers=["CPUExecutionProvider"])
    meta = {k: json.loads(v) for k, v in sess.get_modelmeta().custom_metadata_map.items() if k != "lensforge.format"}
    assert sess.get_modelmeta().custom_metadata_map["lensforge.format"] == "lensforge-onnx"
    assert meta["lensforge.task"] == "faceswap" and meta["lensforge.part"] == "encoder"
    assert meta["lensforge.parts"] == {"encoder": "fs.onnx", "decoder-a": "fs-decoder-a.onnx",
                                       "decoder-b": "fs-decoder-b.onnx"}
    assert meta["lensforge.image_size"] == SIZE and meta["lensforge.face_margin"] == MARGIN
    assert meta["lensforge.directions"] == {"a2b": "decoder-b", "b2a": "decoder-a"}
    assert np.allclose(meta["lensforge.alignment"]["template"], template_points(SIZE, MARGIN), atol=1e-4)
    assert meta["lensforge.model_kwargs"] == {"image_size": SIZE, "width": 8, "latent": 16}
    assert max(meta["lensforge.parity_max_abs_diff"].values()) <= TOL
    inp = sess.get_inputs()[0]
    assert inp.name == "faces" and isinstance(inp.shape[0], str) and inp.shape[1:] == [3, SIZE, SIZE]
    dec = ort.InferenceSession(str(run.parent / "fs-decoder-b.onnx"), providers=["CPUExecutionProvider"])
    assert [o.name for o in dec.get_outputs()] == ["faces", "masks"] and dec.get_inputs()[0].name == "codes"


def test_convert_through_onnx_gives_the_pt_image(run, exported, tmp_path, capsys):
    photo = cv2.resize(skdata.astronaut(), (200, 200), interpolation=cv2.INTER_AREA)
    Image.fromarray(photo).save(tmp_path / "face.png")
    onnx_file = run.parent / "fs.onnx"
    # The landmark mask: a one-epoch network's learned mask is still ~0.5 everywhere, so it may
    # blend nothing in; the learned mask's own graph output is compared in the test above.
    for mask in ("landmarks", "learned"):
        assert main(["faceswap", "convert", "--weights", str(onnx_file), str(tmp_path / "face.png"), "--out",
                     str(tmp_path / f"ox-{mask}"), "--mask", mask, "--direction", "b2a"]) == 0
        assert "faces=1" in capsys.readouterr().out
        faceswap.convert(run, [tmp_path / "face.png"], tmp_path / f"pt-{mask}", mask=mask, direction="b2a")
        a = np.asarray(Image.open(tmp_path / f"pt-{mask}" / "face.png")).astype(int)
        b = np.asarray(Image.open(tmp_path / f"ox-{mask}" / "face.png")).astype(int)
        assert a.shape == b.shape == photo.shape
        assert np.abs(a - b).max() <= 1   # faces equal to ~1e-7 before uint8 rounding, colour matching, blending
        assert read_provenance(tmp_path / f"ox-{mask}" / "face.png")["weights"] == str(onnx_file)
        if mask == "landmarks":
            assert (b != photo).any(axis=2).sum() > 300     # the face was replaced
    # nothing outside the blend mask changes, with the onnxruntime network as with the .pt
    for seamless in (False, True):
        o = make(ConvertOptions, {"weights": str(onnx_file), "inputs": ["-"], "out": "-", "seamless": seamless,
                                  "mask": "landmarks"})
        conv = faceswap.FrameConverter(faceswap.load(onnx_file), o)
        out, n = conv(photo)
        assert n == 1 and conv.touched.sum() > 300 and (out[conv.touched] != photo[conv.touched]).any()
        assert np.array_equal(out[~conv.touched], photo[~conv.touched])


def test_export_measures_its_parity_on_the_runs_faces(run, exported):
    assert exported.parity_inputs == f"12 aligned faces of {run.parent / 'a'} and {run.parent / 'b'}"
