"""Face swap task: model, augmentation, a tiny training run, convert on photos and video."""
from __future__ import annotations

import csv
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from PIL import Image
from skimage import data as skdata

from lensforge.errors import DataError, UsageError
from lensforge.faces.provenance import read_provenance
from lensforge.faces.training import augment_pair, faceswap_loss
from lensforge.faces.video import VideoWriter, probe
from lensforge.models import create_model
from lensforge.tasks import faceswap


def test_network_shapes_and_decoders_are_separate():
    net = create_model("faceswap-original", image_size=32, width=8, latent=16)
    x = torch.rand(3, 3, 32, 32)
    with torch.no_grad():
        rgb_a, mask_a = net(x, "a")
        rgb_b, _ = net.swap(x, "a2b")
    assert rgb_a.shape == (3, 3, 32, 32) and mask_a.shape == (3, 1, 32, 32)
    assert 0 <= float(rgb_a.min()) and float(rgb_a.max()) <= 1
    assert not torch.allclose(rgb_a, rgb_b)  # a different decoder draws a different face
    with pytest.raises(ValueError):
        create_model("faceswap-original", image_size=40)


def test_augmentation_warps_inputs_not_targets_and_is_reproducible():
    faces = torch.rand(4, 3, 32, 32)
    masks = (torch.rand(4, 1, 32, 32) > 0.5).float()
    w1, t1, m1 = augment_pair(faces, masks, torch.Generator().manual_seed(1))
    w2, t2, m2 = augment_pair(faces, masks, torch.Generator().manual_seed(1))
    assert torch.equal(w1, w2) and torch.equal(t1, t2) and torch.equal(m1, m2)
    assert (w1 - t1).abs().mean() > 0.02  # the input is bent away from its target
    from lensforge.faces.training import WarpSettings
    still = WarpSettings(rotation=0, zoom=0, shift=0, warp=0, flip=False, jitter=0)
    w, t, m = augment_pair(faces, masks, torch.Generator().manual_seed(0), still)
    assert torch.allclose(t, faces, atol=1e-5) and torch.allclose(w, faces, atol=1e-5)


def test_loss_is_zero_for_a_perfect_reconstruction_and_counts_the_face_more():
    target = torch.rand(2, 3, 16, 16)
    mask = torch.zeros(2, 1, 16, 16)
    mask[..., 4:12, 4:12] = 1
    loss, logs = faceswap_loss(target, mask, target, mask)
    assert float(loss) < 1e-4 and set(logs) == {"rec", "dssim", "mask"}
    face_err = target.clone()
    face_err[..., 6:8, 6:8] += 0.3
    back_err = target.clone()
    back_err[..., 0:2, 0:2] += 0.3
    kw = {"ssim_weight": 0.0, "mask_weight": 0.0}
    assert faceswap_loss(face_err, mask, target, mask, **kw)[0] > 2 * faceswap_loss(back_err, mask, target, mask, **kw)[0]


# --------------------------------------------------------------------------- tiny end-to-end run


def _variants(photo: np.ndarray, n: int, seed: int) -> list[np.ndarray]:
    """n photos of the same face, turned, scaled and moved a little (a person's photo set)."""
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n):
        m = cv2.getRotationMatrix2D((256, 140), rng.uniform(-12, 12), rng.uniform(0.9, 1.1))
        m[:, 2] += rng.uniform(-15, 15, 2)
        out.append(cv2.resize(cv2.warpAffine(photo, m, (512, 512), borderMode=cv2.BORDER_REFLECT101), (256, 256),
                              interpolation=cv2.INTER_AREA))
    return out


@pytest.fixture(scope="module")
def face_sets(tmp_path_factory):
    """A: crops extracted (with alignments.json) from photos of the astronaut; B: a different
    'person' (her crops mirrored, recoloured and darkened), bare crops without alignments.json."""
    root = tmp_path_factory.mktemp("faces")
    photo = skdata.astronaut()
    (root / "photos_a").mkdir()
    for i, img in enumerate(_variants(photo, 8, 0)):
        cv2.imwrite(str(root / "photos_a" / f"a{i}.png"), cv2.cvtColor(img, cv2.COLOR_RGB2BGR))
    res = faceswap.extract([root / "photos_a"], root / "a", face_size=64, largest=True)
    assert res.summary["faces_written"] == 8
    (root / "b").mkdir()
    for i in range(8):  # B: A's crops mirrored and recoloured, a "person" that looks different
        crop = cv2.imread(str(root / "a" / f"a{i}_0.png"))
        cv2.imwrite(str(root / "b" / f"b{i}.png"), (0.6 * crop[:, ::-1] * [1.3, 0.9, 0.6]).clip(0, 255))
    return root


