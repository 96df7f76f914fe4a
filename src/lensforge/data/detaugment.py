"""Detection augmentation: letterbox, mosaic, random affine, HSV jitter, horizontal flip.

Every geometric step moves the boxes with the pixels: mosaic and the random affine are fused into
one `cv2.warpAffine` per training image (one resampling, so small platelets are not blurred
twice), and the same 2x3 matrix maps the four corners of each box, whose enclosing rectangle is the
new box. Boxes that end up mostly outside the image (under 10% of their area kept, or thinner than
2 px) are dropped, as Ultralytics does. Flip and the uint8 -> float conversion run batched in torch
on the assembled batch; HSV jitter is a per-image lookup table (cv2.LUT, ~0.3 ms at 416 px).

Images are held once in memory resized so their long side equals the training size (`DetImages`),
which is the input mosaic and letterbox both start from.
"""
from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import cv2
import numpy as np
import torch

from ..errors import DataError
from .boxes import DetSample, Sanity
from .imageio import read_image

PAD = 114  # grey padding, the YOLO convention: neutral for the network and for HSV jitter


@dataclass
class DetImages:
    """Decoded training images (RGB uint8, long side = size) with their boxes in those pixels."""

    images: list[np.ndarray]
    boxes: list[np.ndarray]
    labels: list[np.ndarray]
    names: list[str]
    size: int

    def __len__(self) -> int:
        return len(self.images)


def resize_long(img: np.ndarray, size: int) -> tuple[np.ndarray, float]:
    h, w = img.shape[:2]
    r = size / max(h, w)
    if r == 1:
        return img, 1.0
    interp = cv2.INTER_AREA if r < 1 else cv2.INTER_LINEAR
    return cv2.resize(img, (max(1, round(w * r)), max(1, round(h * r))), interpolation=interp), r


def decode_samples(samples: list[DetSample], size: int, sanity: Sanity | None = None) -> DetImages:
    """Decode every sample once (two threads); unreadable images are a counted skip."""

    def one(s: DetSample):
        try:
            img = read_image(s.read(), "RGB", name=s.name)
        except DataError:
            return None
        img, _ = resize_long(img, size)
        # boxes are in the annotation's pixels; scaling by resized/annotated size also absorbs an
        # annotation whose stated size disagrees with the file (a re-saved, downscaled image)
        sx, sy = img.shape[1] / s.width, img.shape[0] / s.height
        return img, s.boxes * np.array([sx, sy, sx, sy], np.float32), s.labels

    with ThreadPoolExecutor(2) as pool:
        out = list(pool.map(one, samples))
    keep = [i for i, o in enumerate(out) if o is not None]
    if sanity is not None:
        for i, o in enumerate(out):
            if o is None:
                sanity.skip("unreadable image", samples[i].name)
    if not keep:
        raise DataError("no readable images among the annotated ones")
    return DetImages([out[i][0] for i in keep], [out[i][1] for i in keep], [out[i][2] for i in keep],
                     [samples[i].name for i in keep], size)


# --------------------------------------------------------------------------- geometry


def letterbox(img: np.ndarray, size: int) -> tuple[np.ndarray, float, tuple[float, float]]:
    """Resize keeping the aspect ratio so the long side is `size`, pad centred to size x size.

    Returns (image, scale, (pad_x, pad_y)); a box maps as `box * scale + pad`.
    """
    small, r = resize_long(img, size)
    h, w = small.shape[:2]
    px, py = (size - w) // 2, (size - h) // 2
    out = np.full((size, size, 3), PAD, np.uint8)
    out[py:py + h, px:px + w] = small
    return out, r, (float(px), float(py))


def unletterbox(boxes: torch.Tensor | np.ndarray, scale: float, pad: tuple[float, float], width: int, height: int):
    """Map boxes from letterboxed pixels back to the original image, clipped to it."""
    b = boxes.clone() if isinstance(boxes, torch.Tensor) else boxes.copy()
    b[:, [0, 2]] = ((b[:, [0, 2]] - pad[0]) / scale).clip(0, width)
    b[:, [1, 3]] = ((b[:, [1, 3]] - pad[1]) / scale).clip(0, height)
    return b


def transform_boxes(boxes: np.ndarray, m: np.ndarray) -> np.ndarray:
    """Apply a 2x3 affine matrix to boxes: the enclosing box of the four moved corners."""
    if len(boxes) == 0:
        return boxes.reshape(0, 4).astype(np.float32)
    x1, y1, x2, y2 = boxes.T
    corners = np.stack([np.stack([x1, y1], 1), np.stack([x2, y1], 1), np.stack([x1, y2], 1), np.stack([x2, y2], 1)], 1)
    moved = corners @ m[:, :2].T + m[:, 2]
    return np.concatenate([moved.min(1), moved.max(1)], 1).astype(np.float32)


