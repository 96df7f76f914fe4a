"""`lensforge data list|download` (torch-free)."""
from __future__ import annotations

from dataclasses import dataclass

from ..options import REQUIRED, TaskCLI, Verb, option
from .common import data_dir_option


@dataclass
class ListOptions:
    data_dir: str | None = data_dir_option()


@dataclass(kw_only=True)
class DownloadOptions:
    name: str = option(REQUIRED, "dataset name", positional=True, choices=("digits", "mnist", "fashion-mnist", "cifar10"))
    data_dir: str | None = data_dir_option()


CLI = TaskCLI("data", "list or download the named datasets", (
    Verb("list", "named datasets: whether their files are present, and where", (ListOptions,), "lensforge.cli.data:list_"),
    Verb("download", "download (and checksum) a named dataset", (DownloadOptions,), "lensforge.cli.data:download"),
))
