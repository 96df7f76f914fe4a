"""Run-report layer shared by every lensforge task: figures (`plots`) and the HTML page (`html`).

Plot helpers are loaded lazily so code that only writes HTML (or just imports lensforge) does not
pay matplotlib's import time.
"""
from __future__ import annotations

from lensforge.report.html import write_report

_PLOTS = ("plot_curves", "plot_confusion_matrix", "image_grid", "save_image_grid_png", "per_class_table")

__all__ = ["write_report", *_PLOTS]


def __getattr__(name: str):
    if name in _PLOTS:
        from lensforge.report import plots

        return getattr(plots, name)
    raise AttributeError(f"module 'lensforge.report' has no attribute {name!r}")
