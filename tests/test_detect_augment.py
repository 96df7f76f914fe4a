"""Augmentations keep boxes on their objects: coloured rectangles must stay exactly under their boxes."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from lensforge.data.detaugment import (AugmentConfig, DetImages, letterbox, make_batch, mosaic_canvas,
                                       transform_boxes, unletterbox)

# one distinct saturated colour per class; none close to the grey padding (114)
COLOURS = np.array([[255, 0, 0], [0, 255, 0], [0, 0, 255], [255, 255, 0], [255, 0, 255], [0, 255, 255],
                    [255, 128, 0], [128, 0, 255], [0, 128, 255], [255, 255, 255], [0, 0, 0], [128, 255, 0]], np.uint8)


def synthetic(size=160, n=4, seed=0) -> DetImages:
    """n images (size x 3/4 size) of dark noise, each with three non-touching solid rectangles of unique colours."""
    rng = np.random.default_rng(seed)
    imgs, boxes, labels = [], [], []
    h, w = size * 3 // 4, size
    for k in range(n):
        img = rng.integers(40, 70, (h, w, 3)).astype(np.uint8)
        b = []
        for j, (x, y) in enumerate([(8, 8), (w // 2 + 4, 10), (20, h // 2 + 6)]):
            bw, bh = 30 + 5 * j, 22 + 3 * k
            img[y:y + bh, x:x + bw] = COLOURS[3 * k + j]
            b.append([x, y, x + bw, y + bh])
        imgs.append(img)
        boxes.append(np.array(b, np.float32))
        labels.append(np.array([3 * k, 3 * k + 1, 3 * k + 2]))
    return DetImages(imgs, boxes, labels, [f"{i}.png" for i in range(n)], size)


def assert_boxes_on_objects(img: np.ndarray, boxes: np.ndarray, labels: np.ndarray):
    """Inside each box (1.5 px in) >= 90% its colour; a 3 px ring just outside it < 20% (it is tight)."""
    h, w = img.shape[:2]
    near = lambda region, c: (np.abs(region.astype(int) - c).max(-1) < 40)
    for (x1, y1, x2, y2), c in zip(boxes, labels):
        colour = COLOURS[int(c)]
        inner = img[int(np.ceil(y1 + 1.5)):int(y2 - 1.5), int(np.ceil(x1 + 1.5)):int(x2 - 1.5)]
        if inner.size:
            assert near(inner, colour).mean() > 0.9, (x1, y1, x2, y2, c)
        ring = np.zeros((h, w), bool)
        X1, Y1, X2, Y2 = (int(max(0, np.floor(x1) - 4)), int(max(0, np.floor(y1) - 4)), int(min(w, np.ceil(x2) + 4)),
                          int(min(h, np.ceil(y2) + 4)))
        ring[Y1:Y2, X1:X2] = True
        ring[int(max(0, y1 - 1)):int(min(h, y2 + 1)), int(max(0, x1 - 1)):int(min(w, x2 + 1))] = False
        if ring.sum() > 10:
            assert near(img[ring], colour).mean() < 0.2, (x1, y1, x2, y2, c)


def test_transform_boxes_matches_moved_corners():
    m = np.array([[0.5, 0, 10], [0, 2, -4]])
    np.testing.assert_allclose(transform_boxes(np.array([[2, 4, 6, 8]], np.float32), m), [[11, 4, 13, 12]])


def test_letterbox_round_trip():
    data = synthetic()
    img, r, pad = letterbox(data.images[0], 200)
    assert img.shape == (200, 200, 3) and pad == (0.0, 25.0)
    mapped = data.boxes[0] * r + np.array([*pad, *pad], np.float32)
    assert_boxes_on_objects(img, mapped, data.labels[0])
    np.testing.assert_allclose(unletterbox(mapped, r, pad, 160, 120), data.boxes[0], atol=1e-4)


def test_mosaic_canvas_keeps_boxes_on_objects():
    data = synthetic()
    for seed in range(5):
        canvas, boxes, labels, _ = mosaic_canvas(data, [0, 1, 2, 3], np.random.default_rng(seed))
        assert canvas.shape == (320, 320, 3) and len(boxes) > 0
        assert_boxes_on_objects(canvas, boxes, labels)


@pytest.mark.parametrize("mosaic", [True, False])
def test_augmented_batches_keep_boxes_on_objects(mosaic):
    data = synthetic()
    cfg = AugmentConfig(hsv=(0, 0, 0))  # colour checks need unjittered colours; HSV has its own test
    rng = np.random.default_rng(1)
    for _ in range(6):
        images, targets = make_batch(data, [0, 1, 2, 3], rng, cfg, mosaic=mosaic)
        assert images.shape == (4, 3, 160, 160) and images.dtype == torch.uint8
        assert targets.shape[1] == 6 and len(targets) > 0
        assert (targets[:, 2:] >= 0).all() and (targets[:, 2:] <= 160).all()
        for b in range(4):
            t = targets[targets[:, 0] == b]
            assert_boxes_on_objects(images[b].permute(1, 2, 0).numpy(), t[:, 2:].numpy(), t[:, 1].long().numpy())


def test_eval_batch_is_letterbox_and_deterministic():
    data = synthetic()
    a = make_batch(data, [0, 1], np.random.default_rng(0), None)
    b = make_batch(data, [0, 1], np.random.default_rng(5), None)
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
    assert_boxes_on_objects(a[0][1].permute(1, 2, 0).numpy(), a[1][a[1][:, 0] == 1][:, 2:].numpy(), data.labels[1])


def test_flip_moves_boxes_with_pixels():
    from lensforge.data.detaugment import flip_batch
    data = synthetic()
    images, targets = make_batch(data, [0, 1], np.random.default_rng(0), None)
    fi, ft = flip_batch(images, targets, torch.tensor([True, False]))
    assert torch.equal(fi[0], images[0].flip(-1)) and torch.equal(fi[1], images[1])
    for b in range(2):
        t = ft[ft[:, 0] == b]
        assert_boxes_on_objects(fi[b].permute(1, 2, 0).numpy(), t[:, 2:].numpy(), t[:, 1].long().numpy())


def test_hsv_jitter_changes_colour_not_geometry():
    from lensforge.data.detaugment import hsv_jitter
    img = synthetic().images[0]
    out = hsv_jitter(img, np.random.default_rng(3))
    assert out.shape == img.shape and out.dtype == np.uint8 and not np.array_equal(out, img)
    # the rectangle is still one uniform colour exactly where it was
    patch = out[8:30, 8:38].reshape(-1, 3)
    assert (patch.max(0).astype(int) - patch.min(0)).max() <= 1
