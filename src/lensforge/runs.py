"""Run folders: where a training run writes everything a user looks at afterwards."""
from __future__ import annotations

import re
from pathlib import Path

import yaml

from .fileio import write_text


def new_run_dir(task: str, name: str, out: str | Path | None = None, root: str | Path = "runs") -> Path:
    """`out` if given (must not already hold a run), else runs/<task>/<name>, <name>-2, ..."""
    if out is not None:
        path = Path(out)
        if (path / "weights" / "last.pt").exists():
            from .errors import UsageError
            raise UsageError(f"--out {path}: already holds a run (use --resume {path} to continue it, or another --out)")
        path.mkdir(parents=True, exist_ok=True)
        return path
    base = Path(root) / task
    base.mkdir(parents=True, exist_ok=True)
    safe = re.sub(r"[^A-Za-z0-9_.-]+", "-", name).strip("-") or "run"
    path, i = base / safe, 1
    while path.exists():
        i += 1
        path = base / f"{safe}-{i}"
    path.mkdir(parents=True)
    return path


def write_config(run_dir: Path, config: dict) -> None:
    write_text(run_dir / "config.yaml", yaml.safe_dump(_plain(config), sort_keys=False))


def _plain(obj):
    """YAML-safe copy: paths and tuples become strings and lists."""
    if isinstance(obj, dict):
        return {str(k): _plain(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_plain(v) for v in obj]
    if isinstance(obj, Path):
        return str(obj)
    return obj
