"""Faces layer: blending back into the photo, video in/out, provenance tags and labels."""
from __future__ import annotations

import json

import cv2
import numpy as np
import pytest
from PIL import Image
from skimage import data as skdata

from lensforge.errors import DataError, UsageError
from lensforge.faces.align import align_face, warp_back
from lensforge.faces.blend import composite, face_mask, feather, match_color
from lensforge.faces.detect import FaceDetector
from lensforge.faces.provenance import (KEY, provenance_record, read_provenance, stamp_label,
                                        tag_video, write_image)
from lensforge.faces.video import VideoReader, VideoWriter, probe


@pytest.fixture(scope="module")
def aligned():
    """The astronaut photo, its face's alignment matrix and the aligned 128 px crop."""
    photo = skdata.astronaut()
    face = FaceDetector().detect(photo)[0]
    crop, m = align_face(photo, face.landmarks, 128)
    return photo, m, crop


# --------------------------------------------------------------------------- masks and blending


def test_feathered_mask_stays_inside_the_hard_mask():
    hard = face_mask(128)
    soft = feather(hard, 8)
    assert soft.min() == 0 and soft.max() == 1
    assert not (soft[hard == 0] > 0).any()  # support never grows past the hard edge
    inner = cv2.erode(hard, np.ones((19, 19), np.uint8))  # 9 px in: past the 8 px ramp
    assert (soft[inner > 0] == 1).all()  # and it is fully opaque well inside
    ramp = (soft > 0) & (soft < 1)
    assert ramp.sum() > 0.1 * hard.sum()  # a real soft edge, not a step


def test_face_mask_covers_the_aligned_face_not_the_background(aligned):
    _, _, crop = aligned
    mask = face_mask(128)
    assert mask[64, 64] == 1 and mask[0, 0] == 0 and mask[64, 2] == 0
    # Eyes and mouth of the template sit inside with room to spare.
    from lensforge.faces.align import template_points
    yy, xx = np.mgrid[:128, :128]
    for x, y in template_points(128):
        assert mask[(xx - x) ** 2 + (yy - y) ** 2 <= 6 ** 2].all()
    assert 0.2 < mask.mean() < 0.3  # ellipse area ~ 0.233 of the crop at margin 0.2


def test_colour_matching_moves_lab_statistics_to_the_reference(aligned):
    _, _, crop = aligned
    mask = face_mask(128) > 0
    bluish = np.clip(crop.astype(int) * [0.6, 0.8, 1.3] + [0, 10, 30], 0, 255).astype(np.uint8)
    fixed = match_color(bluish, crop, mask)
    lab = lambda im: cv2.cvtColor(im.astype(np.float32) / 255, cv2.COLOR_RGB2Lab)[mask]  # noqa: E731
    before = np.abs(lab(bluish).mean(0) - lab(crop).mean(0)).max()
    after = np.abs(lab(fixed).mean(0) - lab(crop).mean(0)).max()
    assert before > 5 and after < 1.0


