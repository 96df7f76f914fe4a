"""Putting a generated face back into a photo: mask, colour match, warp back, blend.

The one guarantee convert makes: pixels where the warped-back mask is exactly 0 keep their
input bytes. Everything here therefore works inside the mask: the feathered mask is eroded
before it is blurred so its soft edge stays within the hard one, colour matching only changes
the generated face, and Poisson cloning (OpenCV's `seamlessClone`, which can touch its whole
ROI) is followed by a masked copy.
"""
from __future__ import annotations

import cv2
import numpy as np

from .align import DEFAULT_MARGIN, template_points, warp_back

__all__ = ["face_mask", "feather", "match_color", "composite", "blend_alpha"]


def face_mask(size: int, margin: float = DEFAULT_MARGIN, landmarks: np.ndarray | None = None) -> np.ndarray:
    """Landmark-derived hard mask (float32 0/1) of the face in a `size` x `size` aligned crop.

    An ellipse placed by the 5 landmarks (crop pixels; default: the template's): centred just
    below the midpoint of eyes and mouth, turned with the eye line, reaching 1.04 eye spacings
    out to the cheeks and 1.1 eye-to-mouth distances up over the brows and down to the chin.
    With the template at the default margin that is x 0.08-0.92, y 0.12-1.10 in face units,
    about a fifth of the crop; on aligned faces94 crops it covers brows to chin and leaves
    hair, ears and background out.
    """
    lm = template_points(size, margin) if landmarks is None else np.asarray(landmarks, np.float64).reshape(5, 2)
    eyes, mouth = lm[:2].mean(0), lm[3:].mean(0)
    down = mouth - eyes
    eye_gap = float(np.linalg.norm(lm[1] - lm[0]))
    span = float(np.linalg.norm(down))
    centre = (eyes + mouth) / 2 + 0.067 * down  # 0.03 face units below the midpoint
    angle = float(np.degrees(np.arctan2(lm[1, 1] - lm[0, 1], lm[1, 0] - lm[0, 0])))
    mask = np.zeros((size, size), np.uint8)
    s = 4  # sub-pixel ellipse: cv2 takes fixed-point coordinates with `s` fractional bits
    cv2.ellipse(mask, tuple(int(round(v * (1 << s))) for v in centre),
                (int(round(eye_gap * 1.04 * (1 << s))), int(round(span * 1.1 * (1 << s)))),
                angle, 0, 360, 1, -1, cv2.LINE_8, s)
    return mask.astype(np.float32)


