"""Figures for run reports.

Figures are built on `matplotlib.figure.Figure` with an explicit Agg canvas instead of pyplot, so
plotting never switches the process-wide backend, never opens a window on a desktop session and
never leaks figures into pyplot's global registry during long training loops. Every file is
rendered into memory first and then written through `fileio.write_bytes`, so an interrupted run
never leaves a half-written PNG behind.
"""
from __future__ import annotations

import io
import math
import os
import textwrap

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from PIL import Image

from lensforge.fileio import write_bytes

__all__ = ["plot_curves", "plot_confusion_matrix", "image_grid", "save_image_grid_png", "per_class_table"]

_DPI = 100
# Columns that are bookkeeping rather than quality metrics; plotting them next to accuracy would
# squash the interesting curves.
_NOT_METRICS = {"epoch", "step", "lr", "learning_rate", "time", "seconds", "epoch_time", "elapsed"}


def _save_figure(fig: Figure, path: str | os.PathLike) -> None:
    FigureCanvasAgg(fig)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=_DPI)
    write_bytes(path, buf.getvalue())


def _to_float(value) -> float | None:
    # metrics.csv rows come back from csv.DictReader as strings, with "" for columns a row lacks.
    if value is None or value == "":
        return None
    try:
        x = float(value)
    except (TypeError, ValueError):
        return None
    return x if math.isfinite(x) else None


def _series(rows: list[dict], key: str) -> tuple[list[float], list[float]]:
    xs, ys = [], []
    for i, row in enumerate(rows):
        y = _to_float(row.get(key))
        if y is None:
            continue
        x = _to_float(row.get("epoch"))
        xs.append(float(i + 1) if x is None else x)
        ys.append(y)
    return xs, ys


def plot_curves(rows: list[dict], path: str | os.PathLike) -> None:
    """Losses on the left, every other numeric metric on the right, learning rate on a twin axis.

    Losses and accuracies live on different scales, so sharing one axis would flatten one of them.
    Markers are drawn so a single-epoch run still shows its points.
    """
    keys: list[str] = []
    for row in rows:
        for k in row:
            if k not in keys and k is not None:
                keys.append(k)
    numeric = [k for k in keys if k not in {"epoch"} and _series(rows, k)[1]]
    losses = [k for k in numeric if k.endswith("loss")]
    metrics = [k for k in numeric if k not in losses and k.lower() not in _NOT_METRICS]
    lr_key = next((k for k in numeric if k.lower() in {"lr", "learning_rate"}), None)
    marker = "o" if len(rows) <= 50 else None

    fig = Figure(figsize=(11, 4.2), layout="constrained")
    ax_loss, ax_metric = fig.subplots(1, 2)
    for ax, cols, ylabel in ((ax_loss, losses, "loss"), (ax_metric, metrics, "metric")):
        for k in cols:
            xs, ys = _series(rows, k)
            ax.plot(xs, ys, marker=marker, markersize=3, label=k)
            if len(xs) == 1:  # one epoch: label the point with its value, or the axis looks empty
                ax.annotate(f"{ys[0]:.4g}", (xs[0], ys[0]), textcoords="offset points", xytext=(6, 4), fontsize=8)
        ax.set_xlabel("epoch")
        ax.set_ylabel(ylabel)
        ax.grid(True, alpha=0.3)
        if len(rows) == 1:
            ax.set_xlim(0.5, 1.5)
            ax.set_xticks([1])
        if not cols:
            ax.text(0.5, 0.5, f"no {ylabel} columns", ha="center", va="center",
                    transform=ax.transAxes, color="grey")
    handles, labels = ax_loss.get_legend_handles_labels()
    if lr_key is not None:
        xs, ys = _series(rows, lr_key)
        ax_lr = ax_loss.twinx()
        ax_lr.plot(xs, ys, color="grey", linestyle="--", linewidth=1, marker=marker, markersize=2,
                   label=f"{lr_key} (right axis)")
        ax_lr.set_ylabel(lr_key, color="grey")
        if min(ys) > 0 and max(ys) / min(ys) > 20:
            ax_lr.set_yscale("log")
        ax_lr.tick_params(axis="y", labelcolor="grey", labelsize=8)
        h2, l2 = ax_lr.get_legend_handles_labels()
        handles, labels = handles + h2, labels + l2
    if handles:  # one legend for the loss axis and the lr twin axis
        ax_loss.legend(handles, labels, fontsize=8)
    if metrics:
        ax_metric.legend(fontsize=8)
    ax_loss.set_title("loss")
    ax_metric.set_title("metrics")
    _save_figure(fig, path)