@pytest.mark.parametrize("seamless", [False, True])
def test_composite_changes_only_pixels_inside_the_warped_mask(aligned, seamless):
    photo, m, crop = aligned
    rng = np.random.default_rng(0)
    fake = rng.integers(0, 256, crop.shape, dtype=np.uint8)  # obviously different "face"
    mask = face_mask(128)
    out = composite(photo, fake, m, mask, seamless=seamless)
    alpha = warp_back(feather(mask, 128 // 16), m, photo.shape)
    outside = alpha == 0
    assert np.array_equal(out[outside], photo[outside])  # byte-identical outside the mask
    inside = alpha > 0.99
    assert inside.sum() > 2000
    assert np.abs(out[inside].astype(int) - photo[inside]).mean() > 20


def test_composite_at_the_frame_edge_and_a_face_free_frame(aligned):
    photo, m, crop = aligned
    # Shift the face so half of it leaves the frame: Poisson cloning must not fail.
    shifted = m.copy()
    shifted[:, 2] += [60, 0]
    out = composite(photo[:, :240], crop[:, ::-1].copy(), m, face_mask(128), seamless=True)
    assert out.shape == (512, 240, 3)
    # A mask that is empty leaves the frame byte-identical.
    same = composite(photo, crop, m, np.zeros((128, 128), np.float32))
    assert np.array_equal(same, photo)


# --------------------------------------------------------------------------- video


def _frames(n, w=64, h=48):
    return [np.full((h, w, 3), (i * 20) % 256, np.uint8) for i in range(n)]


@pytest.mark.parametrize("ext,fps", [(".mp4", 24.0), (".avi", 12.5)])
def test_video_writer_keeps_frame_count_fps_and_size(tmp_path, ext, fps):
    path = tmp_path / f"clip{ext}"
    with VideoWriter(path, fps, (64, 48)) as w:
        for f in _frames(17):
            w.write(f)
    assert probe(path) == {"frames": 17, "fps": fps, "width": 64, "height": 48}
    assert not list(tmp_path.glob(".clip*"))  # no temp file left behind
    with VideoReader(path) as r:
        got = list(r.frames(every=5))
    assert [i for i, _ in got] == [0, 5, 10, 15]
    # Lossy codecs: grey levels come back within a few units.
    assert abs(int(got[1][1].mean()) - 100) <= 4


def test_video_writer_failure_leaves_nothing(tmp_path):
    path = tmp_path / "out.mp4"
    with pytest.raises(ValueError):
        with VideoWriter(path, 24, (64, 48)) as w:
            w.write(_frames(1)[0])
            w.write(np.zeros((10, 10, 3), np.uint8))  # wrong size
    assert list(tmp_path.iterdir()) == []
    with pytest.raises(UsageError):
        VideoWriter(tmp_path / "out.gif", 24, (64, 48))


def test_video_reader_refuses_a_non_video(tmp_path):
    bad = tmp_path / "fake.mp4"
    bad.write_bytes(b"not a video at all" * 10)
    with pytest.raises(DataError, match="fake.mp4"):
        VideoReader(bad)


# --------------------------------------------------------------------------- provenance


@pytest.mark.parametrize("ext", [".png", ".jpg"])
def test_image_outputs_carry_the_provenance_tag(tmp_path, ext, aligned):
    photo = aligned[0]
    rec = provenance_record(direction="a2b", weights="runs/faceswap/x")
    path = write_image(tmp_path / f"out{ext}", photo, rec)
    got = read_provenance(path)
    assert got["altered_by"] == "lensforge faceswap" and got["direction"] == "a2b" and got["synthetic"]
    with Image.open(path) as im:
        if ext == ".png":
            assert KEY in im.text and "lensforge faceswap" in im.text["Comment"]
        else:
            assert b"lensforge faceswap" in im.info["comment"]
        pixels = np.asarray(im.convert("RGB"))
    if ext == ".png":
        assert np.array_equal(pixels, photo)
    # An untagged file reads as None.
    Image.fromarray(photo).save(tmp_path / f"plain{ext}")
    assert read_provenance(tmp_path / f"plain{ext}") is None


def test_mp4_gets_a_container_comment_and_still_plays(tmp_path):
    path = tmp_path / "clip.mp4"
    with VideoWriter(path, 24, (64, 48)) as w:
        for f in _frames(12):
            w.write(f)
    before = path.stat().st_size
    assert read_provenance(path) is None
    assert tag_video(path, provenance_record(direction="b2a")) == "container"
    assert path.stat().st_size > before
    assert read_provenance(path)["direction"] == "b2a"
    assert b"\xa9cmt" in path.read_bytes()
    assert probe(path) == {"frames": 12, "fps": 24.0, "width": 64, "height": 48}
    assert not (tmp_path / "clip.mp4.provenance.json").exists()


def test_other_containers_get_a_sidecar(tmp_path):
    path = tmp_path / "clip.avi"
    with VideoWriter(path, 10, (64, 48)) as w:
        for f in _frames(3):
            w.write(f)
    assert tag_video(path, provenance_record()) == "sidecar"
    side = json.loads((tmp_path / "clip.avi.provenance.json").read_text())
    assert side["altered_by"] == "lensforge faceswap"
    assert read_provenance(path)["synthetic"] is True


def test_visible_label_marks_only_the_corner(aligned):
    photo = aligned[0]
    out = stamp_label(photo)
    changed = np.any(out != photo, axis=2)
    ys, xs = np.nonzero(changed)
    assert changed.sum() > 500
    assert ys.min() > 512 * 0.85 and xs.max() < 512 * 0.5  # bottom-left corner only
    assert np.array_equal(photo, skdata.astronaut())  # input untouched