def feather(mask: np.ndarray, radius: int) -> np.ndarray:
    """Soft-edged copy of a 0/1 mask whose non-zero support stays inside the original: erode by
    e = ceil(radius/2), then box-blur twice with half-width e/2 (a tent reaching at most e), so
    the alpha ramps from 0 at the hard edge to 1 about `radius` pixels inside it."""
    mask = (np.asarray(mask, np.float32) > 0.5).astype(np.float32)
    if radius <= 0:
        return mask
    e = (radius + 1) // 2
    kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * e + 1, 2 * e + 1))
    out = cv2.erode(mask, kernel, borderType=cv2.BORDER_CONSTANT, borderValue=0)
    half = max(e // 2, 1)
    for _ in range(2):
        out = cv2.blur(out, (2 * half + 1, 2 * half + 1), borderType=cv2.BORDER_CONSTANT)
    out[mask == 0] = 0  # belt and braces: the support cannot grow past the hard mask
    return np.clip(out, 0, 1)


def match_color(source: np.ndarray, reference: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """Shift `source`'s per-channel Lab mean and std, measured inside `mask`, to `reference`'s:
    the generated face takes on the target photo's lighting and white balance."""
    sel = np.asarray(mask) > 0.5
    if sel.sum() < 16:
        return source
    src = cv2.cvtColor(source.astype(np.float32) / 255, cv2.COLOR_RGB2Lab)
    ref = cv2.cvtColor(reference.astype(np.float32) / 255, cv2.COLOR_RGB2Lab)
    s_mean, s_std = src[sel].mean(0), src[sel].std(0)
    r_mean, r_std = ref[sel].mean(0), ref[sel].std(0)
    gain = r_std / np.maximum(s_std, 1e-3)
    gain = np.clip(gain, 0.25, 4.0)  # a flat generated face must not be blown up into noise
    out = (src - s_mean) * gain + r_mean
    out[..., 0] = np.clip(out[..., 0], 0, 100)
    rgb = cv2.cvtColor(out, cv2.COLOR_Lab2RGB)
    return np.clip(np.round(rgb * 255), 0, 255).astype(np.uint8)


def composite(frame: np.ndarray, face: np.ndarray, matrix: np.ndarray, mask: np.ndarray, *,
              color: bool = True, seamless: bool = False, feather_px: int | None = None) -> np.ndarray:
    """Paste an aligned, generated `face` (SxSx3 uint8) back into `frame` (HxWx3 uint8).

    `matrix` is the frame-to-crop alignment matrix the face was made with; `mask` (SxS, values
    in [0, 1], hard or learned) says which crop pixels belong to the face. The mask is hardened
    at 0.5, feathered by `feather_px` (default size/16), warped back, and used as alpha. Pixels
    where the warped alpha is 0 are returned byte-identical.
    """
    size = face.shape[0]
    if face.shape[:2] != (size, size) or mask.shape[:2] != (size, size):
        raise ValueError(f"face {face.shape} and mask {mask.shape} must be the same square size")
    hard = (np.asarray(mask, np.float32) > 0.5).astype(np.float32)
    soft = feather(hard, _radius(size, feather_px))
    if color:
        target = cv2.warpAffine(frame, matrix, (size, size), flags=cv2.INTER_LINEAR,
                                borderMode=cv2.BORDER_REFLECT101)
        face = match_color(face, target, soft > 0.5)
    h, w = frame.shape[:2]
    alpha = warp_back(soft, matrix, (h, w))
    sel = alpha > 0
    out = frame.copy()
    if not sel.any():
        return out
    warped = warp_back(face, matrix, (h, w))
    if seamless:
        warped = _poisson(frame, warped, warp_back(hard, matrix, (h, w)) > 0.5, warped)
    a = alpha[sel][:, None]
    out[sel] = np.clip(np.round(frame[sel] * (1 - a) + warped[sel] * a), 0, 255).astype(np.uint8)
    return out


def _radius(size: int, feather_px: int | None) -> int:
    return max(1, size // 16) if feather_px is None else int(feather_px)


def blend_alpha(mask: np.ndarray, matrix: np.ndarray, shape: tuple[int, int], feather_px: int | None = None) -> np.ndarray:
    """The alpha `composite` uses in frame coordinates: where it is 0, the frame is untouched."""
    hard = (np.asarray(mask, np.float32) > 0.5).astype(np.float32)
    return warp_back(feather(hard, _radius(hard.shape[0], feather_px)), matrix, shape[:2])


def _poisson(frame: np.ndarray, face: np.ndarray, region: np.ndarray, fallback: np.ndarray) -> np.ndarray:
    """`face` re-lit to fit `frame` by Poisson cloning over `region`. The frame is padded first:
    seamlessClone fails on a mask touching the border, and a face at the frame's edge is common."""
    if region.sum() < 16:
        return fallback
    pad = 8
    dst = cv2.copyMakeBorder(frame, pad, pad, pad, pad, cv2.BORDER_REFLECT101)
    src = cv2.copyMakeBorder(face, pad, pad, pad, pad, cv2.BORDER_REFLECT101)
    m = cv2.copyMakeBorder(region.astype(np.uint8) * 255, pad, pad, pad, pad, cv2.BORDER_CONSTANT, value=0)
    x, y, bw, bh = cv2.boundingRect(m)
    # seamlessClone centres the mask's bounding box on `p` with integer halves; this `p` puts it
    # back exactly where it came from.
    p = (x + bw // 2, y + bh // 2)
    try:
        cloned = cv2.seamlessClone(src, dst, m, p, cv2.NORMAL_CLONE)
    except cv2.error:
        return fallback
    return cloned[pad:-pad, pad:-pad]
