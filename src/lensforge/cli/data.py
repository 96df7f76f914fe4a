"""`lensforge data list|download`."""
from __future__ import annotations


def register(sub) -> None:
    p = sub.add_parser("data", help="list or download the named datasets")
    verbs = p.add_subparsers(dest="verb", metavar="VERB", parser_class=type(p))
    verbs.required = True
    ls = verbs.add_parser("list", help="named datasets and where they are expected")
    ls.add_argument("--data-dir", default=None)
    ls.set_defaults(func=cmd_list)
    dl = verbs.add_parser("download", help="download (and checksum) a named dataset")
    dl.add_argument("name")
    dl.add_argument("--data-dir", default=None)
    dl.set_defaults(func=cmd_download)


def cmd_list(args) -> int:
    from ..data import NAMED
    from ..data.download import data_root

    root = data_root(args.data_dir)
    for name in NAMED:
        where = "bundled with scikit-learn" if name == "digits" else str(root / name)
        print(f"{name:15s} {where}")
    return 0


def cmd_download(args) -> int:
    from ..data import load_dataset

    ds = load_dataset(args.name, data_dir=args.data_dir)
    print(f"{args.name}: {len(ds.train)} train, {len(ds.test) if ds.test is not None else 0} test images ready")
    return 0