@pytest.fixture(scope="module")
def tiny_run(face_sets, tmp_path_factory):
    out = tmp_path_factory.mktemp("run") / "run"
    torch.set_num_threads(1)
    return faceswap.train(a=face_sets / "a", b=face_sets / "b", out=out, image_size=32, width=8, latent=32,
                          epochs=6, steps=6, batch_size=8, lr=3e-3, holdout=2, progress=False)


def test_tiny_training_run_reduces_its_loss_and_writes_previews(tiny_run):
    rows = list(csv.DictReader(open(tiny_run.dir / "metrics.csv")))
    assert len(rows) == 6
    first, last = float(rows[0]["train_loss"]), float(rows[-1]["train_loss"])
    assert last < 0.7 * first, (first, last)
    assert float(rows[-1]["val_l1"]) < float(rows[0]["val_l1"])
    r = tiny_run.results
    assert r["faces_a"] == 8 and r["faces_b"] == 8 and r["heldout_psnr_a2a"] > 10
    grid = np.asarray(Image.open(tiny_run.dir / "preview.png"))
    assert grid.shape == (6 * 32, 2 * 32, 3)  # rows A, A->A, A->B, B, B->B, B->A; 2 held-out faces
    assert len(list((tiny_run.dir / "previews").glob("epoch_*.png"))) == 6
    assert (tiny_run.dir / "report.html").is_file() and (tiny_run.best_weights).is_file()


def test_train_refuses_bad_face_sets(tmp_path, face_sets):
    with pytest.raises(UsageError, match="no such file"):
        faceswap.train(a=tmp_path / "nope", b=face_sets / "b", epochs=1)
    (tmp_path / "few").mkdir()
    for i in range(2):
        cv2.imwrite(str(tmp_path / "few" / f"{i}.png"), np.zeros((64, 64, 3), np.uint8))
    with pytest.raises(UsageError, match="need at least"):
        faceswap.train(a=tmp_path / "few", b=face_sets / "b", epochs=1, out=tmp_path / "r")
    (tmp_path / "wide").mkdir()
    cv2.imwrite(str(tmp_path / "wide" / "x.png"), np.zeros((64, 80, 3), np.uint8))
    with pytest.raises(DataError, match="x.png: not an aligned face crop"):
        faceswap.train(a=tmp_path / "wide", b=face_sets / "b", epochs=1, out=tmp_path / "r2")
    assert not (tmp_path / "r").exists() and not (tmp_path / "r2").exists()


# --------------------------------------------------------------------------- convert


def test_convert_swaps_the_face_tags_the_output_and_leaves_the_rest(tiny_run, tmp_path):
    photo = cv2.resize(skdata.astronaut(), (256, 256), interpolation=cv2.INTER_AREA)
    inp = tmp_path / "in"
    inp.mkdir()
    cv2.imwrite(str(inp / "face.png"), cv2.cvtColor(photo, cv2.COLOR_RGB2BGR))
    cv2.imwrite(str(inp / "cup.png"), cv2.cvtColor(skdata.coffee(), cv2.COLOR_RGB2BGR))
    (inp / "bad.jpg").write_bytes(b"\xff\xd8 not a jpeg")
    records = faceswap.convert(tiny_run.dir, [inp], tmp_path / "out", mask="landmarks")
    by = {Path(r.file).name: r for r in records}
    assert by["bad.jpg"].error and "bad.jpg" in by["bad.jpg"].error
    assert by["face.png"].values["faces_swapped"] == 1 and by["cup.png"].values["faces_swapped"] == 0
    out_face = np.asarray(Image.open(tmp_path / "out" / "face.png"))
    out_cup = np.asarray(Image.open(tmp_path / "out" / "cup.png"))
    assert np.array_equal(out_cup, skdata.coffee())  # no face: every pixel as it was
    changed = np.any(out_face != photo, axis=2)
    assert changed.sum() > 500  # the face was replaced ...
    ys, xs = np.nonzero(changed)
    assert 40 < xs.min() and xs.max() < 160 and 10 < ys.min() and ys.max() < 110  # ... and nothing else
    for name in ("face.png", "cup.png"):
        assert read_provenance(tmp_path / "out" / name)["altered_by"] == "lensforge faceswap"
    rows = list(csv.DictReader(open(tmp_path / "out" / "convert.csv")))
    assert [r["file"] for r in rows] == [str(inp / n) for n in ("bad.jpg", "cup.png", "face.png")]


