"""Faces layer: detection, alignment round trip, extraction from images/folders/zips/videos."""
from __future__ import annotations

import json
import zipfile
from pathlib import Path

import cv2
import numpy as np
import pytest
from skimage import data as skdata

from lensforge.errors import UsageError
from lensforge.faces.align import (align_face, alignment_matrix, invert, similarity_transform,
                                   template_points, transform_points, warp_back)
from lensforge.faces.detect import FaceDetector, mtcnn_available
from lensforge.tasks.faceswap import extract

SHARED = Path(__file__).resolve().parents[2] / "shared" / "datasets"
FACES94 = SHARED / "essex-faces94.zip"


@pytest.fixture(scope="module")
def astronaut() -> np.ndarray:
    return skdata.astronaut()  # 512x512 RGB portrait, one face at about (180-270, 60-175)


@pytest.fixture(scope="module")
def detector() -> FaceDetector:
    return FaceDetector()


def _save(path: Path, rgb: np.ndarray) -> Path:
    cv2.imwrite(str(path), cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
    return path


def _two_faces(astronaut: np.ndarray) -> np.ndarray:
    """Two real faces side by side: the astronaut's head and its mirror image."""
    head = astronaut[20:260, 120:330]
    return np.hstack([head, head[:, ::-1]])


# --------------------------------------------------------------------------- alignment


def test_similarity_transform_recovers_a_known_transform_and_refuses_reflection():
    rng = np.random.default_rng(0)
    src = rng.uniform(0, 100, (5, 2))
    angle, scale, shift = 0.3, 1.7, np.array([12.0, -4.0])
    rot = scale * np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])
    dst = src @ rot.T + shift
    m = similarity_transform(src, dst)
    np.testing.assert_allclose(m[:, :2], rot, atol=1e-9)
    np.testing.assert_allclose(m[:, 2], shift, atol=1e-9)
    # A mirrored target has no exact similarity; the fit must still be a rotation (det > 0).
    mirrored = dst * [-1, 1]
    assert np.linalg.det(similarity_transform(src, mirrored)[:, :2]) > 0
    with pytest.raises(ValueError):
        similarity_transform(np.zeros((5, 2)), dst)


def test_alignment_puts_landmarks_on_the_template(astronaut, detector):
    face = detector.detect(astronaut)[0]
    m = alignment_matrix(face.landmarks, 128)
    moved = transform_points(face.landmarks, m)
    # A similarity cannot fit 5 points exactly; the astronaut's broad smile puts her mouth
    # corners ~4 px (of 128) off the template's, the eyes land within 2 px.
    err = np.abs(moved - template_points(128))
    assert err.max() < 6 and err[:2].max() < 2.5
    # The eyes end up level (roll removed) and the face upright.
    assert abs(moved[0, 1] - moved[1, 1]) < 3 and moved[0, 0] < moved[1, 0] and moved[0, 1] < moved[3, 1]


