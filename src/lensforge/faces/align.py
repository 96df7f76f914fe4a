"""Face alignment: a least-squares similarity transform from 5 landmarks onto a fixed template.

Every aligned crop puts the eyes, nose tip and mouth corners at the same place, so the swap
network only has to learn appearance, never pose offsets; the same 2x3 matrix, inverted,
carries the generated face back onto the photo (`warp_back`).

Landmark order everywhere in `lensforge.faces`: eye on the image's left, eye on the image's
right, nose tip, mouth corner on the image's left, mouth corner on the image's right (x, y in
pixels, float).
"""
from __future__ import annotations

import cv2
import numpy as np

__all__ = ["TEMPLATE", "DEFAULT_MARGIN", "template_points", "similarity_transform",
           "alignment_matrix", "align_face", "invert", "transform_points", "warp_back"]

#: Mean MTCNN landmarks on faces94 in "face units": origin at the detector box's centre minus
#: half a side, one unit = sqrt(box width x box height). Measured on 499 photos (every 6th of
#: faces94, one face each; per-point spread 0.025-0.039 units), then mirrored about x = 0.5 so
#: a frontal face is aligned upright and centred rather than with the set's slight average tilt.
TEMPLATE = np.array([
    [0.2979, 0.3581],  # eye, image left
    [0.7021, 0.3581],  # eye, image right
    [0.5000, 0.5753],  # nose tip
    [0.3346, 0.8062],  # mouth corner, image left
    [0.6654, 0.8062],  # mouth corner, image right
], dtype=np.float64)

#: Fraction of the crop side left on each side of the unit face square. At 0.2 the crop keeps
#: the forehead, chin and cheeks (MTCNN boxes run ~15% beyond the unit square vertically on
#: faces94: box aspect w/h 0.75), and some hair and background for the blend to feather into.
DEFAULT_MARGIN = 0.2


def template_points(size: int, margin: float = DEFAULT_MARGIN) -> np.ndarray:
    """Where the 5 landmarks land in a `size` x `size` aligned crop."""
    if not 0 <= margin < 0.5:
        raise ValueError(f"margin must be in [0, 0.5), not {margin}")
    if size < 8:
        raise ValueError(f"face size must be at least 8 pixels, not {size}")
    return size * (margin + TEMPLATE * (1 - 2 * margin))


def similarity_transform(src: np.ndarray, dst: np.ndarray) -> np.ndarray:
    """The rotation + uniform scale + translation (no reflection, no shear) that maps points
    `src` onto `dst` with least squared error (Umeyama 1991), as a 2x3 matrix."""
    src = np.asarray(src, np.float64)
    dst = np.asarray(dst, np.float64)
    if src.shape != dst.shape or src.ndim != 2 or src.shape[1] != 2 or len(src) < 2:
        raise ValueError(f"need two equal (N>=2, 2) point arrays, got {src.shape} and {dst.shape}")
    mu_s, mu_d = src.mean(0), dst.mean(0)
    s, d = src - mu_s, dst - mu_d
    var_s = (s ** 2).sum() / len(src)
    if var_s <= 1e-12:
        raise ValueError("source points coincide; no transform is defined")
    cov = d.T @ s / len(src)
    u, sig, vt = np.linalg.svd(cov)
    # A reflection would mirror the face; force det(R) = +1 (the Umeyama correction).
    sign = np.ones(2)
    if np.linalg.det(u) * np.linalg.det(vt) < 0:
        sign[-1] = -1
    rot = u @ np.diag(sign) @ vt
    scale = (sig * sign).sum() / var_s
    t = mu_d - scale * rot @ mu_s
    return np.hstack([scale * rot, t[:, None]])


def alignment_matrix(landmarks: np.ndarray, size: int, margin: float = DEFAULT_MARGIN) -> np.ndarray:
    """2x3 matrix taking image coordinates to the aligned `size` x `size` crop."""
    return similarity_transform(np.asarray(landmarks, np.float64).reshape(5, 2), template_points(size, margin))


def align_face(image: np.ndarray, landmarks: np.ndarray, size: int, margin: float = DEFAULT_MARGIN,
               border: int = cv2.BORDER_REFLECT101) -> tuple[np.ndarray, np.ndarray]:
    """Aligned crop of the face with these landmarks, and the image-to-crop matrix.

    Parts of the crop that fall outside the photo are filled by reflection: a black wedge would
    teach the swap network to draw black wedges, and convert never pastes those parts back
    (the blend mask stays inside the face).
    """
    matrix = alignment_matrix(landmarks, size, margin)
    interp = cv2.INTER_AREA if _scale(matrix) < 1 else cv2.INTER_LINEAR
    crop = cv2.warpAffine(image, matrix, (size, size), flags=interp, borderMode=border)
    return crop, matrix


def invert(matrix: np.ndarray) -> np.ndarray:
    """Inverse of a 2x3 affine matrix (crop back to image coordinates)."""
    return cv2.invertAffineTransform(np.asarray(matrix, np.float64))


def transform_points(points: np.ndarray, matrix: np.ndarray) -> np.ndarray:
    pts = np.asarray(points, np.float64).reshape(-1, 2)
    return pts @ np.asarray(matrix, np.float64)[:, :2].T + np.asarray(matrix, np.float64)[:, 2]


def warp_back(crop: np.ndarray, matrix: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """Warp an aligned crop (image or mask, any dtype cv2 handles) back into a (height, width)
    frame using the inverse of `matrix`; pixels the crop does not cover are 0."""
    h, w = shape[:2]
    interp = cv2.INTER_LINEAR
    return cv2.warpAffine(crop, invert(matrix), (w, h), flags=interp,
                          borderMode=cv2.BORDER_CONSTANT, borderValue=0)


def _scale(matrix: np.ndarray) -> float:
    return float(np.sqrt(abs(np.linalg.det(np.asarray(matrix)[:, :2]))))
