"""Option groups several tasks share (torch-free)."""
from __future__ import annotations

from ..options import REQUIRED, option

DATA = "data"
NAMED = "digits, mnist, fashion-mnist, cifar10"


def data_option(default: str | None = "digits", what: str = "root/<class>/images") -> str:
    return option(default, f"dataset name ({NAMED}) or a folder/.zip of {what}", group=DATA)


def data_dir_option() -> str | None:
    return option(None, "where named datasets live as DIR/<name>/<official files>", group=DATA,
                  default_help="$LENSFORGE_DATA_DIR or ~/.cache/lensforge/datasets")


def download_option() -> bool:
    return option(True, "never download; fail with the path where the files are expected",
                  negative="--no-download", group=DATA)


def image_size_option(help_: str = "resize folder images to SIZE x SIZE", default_help: str = "probed") -> int | None:
    # 4..1024: below 4 px no network here has a valid shape; above 1024 px the in-memory uint8 copy of a
    # folder and the activations of these full-image networks outgrow a laptop's memory.
    return option(None, help_, low=4, high=1024, metavar="SIZE", group=DATA, default_help=default_help)


def val_fraction_option(default: float = 0.0) -> float:
    return option(default, "carve this fraction of train off as validation for best-epoch selection", low=0.0,
                  high=0.9, group=DATA)


def weights_option() -> str:
    return option(REQUIRED, "weights file (best.pt/last.pt) or run folder")


def inputs_option(what: str = "image files, folders or .zip archives") -> list[str]:
    return option(REQUIRED, what, positional=True, nargs="+", metavar="FILE_OR_DIR")


def device_option() -> str:
    return option("auto", "auto (CUDA if present), cpu, cuda, cuda:N")


def json_option() -> bool:
    """An eval verb's --json: the whole result as JSON instead of the summary line."""
    return option(False, "print the full result as JSON")