def test_align_then_inverse_warp_returns_the_face_to_its_place(astronaut, detector):
    """Round trip: crop, warp back with the inverse transform, find the face again."""
    face = detector.detect(astronaut)[0]
    crop, m = align_face(astronaut, face.landmarks, 256)
    back = warp_back(crop, m, astronaut.shape)
    np.testing.assert_allclose(invert(invert(m)), m, atol=1e-9)
    x, y, w, h = (int(v) for v in face.box)
    region = (slice(y + h // 6, y + h - h // 6), slice(x + w // 6, x + w - w // 6))
    a = cv2.cvtColor(astronaut, cv2.COLOR_RGB2GRAY)[region].astype(np.float64)
    b = cv2.cvtColor(back, cv2.COLOR_RGB2GRAY)[region].astype(np.float64)
    (dx, dy), _ = cv2.phaseCorrelate(a, b)
    assert abs(dx) < 1 and abs(dy) < 1, (dx, dy)  # no shift, to within a pixel
    assert np.abs(a - b).mean() < 6  # same pixels, up to two resamplings (0-255 scale)
    again = detector.detect(back)[0]
    assert np.abs(again.landmarks - face.landmarks).max() <= 2.0


# --------------------------------------------------------------------------- detection


def test_detector_finds_one_face_with_landmarks_in_order(astronaut, detector):
    faces = detector.detect(astronaut)
    assert len(faces) == 1
    f = faces[0]
    x, y, w, h = f.box
    assert 150 < x + w / 2 < 300 and 60 < y + h / 2 < 180 and f.score > 0.99
    lm = f.landmarks
    assert lm[0, 0] < lm[2, 0] < lm[1, 0] and lm[0, 1] < lm[2, 1] < lm[3, 1]
    assert detector.detect(np.full((200, 200, 3), 128, np.uint8)) == []
    # min_size bigger than the face: nothing
    assert FaceDetector(min_size=200).detect(astronaut) == []


def test_haar_fallback_places_landmarks_near_mtcnn(astronaut):
    haar = FaceDetector("haar").detect(astronaut)
    assert len(haar) == 1 and haar[0].detector == "haar"
    if mtcnn_available():
        ref = FaceDetector("mtcnn").detect(astronaut)[0].landmarks
        eye_gap = ref[1, 0] - ref[0, 0]
        # Eyes are found by the eye cascade: within 3 px. Nose and mouth are estimated from
        # the box (faces94 proportions): within 0.3 eye spacings (13 px; her broad smile puts
        # the mouth corners 10 px wider than a neutral mouth).
        err = np.abs(haar[0].landmarks - ref)
        assert err[:2].max() <= 3 and err.max() < 0.3 * eye_gap


def test_detector_rejects_bad_arguments():
    with pytest.raises(ValueError):
        FaceDetector("dlib")
    with pytest.raises(ValueError):
        FaceDetector().detect(np.zeros((10, 10, 4), np.uint8))


# --------------------------------------------------------------------------- extraction


def test_extract_counts_faces_no_face_and_corrupt_files(tmp_path, astronaut):
    src = tmp_path / "in"
    src.mkdir()
    _save(src / "one.jpg", astronaut)
    _save(src / "two.png", _two_faces(astronaut))
    _save(src / "none.png", skdata.coffee())  # a cup of coffee, no face
    (src / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 this is not really a jpeg")
    (src / "notes.txt").write_text("ignored: not an image")
    res = extract([src], tmp_path / "faces", face_size=96)

    assert res.summary["images"] == 3 and res.summary["unreadable"] == 1
    assert res.summary["faces_per_image"] == {"0": 1, "1": 1, "2": 1}
    assert [e["source"] for e in res.no_face] == [str(src / "none.png")]
    assert res.errors[0]["source"] == str(src / "broken.jpg") and "broken.jpg" in res.errors[0]["error"]
    names = sorted(f["file"] for f in res.faces)
    assert names == ["one_0.png", "two_0.png", "two_1.png"]
    for n in names:
        assert cv2.imread(str(tmp_path / "faces" / n)).shape == (96, 96, 3)
    doc = json.loads((tmp_path / "faces" / "alignments.json").read_text())
    rec = next(f for f in doc["faces"] if f["file"] == "one_0.png")
    assert rec["source"] == str(src / "one.jpg") and rec["frame"] is None
    assert len(rec["landmarks"]) == 5 and len(rec["matrix"]) == 2 and rec["score"] > 0.9
    # The stored matrix reproduces the stored crop from the source photo.
    photo = cv2.cvtColor(cv2.imread(str(src / "one.jpg")), cv2.COLOR_BGR2RGB)
    again = cv2.warpAffine(photo, np.array(rec["matrix"]), (96, 96), flags=cv2.INTER_AREA,
                           borderMode=cv2.BORDER_REFLECT101)
    crop = cv2.cvtColor(cv2.imread(str(tmp_path / "faces" / "one_0.png")), cv2.COLOR_BGR2RGB)
    assert np.abs(again.astype(int) - crop).mean() < 1.0
    # The two faces are side by side, the mirror on the right.
    two = sorted((f for f in doc["faces"] if f["file"].startswith("two")), key=lambda f: f["box"][0])
    assert two[0]["box"][0] < 210 <= two[1]["box"][0]
    assert not list((tmp_path / "faces").glob(".*.tmp"))


def test_extract_largest_only_and_min_size(tmp_path, astronaut):
    img = _save(tmp_path / "two.png", _two_faces(astronaut))
    assert len(extract([img], tmp_path / "a", largest=True, face_size=64).faces) == 1
    res = extract([img], tmp_path / "b", min_size=300, face_size=64)
    assert res.faces == [] and res.summary["no_face"] == 1


def test_extract_from_zip_and_every_nth_video_frame(tmp_path, astronaut):
    # A 10-frame clip: frames 0-5 show the astronaut, 6-9 are a plain wall.
    clip = tmp_path / "clip.avi"
    small = cv2.resize(astronaut, (256, 256), interpolation=cv2.INTER_AREA)
    writer = cv2.VideoWriter(str(clip), cv2.VideoWriter_fourcc(*"MJPG"), 10.0, (256, 256))
    for i in range(10):
        frame = small if i < 6 else np.full_like(small, 90)
        writer.write(cv2.cvtColor(frame, cv2.COLOR_RGB2BGR))
    writer.release()
    archive = tmp_path / "set.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        zf.writestr("people/a.png", cv2.imencode(".png", cv2.cvtColor(astronaut, cv2.COLOR_RGB2BGR))[1].tobytes())
        zf.writestr("people/bad.png", b"\x89PNG\r\n\x1a\n truncated")
        zf.writestr("__MACOSX/people/._a.png", b"junk")
        zf.write(clip, "videos/clip.avi")
    res = extract([archive], tmp_path / "out", every=2, face_size=64)
    assert res.summary["images"] == 1 and res.summary["video_frames"] == 5  # frames 0,2,4,6,8
    assert res.summary["unreadable"] == 1 and res.errors[0]["source"] == f"{archive}/people/bad.png"
    video_faces = sorted(f["frame"] for f in res.faces if f["frame"] is not None)
    assert video_faces == [0, 2, 4]
    assert sorted(f["frame"] for f in res.no_face) == [6, 8]
    assert (tmp_path / "out" / "videos_clip_f000002_0.png").is_file()


def test_extract_usage_errors(tmp_path):
    with pytest.raises(UsageError, match="no such file"):
        extract([tmp_path / "missing"], tmp_path / "out")
    (tmp_path / "empty").mkdir()
    with pytest.raises(UsageError, match="no image files found"):
        extract([tmp_path / "empty"], tmp_path / "out")


@pytest.mark.skipif(not FACES94.exists(), reason="shared faces94 absent")
def test_extract_on_real_faces94_photos_finds_one_face_each(tmp_path):
    """A dozen faces94 photos across the three folders, plus a stray GIF from `gotone/`."""
    with zipfile.ZipFile(FACES94) as zf:
        jpgs = sorted(n for n in zf.namelist() if n.endswith(".jpg") and "gotone" not in n)
        pick = jpgs[::len(jpgs) // 12][:12] + ["faces94/female/gotone/anpage.gif"]
        small = tmp_path / "small.zip"
        with zipfile.ZipFile(small, "w") as out:
            for n in pick:
                out.writestr(n, zf.read(n))
    res = extract([small], tmp_path / "faces", face_size=64, largest=True)
    assert res.summary["images"] == 13 and res.summary["unreadable"] == 0
    assert res.summary["faces_per_image"] == {"1": 13}
