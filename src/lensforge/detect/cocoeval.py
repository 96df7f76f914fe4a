"""COCO-protocol evaluation through faster-coco-eval, plus the run folder's COCO json files.

Ground truth and predictions are exported as standard COCO json (category ids = class index + 1,
boxes `[x, y, w, h]` in original image pixels), so anyone can re-score a run with pycocotools;
`pycocotools_score` does exactly that and tests check both agree. Per-class AP@0.5, AP by object
size and the precision-recall curves are read from the same accumulated `precision` array that
COCO's summary uses (IoU thresholds x 101 recall points x classes x areas x max-dets).
"""
from __future__ import annotations

import contextlib
import io
from dataclasses import dataclass

import numpy as np
import torch

from .boxops import box_iou


@dataclass
class ImageTruth:
    file_name: str
    width: int
    height: int
    boxes: np.ndarray  # (N, 4) xyxy original pixels
    labels: np.ndarray  # (N,)


def ground_truth_json(images: list[ImageTruth], classes: list[str]) -> dict:
    anns, aid = [], 1
    for i, im in enumerate(images, 1):
        for (x1, y1, x2, y2), c in zip(np.asarray(im.boxes, float).tolist(), np.asarray(im.labels).tolist()):
            w, h = x2 - x1, y2 - y1
            anns.append({"id": aid, "image_id": i, "category_id": int(c) + 1, "bbox": [x1, y1, w, h],
                         "area": w * h, "iscrowd": 0})
            aid += 1
    return {"info": {"description": "lensforge detection ground truth"}, "licenses": [],
            "images": [{"id": i, "file_name": im.file_name, "width": im.width, "height": im.height}
                       for i, im in enumerate(images, 1)],
            "annotations": anns,
            "categories": [{"id": i + 1, "name": n, "supercategory": "object"} for i, n in enumerate(classes)]}


def predictions_json(dets: list[torch.Tensor | np.ndarray]) -> list[dict]:
    """dets[i]: (K, 6) [x1, y1, x2, y2, score, class] in original pixels for image id i + 1."""
    out = []
    for i, d in enumerate(dets, 1):
        for x1, y1, x2, y2, s, c in np.asarray(d, float).tolist():
            out.append({"image_id": i, "category_id": int(c) + 1, "bbox": [round(x1, 3), round(y1, 3),
                        round(x2 - x1, 3), round(y2 - y1, 3)], "score": round(s, 5)})
    return out


def evaluate(gt: dict, preds: list[dict], classes: list[str]) -> dict:
    """mAP@0.5:0.95, mAP@0.5, per-class AP, AP by size and PR curves (IoU 0.5) with faster-coco-eval."""
    from faster_coco_eval import COCO, COCOeval_faster

    nc = len(classes)
    empty = {"map50_95": 0.0, "map50": 0.0, "map75": 0.0, "ap_small": -1.0, "ap_medium": -1.0, "ap_large": -1.0,
             "ap50": {c: 0.0 for c in classes}, "ap50_95": {c: 0.0 for c in classes},
             "recall_points": np.linspace(0, 1, 101).tolist(), "pr50": [[0.0] * 101 for _ in classes]}
    if not preds or not gt["annotations"]:
        return empty
    with contextlib.redirect_stdout(io.StringIO()):
        coco_gt = COCO(gt)
        coco_dt = coco_gt.loadRes(preds)
        ev = COCOeval_faster(coco_gt, coco_dt, iouType="bbox", print_function=lambda *a, **k: None)
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    s = ev.stats
    prec = np.asarray(ev.eval["precision"])  # (T, R, K, A, M); -1 where a class has no ground truth
    present = [k for k in range(nc) if (prec[:, :, k, 0, -1] > -1).any()]

    def ap(t_slice, k):
        p = prec[t_slice, :, k, 0, -1]
        p = p[p > -1]
        return float(p.mean()) if p.size else 0.0

    return {"map50_95": float(s[0]), "map50": float(s[1]), "map75": float(s[2]),
            "ap_small": float(s[3]), "ap_medium": float(s[4]), "ap_large": float(s[5]),
            "ap50": {classes[k]: ap(slice(0, 1), k) for k in present},
            "ap50_95": {classes[k]: ap(slice(None), k) for k in present},
            "recall_points": np.linspace(0, 1, 101).tolist(),
            "pr50": [np.clip(prec[0, :, k, 0, -1], 0, 1).tolist() for k in range(nc)]}


def pycocotools_score(gt_path, pred_path) -> tuple[float, float]:
    """Independent re-score of exported json files with pycocotools: (mAP@0.5:0.95, mAP@0.5)."""
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    with contextlib.redirect_stdout(io.StringIO()):
        gt = COCO(str(gt_path))
        dt = gt.loadRes(str(pred_path))
        ev = COCOeval(gt, dt, "bbox")
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    return float(ev.stats[0]), float(ev.stats[1])


def confusion_matrix(truths: list[ImageTruth], dets: list, nc: int, conf: float = 0.25, iou: float = 0.45) -> np.ndarray:
    """(nc+1) x (nc+1) counts, rows = true class, columns = predicted class (lensforge's
    convention, as in plot_confusion_matrix); index nc = background.

    Predictions above `conf` are matched one-to-one to ground truths with IoU > `iou` (highest IoU
    first, any class); unmatched predictions are false positives on background (row nc) and
    unmatched truths missed objects (column nc).
    """
    m = np.zeros((nc + 1, nc + 1), np.int64)
    for t, d in zip(truths, dets):
        d = torch.as_tensor(np.asarray(d, np.float32)).reshape(-1, 6)
        d = d[d[:, 4] > conf]
        gl = np.asarray(t.labels, np.int64)
        if len(gl) == 0:
            for c in d[:, 5].long().tolist():
                m[nc, c] += 1
            continue
        if len(d) == 0:
            for c in gl:
                m[c, nc] += 1
            continue
        ious = box_iou(torch.as_tensor(np.asarray(t.boxes, np.float32)), d[:, :4]).numpy()  # (G, D)
        gi, di = np.nonzero(ious > iou)
        order = np.argsort(-ious[gi, di], kind="stable")
        used_g, used_d = set(), set()
        for k in order:
            g, p = gi[k], di[k]
            if g in used_g or p in used_d:
                continue
            used_g.add(g)
            used_d.add(p)
            m[gl[g], int(d[p, 5])] += 1
        for g in range(len(gl)):
            if g not in used_g:
                m[gl[g], nc] += 1
        for p in range(len(d)):
            if p not in used_d:
                m[nc, int(d[p, 5])] += 1
    return m
