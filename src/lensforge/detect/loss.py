"""Detection loss: BCE on IoU-aware class targets + CIoU box loss + distribution focal loss (DFL).

Weights 7.5 / 0.5 / 1.5 (box / cls / dfl) are YOLOv8's; every term is normalised by the sum of the
class targets, so images with many boxes do not dominate. Targets come from the task-aligned
assigner (assign.py).
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from .assign import task_aligned_assign
from .boxops import aligned_iou, box2dist, dfl_expectation, dist2box, make_anchors


@dataclass
class LossWeights:
    box: float = 7.5
    cls: float = 0.5
    dfl: float = 1.5


def flatten_outputs(outputs: list[torch.Tensor], nc: int, reg_max: int):
    """Per-level maps -> (B, A, 4*reg_max) distribution logits and (B, A, nc) class logits."""
    b = outputs[0].shape[0]
    flat = torch.cat([o.reshape(b, 4 * reg_max + nc, -1) for o in outputs], 2).permute(0, 2, 1)
    return flat[..., : 4 * reg_max], flat[..., 4 * reg_max:]


def pad_targets(targets: torch.Tensor, batch: int):
    """(M, 6) [image, class, x1, y1, x2, y2] -> labels (B, G), boxes (B, G, 4), mask (B, G)."""
    counts = torch.bincount(targets[:, 0].long(), minlength=batch) if len(targets) else torch.zeros(batch, dtype=torch.long)
    g = int(counts.max()) if batch else 0
    labels = torch.full((batch, g), -1, dtype=torch.long)
    boxes = torch.zeros(batch, g, 4)
    mask = torch.zeros(batch, g, dtype=torch.bool)
    for i in range(batch):
        t = targets[targets[:, 0] == i]
        labels[i, : len(t)] = t[:, 1].long()
        boxes[i, : len(t)] = t[:, 2:]
        mask[i, : len(t)] = True
    return labels, boxes, mask


class DetectionLoss:
    def __init__(self, nc: int, reg_max: int, strides, weights: LossWeights | None = None):
        self.nc, self.reg_max, self.strides = nc, reg_max, strides
        self.w = weights or LossWeights()

    def __call__(self, outputs: list[torch.Tensor], targets: torch.Tensor) -> tuple[torch.Tensor, dict]:
        box_logits, cls_logits = flatten_outputs([o.float() for o in outputs], self.nc, self.reg_max)
        b = box_logits.shape[0]
        points, strides = make_anchors(outputs, self.strides)
        pred_dist = dfl_expectation(box_logits, self.reg_max)  # in stride units
        pred_boxes = dist2box(pred_dist * strides, points)  # pixels
        labels, gt_boxes, gt_mask = pad_targets(targets, b)
        t_boxes, t_scores, fg, _ = task_aligned_assign(cls_logits.detach().sigmoid(), pred_boxes.detach(), points,
                                                       labels, gt_boxes, gt_mask)
        norm = t_scores.sum().clamp(min=1)
        loss_cls = F.binary_cross_entropy_with_logits(cls_logits, t_scores, reduction="sum") / norm
        if fg.any():
            weight = t_scores.sum(-1)[fg]
            iou = aligned_iou(pred_boxes[fg], t_boxes[fg], "ciou")
            loss_box = ((1 - iou) * weight).sum() / norm
            s = strides.expand(b, -1, -1)[fg]
            target_dist = box2dist(t_boxes[fg] / s, points.expand(b, -1, -1)[fg] / s, self.reg_max)
            loss_dfl = (dfl(box_logits[fg].view(-1, 4, self.reg_max), target_dist).mean(-1) * weight).sum() / norm
        else:
            loss_box = loss_dfl = cls_logits.sum() * 0
        total = self.w.box * loss_box + self.w.cls * loss_cls + self.w.dfl * loss_dfl
        return total, {"loss": total.detach(), "box": loss_box.detach(), "cls": loss_cls.detach(), "dfl": loss_dfl.detach()}


def dfl(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Distribution focal loss: cross-entropy to the two bins around the (fractional) target,
    weighted by closeness, so the distribution's expectation lands on the target."""
    left = target.long()
    wl = left + 1 - target
    ce = lambda idx: F.cross_entropy(logits.reshape(-1, logits.shape[-1]), idx.reshape(-1), reduction="none").view(left.shape)  # noqa: E731
    return ce(left) * wl + ce(left + 1) * (1 - wl)