def test_convert_video_keeps_frames_fps_and_size_and_labels(tiny_run, tmp_path):
    photo = cv2.resize(skdata.astronaut(), (160, 160), interpolation=cv2.INTER_AREA)
    clip = tmp_path / "clip.mp4"
    with VideoWriter(clip, 12.5, (160, 160)) as w:
        for i in range(7):
            w.write(photo if i % 3 else np.full_like(photo, 70))  # frames 0, 3, 6 without a face
    records = faceswap.convert(tiny_run.dir, [clip], tmp_path / "out", label=True, direction="b2a")
    v = records[0].values
    assert records[0].ok and v["frames"] == 7 and v["frames_with_face"] == 4 and v["provenance"] == "container"
    assert probe(tmp_path / "out" / "clip.mp4") == {"frames": 7, "fps": 12.5, "width": 160, "height": 160}
    assert read_provenance(tmp_path / "out" / "clip.mp4")["direction"] == "b2a"


def test_cli_builds_and_runs_extract(tmp_path, capsys):
    from lensforge.cli import build_parser
    from lensforge.options import given, handler
    from lensforge.specs.faceswap import CLI

    parser = build_parser([CLI])
    img = tmp_path / "a.png"
    cv2.imwrite(str(img), cv2.cvtColor(skdata.astronaut(), cv2.COLOR_RGB2BGR))
    args = parser.parse_args(["faceswap", "extract", str(img), "--out", str(tmp_path / "f"), "--face-size", "64"])
    code = handler(args._verb.handler)(given(args, *args._verb.options))
    assert code == 0 and "faces=1 " in capsys.readouterr().out
    assert (tmp_path / "f" / "a_0.png").is_file()


def test_convert_swaps_the_largest_face_unless_all_faces(tiny_run, tmp_path):
    photo = skdata.astronaut()
    head = photo[20:260, 120:330]
    small = cv2.resize(head, (140, 160), interpolation=cv2.INTER_AREA)
    two = np.full((240, 350, 3), 200, np.uint8)
    two[:, :210] = head
    two[40:200, 210:] = small[:, ::-1]  # a second, smaller face on the right
    path = tmp_path / "two.png"
    cv2.imwrite(str(path), cv2.cvtColor(two, cv2.COLOR_RGB2BGR))
    one = faceswap.convert(tiny_run.dir, [path], tmp_path / "one", seamless=True)[0]
    both = faceswap.convert(tiny_run.dir, [path], tmp_path / "both", all_faces=True)[0]
    assert one.values["faces_swapped"] == 1 and both.values["faces_swapped"] == 2
    right = np.asarray(Image.open(tmp_path / "one" / "two.png"))[:, 215:]
    assert np.array_equal(right, two[:, 215:])  # the smaller face was left alone
    assert not np.array_equal(np.asarray(Image.open(tmp_path / "both" / "two.png"))[:, 215:], two[:, 215:])


def test_resume_extends_a_finished_run(tiny_run, tmp_path):
    import shutil

    copy = tmp_path / "run"
    shutil.copytree(tiny_run.dir, copy)
    run = faceswap.train(resume=copy, epochs=7, progress=False)
    rows = list(csv.DictReader(open(copy / "metrics.csv")))
    assert len(rows) == 7 and run.results["epochs_run"] == 7
    with pytest.raises(UsageError, match="--resume continues a run exactly"):
        faceswap.train(resume=copy, epochs=8, lr=1.0)


