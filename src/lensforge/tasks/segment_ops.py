"""Segmentation metrics and whole-image prediction, shared by train/eval/predict.

Prediction works on any image size by overlap-tiling at the model's native resolution (the
resolution it was trained at: crops are never resized): tiles overlap by `overlap` px, each tile's
class probabilities are weighted by a window that falls towards the tile edges (where a
convolutional net sees the least context), and the weighted sums are normalised. Images smaller
than a tile go through in one pass; mirror padding brings any size to the model's multiple.
"""
from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F

# ----------------------------------------------------------------------------- metrics


def confusion(pred: torch.Tensor, target: torch.Tensor, k: int) -> torch.Tensor:
    """(K,K) int64 counts, rows = truth, columns = prediction."""
    idx = target.flatten().long() * k + pred.flatten().long()
    return torch.bincount(idx, minlength=k * k).reshape(k, k).cpu()


def scores(cm: torch.Tensor, names: list[str]) -> dict:
    """Per-class IoU and Dice, mean IoU and pixel accuracy from a confusion matrix.

    A class absent from both truth and prediction has no IoU (None) and is left out of the mean."""
    cm = cm.double()
    tp = cm.diag()
    fp = cm.sum(0) - tp
    fn = cm.sum(1) - tp
    union = tp + fp + fn
    iou = {n: (float(tp[i] / union[i]) if union[i] > 0 else None) for i, n in enumerate(names)}
    dice = {n: (float(2 * tp[i] / (2 * tp[i] + fp[i] + fn[i])) if union[i] > 0 else None) for i, n in enumerate(names)}
    valid = [v for v in iou.values() if v is not None]
    dvalid = [v for v in dice.values() if v is not None]
    acc = float(tp.sum() / cm.sum().clamp_min(1))
    return {"miou": sum(valid) / len(valid) if valid else 0.0, "iou": iou,
            "mean_dice": sum(dvalid) / len(dvalid) if dvalid else 0.0, "dice": dice, "pixel_accuracy": acc}


# The ISBI-2012 evaluation (Fiji's trainableSegmentation PixelError, the script that scored the
# challenge and the U-Net paper's 0.0611) binarises the submitted map at 0, 0.1, ..., 1.0 and keeps the
# best F-score of the foreground (cell interior) pixels over the stack: 1 - that is its "pixel error".
# At threshold 1.0 nothing is foreground (F = 0), so it never wins and is left out.
ISBI_THRESHOLDS = tuple(i / 10 for i in range(10))


def foreground_counts(prob: torch.Tensor, truth: torch.Tensor, foreground: int = 1,
                      thresholds=ISBI_THRESHOLDS) -> torch.Tensor:
    """(T,3) true-positive, false-positive and false-negative pixel counts of `prob > t` (the
    foreground class's probability) against `truth == foreground`, one row per threshold; sum the
    rows of several images to score them as one stack."""
    t = truth.flatten() == foreground
    p = prob.flatten()
    rows = []
    for th in thresholds:
        q = p > th
        rows.append([int((q & t).sum()), int((q & ~t).sum()), int((~q & t).sum())])
    return torch.tensor(rows, dtype=torch.long)


def isbi_pixel_error(counts: torch.Tensor, thresholds=ISBI_THRESHOLDS) -> tuple[float, float]:
    """ISBI-2012 pixel error from `foreground_counts` rows: 1 - the maximal foreground F-score over the
    thresholds, and the threshold that reached it."""
    c = counts.double()
    tp, fp, fn = c[:, 0], c[:, 1], c[:, 2]
    f = torch.where(2 * tp + fp + fn > 0, 2 * tp / (2 * tp + fp + fn).clamp_min(1), torch.ones_like(tp))
    i = int(f.argmax())
    return float(1 - f[i]), float(thresholds[i])


def regions(mask: np.ndarray, foreground: int = 1) -> np.ndarray:
    """Regions for the Rand error: 4-connected components of the foreground (cell-interior) class,
    numbered from 1; every other pixel (membrane/boundary) is 0."""
    from scipy import ndimage

    lab, _ = ndimage.label(mask == foreground)
    return lab


def thin_borders(regions_: np.ndarray) -> np.ndarray:
    """Give every unlabelled (boundary) pixel to its nearest region: the predicted membranes shrink to
    zero width, as the ISBI-2012 evaluation's border thinning does, so a region is judged by where
    its boundary runs, not by how thick the network drew it."""
    from skimage.segmentation import expand_labels

    if regions_.max() == 0:
        return regions_
    return expand_labels(regions_, distance=max(regions_.shape))