def plot_confusion_matrix(cm: np.ndarray, class_names: list[str], path: str | os.PathLike,
                          normalize: bool = True) -> None:
    """Rows are true classes, columns predictions.

    With `normalize` the colours show per-true-class rates (so rare classes are not washed out by
    frequent ones) while the annotations keep the raw counts people actually reason about.
    Annotations shrink with the class count and are dropped past 20 classes, where they would
    only be unreadable clutter.
    """
    cm = np.asarray(cm)
    k = cm.shape[0]
    if cm.ndim != 2 or cm.shape[1] != k:
        raise ValueError(f"confusion matrix must be square, got shape {cm.shape}")
    names = [str(c) for c in class_names] if class_names is not None else [str(i) for i in range(k)]
    if len(names) != k:
        raise ValueError(f"{len(names)} class names for a {k}x{k} confusion matrix")

    counts = cm.astype(np.float64)
    if normalize:
        totals = counts.sum(axis=1, keepdims=True)
        shown = np.divide(counts, totals, out=np.zeros_like(counts), where=totals > 0)
        vmax = 1.0
    else:
        shown = counts
        vmax = max(float(counts.max()), 1.0)

    side = min(max(5.0, 0.42 * k + 2.5), 22.0)
    fig = Figure(figsize=(side + 1.0, side), layout="constrained")
    ax = fig.subplots()
    im = ax.imshow(shown, cmap="Blues", vmin=0.0, vmax=vmax, interpolation="nearest")
    fig.colorbar(im, ax=ax, fraction=0.046, pad=0.04,
                 label="fraction of true class" if normalize else "count")

    tick_size = 9 if k <= 20 else max(4, int(9 - (k - 20) / 10))
    ax.set_xticks(range(k), labels=names, rotation=45, ha="right", rotation_mode="anchor",
                  fontsize=tick_size)
    ax.set_yticks(range(k), labels=names, fontsize=tick_size)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title("confusion matrix" + (" (row-normalised)" if normalize else ""))

    if k <= 20:
        font = 10 if k <= 10 else 7
        for i in range(k):
            for j in range(k):
                colour = "white" if shown[i, j] > 0.6 * vmax else "black"
                ax.text(j, i, f"{int(round(counts[i, j]))}", ha="center", va="center",
                        fontsize=font, color=colour)
    _save_figure(fig, path)


def _to_nhwc_uint8(images) -> np.ndarray:
    """Accept NCHW (C in 1/3), NHW, NHWC or a torch tensor; uint8 as is, floats taken as [0, 1]."""
    if hasattr(images, "detach"):
        images = images.detach().cpu().numpy()
    arr = np.asarray(images)
    if arr.ndim == 3:
        arr = arr[:, None]
    if arr.ndim != 4:
        raise ValueError(f"expected images of shape (N, C, H, W), got {arr.shape}")
    if arr.shape[1] not in (1, 3) and arr.shape[-1] in (1, 3):
        arr = arr.transpose(0, 3, 1, 2)
    if arr.shape[1] not in (1, 3):
        raise ValueError(f"expected 1 or 3 channels, got shape {arr.shape}")
    if arr.dtype != np.uint8:
        arr = np.clip(np.nan_to_num(arr.astype(np.float32)), 0.0, 1.0)
        arr = np.round(arr * 255.0).astype(np.uint8)
    return np.ascontiguousarray(arr.transpose(0, 2, 3, 1))


def _upscale(arr: np.ndarray, factor: int) -> np.ndarray:
    if factor <= 1:
        return arr
    return arr.repeat(factor, axis=1).repeat(factor, axis=2)


def save_image_grid_png(images, path: str | os.PathLike, ncols: int = 8, padding: int = 2, *,
                        scale: int = 1, pad_value: int = 128) -> None:
    """Tile images into one PNG with PIL only; cheap enough to call every epoch."""
    arr = _upscale(_to_nhwc_uint8(images), int(scale))
    n, h, w, c = arr.shape
    if n == 0:
        raise ValueError("no images to save")
    ncols = max(1, min(int(ncols), n))
    nrows = math.ceil(n / ncols)
    canvas = np.full((nrows * (h + padding) + padding, ncols * (w + padding) + padding, c),
                     pad_value, dtype=np.uint8)
    for idx in range(n):
        r, col = divmod(idx, ncols)
        y, x = padding + r * (h + padding), padding + col * (w + padding)
        canvas[y:y + h, x:x + w] = arr[idx]
    img = Image.fromarray(canvas[..., 0] if c == 1 else canvas, mode="L" if c == 1 else "RGB")
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    write_bytes(path, buf.getvalue())


