"""Handlers of `lensforge data list|download` (options: lensforge.specs.data)."""
from __future__ import annotations


def list_(values: dict) -> int:
    from ..data.catalog import NAMED, expected_files
    from ..data.download import data_root
    from ..options import make
    from ..specs.data import ListOptions

    o = make(ListOptions, values)
    print(f"data directory: {data_root(o.data_dir)}")
    for name in NAMED:
        files = expected_files(name, o.data_dir)
        if not files:
            print(f"{name:15s} present   bundled with scikit-learn")
            continue
        missing = [f for f in files if not f.is_file()]
        state = "present" if not missing else ("missing" if len(missing) == len(files) else "partial")
        where = files[0].parent if not missing else ", ".join(str(f) for f in missing)
        print(f"{name:15s} {state:9s} {where}")
    return 0


def download(values: dict) -> int:
    from ..data import load_dataset
    from ..options import make
    from ..specs.data import DownloadOptions

    o = make(DownloadOptions, values)
    ds = load_dataset(o.name, data_dir=o.data_dir)
    print(f"{o.name}: {len(ds.train)} train, {len(ds.test) if ds.test is not None else 0} test images ready")
    return 0