def box_candidates(before: np.ndarray, after: np.ndarray, min_side=2.0, min_area=0.1, max_aspect=20.0) -> np.ndarray:
    """Which transformed boxes still show their object (before: boxes scaled by the affine's scale)."""
    w0, h0 = before[:, 2] - before[:, 0], before[:, 3] - before[:, 1]
    w1, h1 = after[:, 2] - after[:, 0], after[:, 3] - after[:, 1]
    aspect = np.maximum(w1 / (h1 + 1e-9), h1 / (w1 + 1e-9))
    return (w1 > min_side) & (h1 > min_side) & (w1 * h1 / (w0 * h0 + 1e-9) > min_area) & (aspect < max_aspect)


def warp_with_boxes(img: np.ndarray, boxes: np.ndarray, labels: np.ndarray, m: np.ndarray, out: int, scale: float):
    """Warp an image by the 2x3 matrix `m` to out x out and move its boxes; drop lost boxes."""
    warped = cv2.warpAffine(img, m, (out, out), flags=cv2.INTER_LINEAR, borderValue=(PAD, PAD, PAD))
    moved = transform_boxes(boxes, m)
    moved[:, [0, 2]] = moved[:, [0, 2]].clip(0, out)
    moved[:, [1, 3]] = moved[:, [1, 3]].clip(0, out)
    keep = box_candidates(boxes * scale, moved) if len(boxes) else np.zeros(0, bool)
    return warped, moved[keep], labels[keep]


def affine_matrix(rng: np.random.Generator, src_centre: tuple[float, float], out: int,
                  scale: float = 0.5, translate: float = 0.1) -> tuple[np.ndarray, float]:
    """Random scale about `src_centre`, which lands at the output centre plus a random shift."""
    s = rng.uniform(1 - scale, 1 + scale)
    tx = (0.5 + rng.uniform(-translate, translate)) * out
    ty = (0.5 + rng.uniform(-translate, translate)) * out
    m = np.array([[s, 0, tx - s * src_centre[0]], [0, s, ty - s * src_centre[1]]], np.float64)
    return m, s


def mosaic_canvas(data: DetImages, indices: list[int], rng: np.random.Generator):
    """Four images around a random centre on a 2S x 2S canvas (S = data.size), with their boxes."""
    s = data.size
    xc, yc = (int(rng.uniform(0.5 * s, 1.5 * s)) for _ in range(2))
    canvas = np.full((2 * s, 2 * s, 3), PAD, np.uint8)
    all_boxes, all_labels = [], []
    for k, i in enumerate(indices):
        img = data.images[i]
        h, w = img.shape[:2]
        # quadrant k: the image's corner touching (xc, yc) is bottom-right, bottom-left, top-right, top-left
        if k == 0:
            x1a, y1a, x2a, y2a = max(xc - w, 0), max(yc - h, 0), xc, yc
            x1b, y1b = w - (x2a - x1a), h - (y2a - y1a)
        elif k == 1:
            x1a, y1a, x2a, y2a = xc, max(yc - h, 0), min(xc + w, 2 * s), yc
            x1b, y1b = 0, h - (y2a - y1a)
        elif k == 2:
            x1a, y1a, x2a, y2a = max(xc - w, 0), yc, xc, min(2 * s, yc + h)
            x1b, y1b = w - (x2a - x1a), 0
        else:
            x1a, y1a, x2a, y2a = xc, yc, min(xc + w, 2 * s), min(2 * s, yc + h)
            x1b, y1b = 0, 0
        canvas[y1a:y2a, x1a:x2a] = img[y1b:y1b + (y2a - y1a), x1b:x1b + (x2a - x1a)]
        b = data.boxes[i].copy()
        b[:, [0, 2]] += x1a - x1b
        b[:, [1, 3]] += y1a - y1b
        # clip to the pasted region: parts of a box outside it are not visible on the canvas
        b[:, [0, 2]] = b[:, [0, 2]].clip(x1a, x2a)
        b[:, [1, 3]] = b[:, [1, 3]].clip(y1a, y2a)
        visible = (b[:, 2] - b[:, 0] > 1) & (b[:, 3] - b[:, 1] > 1)
        all_boxes.append(b[visible])
        all_labels.append(data.labels[i][visible])
    boxes = np.concatenate(all_boxes).astype(np.float32) if all_boxes else np.zeros((0, 4), np.float32)
    labels = np.concatenate(all_labels) if all_labels else np.zeros(0, np.int64)
    return canvas, boxes, labels, (float(xc), float(yc))


