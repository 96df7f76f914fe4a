"""Latent-space scatter plots for autoencoders and VAEs.

A 2-D or 3-D latent is plotted as is; points are coloured by class when the data has labels, and
otherwise by their position along the first principal component, so an unlabelled folder still
shows its structure (a gradient) rather than one flat colour. The class legend sits in its own
column right of the axes: placed "best" inside them it covered tick labels and points.
"""
from __future__ import annotations

import os

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from lensforge.report.plots import _save_figure

__all__ = ["latent_figure", "plot_latent_scatter"]

_LEGEND_COLUMN = 0.2     # share of the figure's width kept free for the legend


def _first_pc(z: np.ndarray) -> np.ndarray:
    centred = z - z.mean(0, keepdims=True)
    _, _, vt = np.linalg.svd(centred, full_matrices=False)
    return centred @ vt[0]


def latent_figure(z, labels=None, class_names=None, title: str = "") -> Figure:
    """The scatter of latent codes z (N, 2) or (N, 3) as a matplotlib Figure (with its canvas)."""
    z = np.asarray(z, dtype=np.float32)
    if z.ndim != 2 or z.shape[1] not in (2, 3):
        raise ValueError(f"latent scatter needs codes of shape (N, 2) or (N, 3), got {z.shape}")
    three = z.shape[1] == 3
    coords = [z[:, i] for i in range(z.shape[1])]
    fig = Figure(figsize=(7.6, 5.6), dpi=100)
    FigureCanvasAgg(fig)
    if labels is not None:
        fig.subplots_adjust(left=0.1, right=1 - _LEGEND_COLUMN, top=0.92)
    ax = fig.add_subplot(111, projection="3d" if three else None)
    if labels is not None:
        labels = np.asarray(labels)
        classes = np.unique(labels)
        cmap = "tab10" if len(classes) <= 10 else "tab20"
        sc = ax.scatter(*coords, c=labels, cmap=cmap, s=4, alpha=0.7, linewidths=0)
        names = [str(class_names[c]) if class_names is not None else str(c) for c in classes]
        if len(classes) <= 20:
            handles = [ax.scatter([], [], color=sc.cmap(sc.norm(c)), s=16) for c in classes]
            fig.legend(handles, names, fontsize=7, markerscale=1.5, loc="center left",
                       bbox_to_anchor=(1 - _LEGEND_COLUMN + 0.02, 0.5), frameon=False)
        colour_note = "colour = class"
    else:
        sc = ax.scatter(*coords, c=_first_pc(z), cmap="viridis", s=4, alpha=0.7, linewidths=0)
        fig.colorbar(sc, ax=ax, shrink=0.8, label="first principal component")
        colour_note = "colour = first principal component (no labels)"
    ax.set_xlabel("z1")
    ax.set_ylabel("z2")
    if three:
        ax.set_zlabel("z3")
    ax.set_title(f"{title} ({colour_note})" if title else colour_note, fontsize=9)
    return fig


def plot_latent_scatter(z, path: str | os.PathLike, labels=None, class_names=None, title: str = "") -> None:
    """Scatter of latent codes z (N, 2) or (N, 3), written to `path` as a PNG."""
    _save_figure(latent_figure(z, labels, class_names, title), path)