def image_grid(images, path: str | os.PathLike, *, titles: list[str] | None = None, ncols: int = 8,
               title_colors: list[str] | None = None, scale: int = 1) -> None:
    """A titled grid for humans: mistakes, reconstructions, generated samples.

    Tiny images (MNIST's 28 px) are enlarged by an integer nearest-neighbour factor so digits stay
    crisp and visible; large ones are capped at 256 px per cell (times `scale`) to keep reports
    small. The figure is sized in pixels so one image pixel maps to whole screen pixels.
    """
    arr = _to_nhwc_uint8(images)
    n, h, w, c = arr.shape
    if titles is not None and len(titles) != n:
        raise ValueError(f"{len(titles)} titles for {n} images")
    if n == 0:
        fig = Figure(figsize=(3, 1))
        fig.text(0.5, 0.5, "no images", ha="center", va="center", color="grey")
        _save_figure(fig, path)
        return

    scale = max(1, int(scale))
    side = max(h, w) * scale
    factor = float(scale)
    if side < 64:
        factor *= math.ceil(64 / side)
    elif side > 256 * scale:
        factor *= 256 * scale / side
    cell_w, cell_h = w * factor, h * factor
    arr = _upscale(arr, int(factor) if factor >= 2 else 1)

    ncols = max(1, min(int(ncols), n))
    nrows = math.ceil(n / ncols)
    font_pt = 7
    line_px = font_pt * 1.45 * _DPI / 72
    char_px = font_pt * 0.62 * _DPI / 72
    wrapped: list[str] = []
    if titles is not None:
        longest = max(len(line) for t in titles for line in str(t).splitlines() or [""])
        cell_w = max(cell_w, min(longest * char_px, 200.0))
        width_chars = max(8, int(cell_w / char_px))
        wrapped = ["\n".join(textwrap.wrap(str(t), width_chars) or [""]) for t in titles]
    title_h = (max(t.count("\n") + 1 for t in wrapped) * line_px + 4) if wrapped else 0.0

    pad = 6.0
    box_w, box_h = cell_w + pad, cell_h + title_h + pad
    fig_w, fig_h = ncols * box_w + pad, nrows * box_h + pad
    fig = Figure(figsize=(fig_w / _DPI, fig_h / _DPI), dpi=_DPI)
    img_w = w * factor
    interp = "nearest" if factor >= 1 else "antialiased"
    for idx in range(n):
        r, col = divmod(idx, ncols)
        left = pad + col * box_w + (cell_w - img_w) / 2
        top = pad + r * box_h
        ax = fig.add_axes((left / fig_w, 1 - (top + cell_h) / fig_h, img_w / fig_w, cell_h / fig_h))
        ax.set_axis_off()
        if c == 1:
            ax.imshow(arr[idx, ..., 0], cmap="gray", vmin=0, vmax=255, interpolation=interp)
        else:
            ax.imshow(arr[idx], interpolation=interp)
        if wrapped:
            colour = title_colors[idx] if title_colors is not None and idx < len(title_colors) else "black"
            fig.text((pad + col * box_w + cell_w / 2) / fig_w, 1 - (top + cell_h + 2) / fig_h,
                     wrapped[idx], ha="center", va="top", fontsize=font_pt, color=colour,
                     linespacing=1.2)
    _save_figure(fig, path)


def per_class_table(cm: np.ndarray, class_names) -> list[dict]:
    """Precision/recall/F1 per class from a (true x predicted) confusion matrix.

    Undefined ratios (a class never predicted, or absent from the data) are reported as 0 rather
    than NaN so the table renders and serialises cleanly; plain arithmetic avoids numpy warnings.
    """
    cm = np.asarray(cm)
    k = cm.shape[0]
    if cm.ndim != 2 or cm.shape[1] != k:
        raise ValueError(f"confusion matrix must be square, got shape {cm.shape}")
    names = [str(c) for c in class_names] if class_names is not None else [str(i) for i in range(k)]
    if len(names) != k:
        raise ValueError(f"{len(names)} class names for a {k}x{k} confusion matrix")
    rows = []
    for i in range(k):
        tp = float(cm[i, i])
        predicted = float(cm[:, i].sum())
        actual = float(cm[i, :].sum())
        precision = tp / predicted if predicted > 0 else 0.0
        recall = tp / actual if actual > 0 else 0.0
        f1 = 2 * precision * recall / (precision + recall) if precision + recall > 0 else 0.0
        rows.append({"class": names[i], "precision": round(precision, 4), "recall": round(recall, 4),
                     "f1": round(f1, 4), "support": int(round(actual))})
    return rows
