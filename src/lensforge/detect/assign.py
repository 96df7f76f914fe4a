"""Task-aligned assignment (TOOD / YOLOv8): which anchor points learn which ground-truth box.

For every ground truth, candidate anchors are those whose centre lies inside the box; each gets
the alignment metric t = score^alpha * IoU^beta, where score is the predicted probability of the
box's class and IoU that of the predicted box. The top-k candidates by t become positives; an
anchor claimed by several boxes keeps the one it overlaps most. Classification targets are the
normalised t (so the class score learns to predict localisation quality), which is what makes
one NMS-ranked score meaningful.
"""
from __future__ import annotations

import torch

from .boxops import aligned_iou


@torch.no_grad()
def task_aligned_assign(scores: torch.Tensor, pred_boxes: torch.Tensor, points: torch.Tensor,
                        gt_labels: torch.Tensor, gt_boxes: torch.Tensor, gt_mask: torch.Tensor,
                        topk: int = 10, alpha: float = 0.5, beta: float = 6.0, eps: float = 1e-9):
    """Assign anchors to ground truths.

    scores (B, A, C) probabilities; pred_boxes (B, A, 4) xyxy; points (A, 2); gt_labels (B, G) long;
    gt_boxes (B, G, 4); gt_mask (B, G) bool for real (non-padding) boxes.
    Returns target_boxes (B, A, 4), target_scores (B, A, C), foreground (B, A) bool, gt_index (B, A).
    """
    b, a, c = scores.shape
    g = gt_boxes.shape[1]
    if g == 0:
        return (torch.zeros_like(pred_boxes), torch.zeros_like(scores), torch.zeros(b, a, dtype=torch.bool),
                torch.zeros(b, a, dtype=torch.long))
    # anchors whose centre is inside the gt box (strictly, by a hair, so edge points do not count)
    lt = points[None, None] - gt_boxes[:, :, None, :2]
    rb = gt_boxes[:, :, None, 2:] - points[None, None]
    inside = torch.cat([lt, rb], -1).amin(-1) > eps  # (B, G, A)
    valid = inside & gt_mask[:, :, None]
    cls_score = scores.gather(2, gt_labels.clamp(min=0)[:, None, :].expand(b, a, g)).permute(0, 2, 1)  # (B, G, A)
    overlaps = aligned_iou(gt_boxes[:, :, None, :], pred_boxes[:, None, :, :], "iou").clamp(min=0)  # (B, G, A)
    overlaps = overlaps * valid
    align = cls_score.pow(alpha) * overlaps.pow(beta) * valid
    k = min(topk, a)
    top = align.topk(k, dim=-1).indices  # (B, G, k)
    chosen = torch.zeros_like(valid).scatter_(-1, top, True) & valid & (align > 0)
    # an anchor claimed by several gts keeps the one its predicted box overlaps most
    multi = chosen.sum(1) > 1  # (B, A)
    if multi.any():
        best = overlaps.argmax(1)  # (B, A)
        one_hot = torch.zeros_like(chosen).scatter_(1, best[:, None, :], True)
        chosen = torch.where(multi[:, None, :], one_hot, chosen)
    fg = chosen.any(1)  # (B, A)
    gt_idx = chosen.float().argmax(1)  # (B, A)
    batch = torch.arange(b)[:, None]
    target_boxes = gt_boxes[batch, gt_idx]
    target_labels = gt_labels[batch, gt_idx].clamp(min=0)
    target_scores = torch.zeros(b, a, c, dtype=scores.dtype)
    target_scores.scatter_(2, target_labels[..., None], 1.0)
    target_scores *= fg[..., None]
    # normalise: each gt's best anchor gets a target equal to its best IoU, others proportionally
    align = align * chosen
    max_align = align.amax(-1, keepdim=True)  # (B, G, 1)
    max_iou = (overlaps * chosen).amax(-1, keepdim=True)
    norm = (align * max_iou / (max_align + eps)).amax(1)  # (B, A)
    target_scores = target_scores * norm[..., None]
    return target_boxes, target_scores, fg, gt_idx