def test_perceptual_term_trains_with_a_feature_network(face_sets, tmp_path):
    """--perceptual-weight with SqueezeNet-layout weights (random here: the wiring is under test;
    the shared ImageNet file is what a user passes)."""
    from lensforge.models.features import _squeezenet11_layers

    weights = tmp_path / "squeezenet-test.pth"
    torch.save({f"features.{k}": v for k, v in _squeezenet11_layers().state_dict().items()}, weights)
    run = faceswap.train(a=face_sets / "a", b=face_sets / "b", out=tmp_path / "run", image_size=32, width=8,
                         latent=16, epochs=2, steps=3, batch_size=4, holdout=2, perceptual_weight=0.5,
                         features=str(weights), progress=False)
    rows = list(csv.DictReader(open(run.dir / "metrics.csv")))
    assert float(rows[0]["train_perceptual"]) > 0
    with pytest.raises(Exception, match="no such weights file"):
        faceswap.train(a=face_sets / "a", b=face_sets / "b", out=tmp_path / "r2", epochs=1, perceptual_weight=1.0,
                       features=str(tmp_path / "missing.pth"))


@pytest.mark.parametrize("seamless", [False, True])
def test_learned_mask_convert_changes_nothing_outside_the_blend_mask(tiny_run, seamless):
    from lensforge.options import make
    from lensforge.specs.faceswap import ConvertOptions

    o = make(ConvertOptions, {"weights": str(tiny_run.dir), "inputs": ["-"], "out": "-", "seamless": seamless})
    conv = faceswap.FrameConverter(faceswap.load(tiny_run.dir), o)
    photo = cv2.resize(skdata.astronaut(), (256, 256), interpolation=cv2.INTER_AREA)
    out, n = conv(photo)
    assert n == 1 and conv.touched.sum() > 100
    assert np.array_equal(out[~conv.touched], photo[~conv.touched])
    assert (out[conv.touched] != photo[conv.touched]).any()


def test_face_set_reads_a_zip_of_extracted_faces(face_sets, tmp_path):
    import zipfile

    archive = tmp_path / "a.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        for f in sorted((face_sets / "a").iterdir()):
            zf.write(f, f"faces_a/{f.name}")  # a wrapper folder, as zipping a folder makes
    from_zip = faceswap.load_face_set(archive, 32, 0.1)
    from_dir = faceswap.load_face_set(face_sets / "a", 32, 0.1)
    assert len(from_zip) == len(from_dir) == 8 and from_zip.note == ""  # alignments.json found
    assert torch.equal(from_zip.images, from_dir.images) and torch.equal(from_zip.masks, from_dir.masks)
    # Per-face masks follow each face's own landmarks, so they differ between faces.
    assert not torch.equal(from_dir.masks[0], from_dir.masks[1])


def test_cli_train_and_convert(face_sets, tmp_path, capsys):
    from lensforge.cli import build_parser
    from lensforge.options import given, handler
    from lensforge.specs.faceswap import CLI

    parser = build_parser([CLI])

    def call(argv):
        args = parser.parse_args(argv)
        return handler(args._verb.handler)(given(args, *args._verb.options))

    assert call(["faceswap", "train", "--a", str(face_sets / "a"), "--b", str(face_sets / "b"), "--image-size", "32",
                 "--width", "8", "--latent", "16", "--epochs", "1", "--steps", "2", "--batch-size", "4",
                 "--holdout", "2", "--no-progress", "--out", str(tmp_path / "run")]) == 0
    assert "run folder:" in capsys.readouterr().out
    img = tmp_path / "a.png"
    cv2.imwrite(str(img), cv2.cvtColor(skdata.astronaut(), cv2.COLOR_RGB2BGR))
    (tmp_path / "bad.png").write_bytes(b"junk")
    code = call(["faceswap", "convert", "--weights", str(tmp_path / "run"), str(img), str(tmp_path / "bad.png"),
                 "--out", str(tmp_path / "out"), "--label", "--format", "jpg"])
    captured = capsys.readouterr()
    assert code == 1 and "faces=1" in captured.out and "bad.png" in captured.err  # one bad input: exit 1
    assert read_provenance(tmp_path / "out" / "a.jpg")["visible_label"] is True
    with pytest.raises(SystemExit):
        parser.parse_args(["faceswap", "convert", "--weights", "x", str(img), "--out", "o", "--direction", "sideways"])