def adapted_rand(pred: np.ndarray, truth: np.ndarray, foreground: int = 1, thin: bool = True) -> float:
    """ISBI-2012's adapted Rand error on connected regions (scikit-image `adapted_rand_error`):
    regions are the 4-connected components of the foreground class in truth and prediction; truth
    pixels outside every region (the membranes) are ignored, as in the challenge ("foreground-
    restricted"), and with `thin` the predicted boundaries are thinned away (`thin_borders`), so a
    prediction is judged on whether it splits and merges the cells the way the truth does. Measured
    on the 9-epoch ISBI model: 0.233 without thinning, 0.144 with it (same masks)."""
    from skimage.metrics import adapted_rand_error

    t = regions(truth, foreground)
    p = regions(pred, foreground)
    if t.max() == 0:
        return 0.0 if p.max() == 0 else 1.0
    if thin:
        p = thin_borders(p)
    err, _, _ = adapted_rand_error(t, p, ignore_labels=(0,))
    return float(err)


# ----------------------------------------------------------------------------- prediction


def _window(n: int, overlap: int, device) -> torch.Tensor:
    """1-D blending weights for a tile of n px: a raised-cosine ramp over `overlap` px at each end,
    never zero (so single-tile borders still count), flat in the middle."""
    w = torch.ones(n, device=device)
    r = min(overlap, n // 2)
    if r > 0:
        ramp = 0.5 - 0.5 * torch.cos(math.pi * (torch.arange(r, device=device) + 0.5) / r)
        w[:r] = ramp.clamp_min(1e-3)
        w[n - r:] = ramp.flip(0).clamp_min(1e-3)
    return w


def _starts(size: int, tile: int, stride: int) -> list[int]:
    if size <= tile:
        return [0]
    s = list(range(0, size - tile, stride)) + [size - tile]
    return sorted(set(s))


def _pad_to(x: torch.Tensor, h: int, w: int) -> torch.Tensor:
    ph, pw = h - x.shape[-2], w - x.shape[-1]
    if ph == 0 and pw == 0:
        return x
    mode = "reflect" if ph < x.shape[-2] and pw < x.shape[-1] else "replicate"
    return F.pad(x, (0, pw, 0, ph), mode=mode)


@torch.no_grad()
def _forward_probs(model, x: torch.Tensor, tta: bool, autocast) -> torch.Tensor:
    with autocast():
        p = model(x).float().softmax(1)
        if tta:
            p = p + model(x.flip(-1)).float().softmax(1).flip(-1)
            p = p + model(x.flip(-2)).float().softmax(1).flip(-2)
            p = p / 3
    return p


@torch.no_grad()
def predict_probs(model, image: torch.Tensor, *, tile: int = 256, overlap: int = 64, multiple: int = 16,
                  tta: bool = False, batch: int = 4, autocast=None) -> torch.Tensor:
    """(C,H,W) float image in [0,1] -> (K,H,W) class probabilities at full resolution.

    One pass when the image (rounded up to `multiple`) fits in a tile; otherwise tiles of `tile` px
    with `overlap` px of blended overlap, `batch` tiles per forward pass."""
    import contextlib

    autocast = autocast or contextlib.nullcontext
    c, h, w = image.shape
    dev = image.device
    up = lambda n: int(math.ceil(n / multiple) * multiple)  # noqa: E731
    tile = max(multiple, tile // multiple * multiple)
    if up(h) <= tile and up(w) <= tile:
        x = _pad_to(image[None], up(h), up(w))
        return _forward_probs(model, x, tta, autocast)[0, :, :h, :w]
    th, tw = min(tile, up(h)), min(tile, up(w))
    x = _pad_to(image[None], max(h, th), max(w, tw))[0]
    H, W = x.shape[-2:]
    overlap = min(overlap, tile // 2)
    stride = max(multiple, tile - overlap)
    coords = [(y, xx) for y in _starts(H, th, stride) for xx in _starts(W, tw, stride)]
    win = _window(th, overlap, dev)[:, None] * _window(tw, overlap, dev)[None, :]
    acc, norm = None, torch.zeros(H, W, device=dev)
    for i in range(0, len(coords), batch):
        chunk = coords[i:i + batch]
        tiles = torch.stack([x[:, y:y + th, xx:xx + tw] for y, xx in chunk])
        p = _forward_probs(model, tiles, tta, autocast)
        if acc is None:
            acc = torch.zeros(p.shape[1], H, W, device=dev)
        for (y, xx), pi in zip(chunk, p):
            acc[:, y:y + th, xx:xx + tw] += pi * win
            norm[y:y + th, xx:xx + tw] += win
    return (acc / norm)[:, :h, :w]
