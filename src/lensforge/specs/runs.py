"""`lensforge runs list` (torch-free)."""
from __future__ import annotations

from dataclasses import dataclass

from ..options import TaskCLI, Verb, option


@dataclass
class RunsOptions:
    root: str = option("runs", "folder that holds runs/<task>/<name> run folders", metavar="DIR")
    task: str | None = option(None, "only runs of this task")


CLI = TaskCLI("runs", "list training runs (task, data, model, key metric, date)", (
    Verb("list", "one line per run folder under DIR, newest first", (RunsOptions,), "lensforge.cli.runs:list_"),
))
