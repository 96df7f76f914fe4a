"""Box geometry on torch tensors: IoU, GIoU/CIoU, anchor points and distance <-> box conversion.

Boxes are `xyxy` in input pixels throughout; anchors are cell centres in pixels.
"""
from __future__ import annotations

import math

import torch


def box_iou(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Pairwise IoU (N, M) of xyxy boxes."""
    lt = torch.maximum(a[:, None, :2], b[None, :, :2])
    rb = torch.minimum(a[:, None, 2:], b[None, :, 2:])
    inter = (rb - lt).clamp(min=0).prod(-1)
    area_a = (a[:, 2:] - a[:, :2]).clamp(min=0).prod(-1)
    area_b = (b[:, 2:] - b[:, :2]).clamp(min=0).prod(-1)
    return inter / (area_a[:, None] + area_b[None] - inter + 1e-9)


def aligned_iou(a: torch.Tensor, b: torch.Tensor, kind: str = "ciou", eps: float = 1e-7) -> torch.Tensor:
    """Element-wise IoU of matching boxes (..., 4); kind 'iou', 'giou' or 'ciou'."""
    w1, h1 = (a[..., 2] - a[..., 0]).clamp(min=eps), (a[..., 3] - a[..., 1]).clamp(min=eps)
    w2, h2 = (b[..., 2] - b[..., 0]).clamp(min=eps), (b[..., 3] - b[..., 1]).clamp(min=eps)
    iw = (torch.minimum(a[..., 2], b[..., 2]) - torch.maximum(a[..., 0], b[..., 0])).clamp(min=0)
    ih = (torch.minimum(a[..., 3], b[..., 3]) - torch.maximum(a[..., 1], b[..., 1])).clamp(min=0)
    inter = iw * ih
    union = w1 * h1 + w2 * h2 - inter + eps
    iou = inter / union
    if kind == "iou":
        return iou
    cw = torch.maximum(a[..., 2], b[..., 2]) - torch.minimum(a[..., 0], b[..., 0])
    ch = torch.maximum(a[..., 3], b[..., 3]) - torch.minimum(a[..., 1], b[..., 1])
    if kind == "giou":
        hull = cw * ch + eps
        return iou - (hull - union) / hull
    # CIoU: IoU - centre distance^2 / hull diagonal^2 - alpha * aspect-ratio disagreement
    c2 = cw ** 2 + ch ** 2 + eps
    rho2 = ((a[..., 0] + a[..., 2] - b[..., 0] - b[..., 2]) ** 2 + (a[..., 1] + a[..., 3] - b[..., 1] - b[..., 3]) ** 2) / 4
    v = (4 / math.pi ** 2) * (torch.atan(w2 / h2) - torch.atan(w1 / h1)) ** 2
    with torch.no_grad():
        alpha = v / (v - iou + (1 + eps))
    return iou - (rho2 / c2 + v * alpha)


def make_anchors(feats: list[torch.Tensor], strides) -> tuple[torch.Tensor, torch.Tensor]:
    """Cell centres (A, 2) in pixels and their strides (A, 1) for maps listed fine to coarse."""
    points, strs = [], []
    for f, s in zip(feats, strides):
        h, w = f.shape[-2:]
        ys = (torch.arange(h, dtype=torch.float32) + 0.5) * s
        xs = (torch.arange(w, dtype=torch.float32) + 0.5) * s
        yy, xx = torch.meshgrid(ys, xs, indexing="ij")
        points.append(torch.stack([xx, yy], -1).view(-1, 2))
        strs.append(torch.full((h * w, 1), float(s)))
    return torch.cat(points), torch.cat(strs)


def dist2box(dist: torch.Tensor, points: torch.Tensor) -> torch.Tensor:
    """(left, top, right, bottom) distances from points -> xyxy."""
    return torch.cat([points - dist[..., :2], points + dist[..., 2:]], -1)


def box2dist(boxes: torch.Tensor, points: torch.Tensor, reg_max: int) -> torch.Tensor:
    """xyxy -> (l, t, r, b) distances in bins, clamped to what `reg_max` bins (0 .. reg_max - 1) can
    express: the DFL splits a target between bins floor(d) and floor(d) + 1, both must exist."""
    return torch.cat([points - boxes[..., :2], boxes[..., 2:] - points], -1).clamp(0, reg_max - 1.01)


def dfl_expectation(logits: torch.Tensor, reg_max: int) -> torch.Tensor:
    """(..., 4 * reg_max) distribution logits -> (..., 4) expected distances in bins."""
    p = logits.view(*logits.shape[:-1], 4, reg_max).softmax(-1)
    return p @ torch.arange(reg_max, dtype=p.dtype, device=p.device)
