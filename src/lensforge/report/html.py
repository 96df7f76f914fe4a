"""Single-file HTML run reports.

A report must survive being mailed, attached to a ticket or opened years later offline, so
everything it shows is inlined: images as base64 data URIs, styles in one small <style> block,
no scripts, fonts or remote assets. All caller-supplied text is escaped because metric names,
class names and config values come from user data.
"""
from __future__ import annotations

import base64
import html
import json
import math
import mimetypes
import os
from pathlib import Path

from lensforge.fileio import write_bytes

__all__ = ["write_report"]

_CSS = """
body{font-family:system-ui,-apple-system,"Segoe UI",Helvetica,Arial,sans-serif;margin:2rem auto;
max-width:1200px;padding:0 1rem;color:#222;line-height:1.45}
h1{font-size:1.6rem;border-bottom:2px solid #ddd;padding-bottom:.3rem}
h2{font-size:1.2rem;margin-top:2rem;color:#333}
table{border-collapse:collapse;margin:.5rem 0;font-size:.9rem}
th,td{border:1px solid #ddd;padding:.25rem .6rem;text-align:left}
th{background:#f3f3f3}
tr:nth-child(even) td{background:#fafafa}
td.num{text-align:right;font-variant-numeric:tabular-nums}
figure{margin:1rem 0}
figure img{max-width:100%;height:auto;border:1px solid #eee}
figcaption{font-size:.9rem;color:#555;margin-top:.3rem}
pre{background:#f6f6f6;padding:.8rem;overflow-x:auto;font-size:.85rem}
.missing{color:#a33;font-style:italic}
"""


def _fmt(value) -> str:
    """Human-friendly cell text: short floats, JSON for nested values."""
    if isinstance(value, bool) or value is None:
        return str(value)
    if hasattr(value, "item") and getattr(value, "ndim", 1) == 0:  # numpy / torch scalars
        value = value.item()
    if isinstance(value, float):
        if not math.isfinite(value) or value == 0:
            return str(value)
        if 1e-3 <= abs(value) < 1e6:
            return f"{value:.4f}".rstrip("0").rstrip(".")
        return f"{value:.4g}"
    if isinstance(value, (dict, list, tuple)):
        return json.dumps(_plain(value), default=str)
    return str(value)


def _is_num(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _cell(tag: str, value) -> str:
    cls = ' class="num"' if tag == "td" and _is_num(value) else ""
    return f"<{tag}{cls}>{html.escape(_fmt(value))}</{tag}>"


def _plain(obj):
    """Reduce a config to YAML/JSON-safe builtins (Paths, tuples, numpy scalars appear in configs)."""
    if isinstance(obj, dict):
        return {str(k): _plain(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple, set)):
        return [_plain(v) for v in obj]
    if hasattr(obj, "item") and getattr(obj, "ndim", 1) == 0:
        obj = obj.item()
    if obj is None or isinstance(obj, (bool, int, float, str)):
        return obj
    return str(obj)


def _config_text(config: dict) -> str:
    plain = _plain(config)
    try:
        import yaml

        return yaml.safe_dump(plain, sort_keys=False, default_flow_style=False, allow_unicode=True)
    except Exception:  # pyyaml missing or odd values: JSON is still readable
        return json.dumps(plain, indent=2, default=str)


def _table(rows: list[dict]) -> str:
    if not rows:
        return '<p class="missing">(empty table)</p>'
    columns: list = []
    for row in rows:
        columns.extend(k for k in row if k not in columns)
    head = "".join(_cell("th", c) for c in columns)
    body = "\n".join(
        "<tr>" + "".join(_cell("td", row.get(c, "")) for c in columns) + "</tr>" for row in rows
    )
    return f"<table>\n<thead><tr>{head}</tr></thead>\n<tbody>\n{body}\n</tbody>\n</table>"


def _figure(caption: str, path: str | os.PathLike) -> str:
    p = Path(path)
    cap = html.escape(str(caption))
    try:
        data = p.read_bytes()
    except OSError:
        return f'<p class="missing">Image "{cap}" not available ({html.escape(str(p))}).</p>'
    mime = mimetypes.guess_type(p.name)[0] or "image/png"
    if not mime.startswith("image/"):
        mime = "image/png"
    b64 = base64.b64encode(data).decode("ascii")
    return (f'<figure><img src="data:{mime};base64,{b64}" alt="{cap}">'
            f"<figcaption>{cap}</figcaption></figure>")


def write_report(path: str | os.PathLike, *, title: str, summary: dict,
                 images: list[tuple[str, str]], tables: list[tuple[str, list[dict]]] = (),
                 config: dict | None = None) -> None:
    """Write a self-contained report.html; missing images become a note, not a crash."""
    t = html.escape(str(title))
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        f"<title>{t}</title><style>{_CSS}</style></head><body>",
        f"<h1>{t}</h1>",
    ]
    if summary:
        parts.append("<h2>Summary</h2>")
        parts.append(_table([{"name": k, "value": v} for k, v in summary.items()]))
    if images:
        parts.append("<h2>Figures</h2>")
        parts.extend(_figure(caption, p) for caption, p in images)
    for name, rows in tables:
        parts.append(f"<h2>{html.escape(str(name))}</h2>")
        parts.append(_table(list(rows)))
    if config:
        parts.append("<h2>Configuration</h2>")
        parts.append(f"<pre>{html.escape(_config_text(config))}</pre>")
    parts.append("</body></html>\n")
    write_bytes(path, "\n".join(parts).encode("utf-8"))