# --------------------------------------------------------------------------- photometric


def hsv_jitter(img: np.ndarray, rng: np.random.Generator, h: float = 0.015, s: float = 0.7, v: float = 0.4) -> np.ndarray:
    """Random hue shift and saturation/value gains through one lookup table per channel."""
    gains = rng.uniform(-1, 1, 3) * (h, s, v) + 1
    hue, sat, val = cv2.split(cv2.cvtColor(img, cv2.COLOR_RGB2HSV))
    x = np.arange(256, dtype=np.float32)
    lut_h = ((x * gains[0]) % 180).astype(np.uint8)
    lut_s = np.clip(x * gains[1], 0, 255).astype(np.uint8)
    lut_v = np.clip(x * gains[2], 0, 255).astype(np.uint8)
    merged = cv2.merge((cv2.LUT(hue, lut_h), cv2.LUT(sat, lut_s), cv2.LUT(val, lut_v)))
    return cv2.cvtColor(merged, cv2.COLOR_HSV2RGB)


# --------------------------------------------------------------------------- batches


@dataclass
class AugmentConfig:
    mosaic: float = 1.0  # probability of a mosaic per training image
    scale: float = 0.5  # random scale in [1 - scale, 1 + scale]
    translate: float = 0.1  # random shift, fraction of the image size
    hsv: tuple[float, float, float] = (0.015, 0.7, 0.4)
    flip: float = 0.5


def augmented_sample(data: DetImages, i: int, rng: np.random.Generator, cfg: AugmentConfig, mosaic: bool):
    """One training image (size x size RGB uint8) with boxes and labels."""
    s = data.size
    if mosaic and rng.random() < cfg.mosaic:
        others = rng.integers(0, len(data), 3).tolist()
        canvas, boxes, labels, centre = mosaic_canvas(data, [i] + others, rng)
    else:
        canvas, boxes, labels = data.images[i], data.boxes[i], data.labels[i]
        centre = (canvas.shape[1] / 2, canvas.shape[0] / 2)
    m, sc = affine_matrix(rng, centre, s, cfg.scale, cfg.translate)
    img, boxes, labels = warp_with_boxes(canvas, boxes, labels, m, s, sc)
    if any(cfg.hsv):
        img = hsv_jitter(img, rng, *cfg.hsv)
    return img, boxes, labels


def flip_batch(images: torch.Tensor, targets: torch.Tensor, flip: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Mirror the images where `flip[b]` (batched), and their boxes: x -> W - x."""
    if not flip.any():
        return images, targets
    images = torch.where(flip.view(-1, 1, 1, 1), images.flip(-1), images)
    w = images.shape[-1]
    t = targets.clone()
    sel = flip[t[:, 0].long()]
    t[sel, 2], t[sel, 4] = w - targets[sel, 4], w - targets[sel, 2]
    return images, t


def make_batch(data: DetImages, indices: list[int], rng: np.random.Generator, cfg: AugmentConfig | None,
               mosaic: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
    """Assemble a batch: uint8 images (B, 3, S, S) and targets (M, 6) = [image, class, x1, y1, x2, y2].

    `cfg` None gives the evaluation view: the image letterboxed, nothing random.
    """
    imgs, rows = [], []
    for b, i in enumerate(indices):
        if cfg is None:
            img, r, (px, py) = letterbox(data.images[i], data.size)
            boxes = data.boxes[i] * r + np.array([px, py, px, py], np.float32)
            labels = data.labels[i]
        else:
            img, boxes, labels = augmented_sample(data, i, rng, cfg, mosaic)
        imgs.append(torch.from_numpy(np.ascontiguousarray(img)).permute(2, 0, 1))
        if len(boxes):
            rows.append(torch.cat([torch.full((len(boxes), 1), float(b)), torch.as_tensor(labels, dtype=torch.float32)[:, None],
                                   torch.as_tensor(boxes, dtype=torch.float32)], 1))
    images = torch.stack(imgs)
    targets = torch.cat(rows) if rows else torch.zeros((0, 6))
    if cfg is not None and cfg.flip > 0:
        flip = torch.from_numpy(rng.random(len(indices)) < cfg.flip)
        images, targets = flip_batch(images, targets, flip)
    return images, targets


def mosaic_epochs_off(epochs: int, close_mosaic: int) -> int:
    """First epoch (0-based) trained without mosaic: the last `close_mosaic` epochs see whole images,
    which is the distribution they are evaluated on."""
    return max(0, epochs - close_mosaic) if close_mosaic > 0 else epochs

