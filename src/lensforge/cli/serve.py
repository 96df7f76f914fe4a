"""Handler of `lensforge serve [run] RUN_DIR_OR_WEIGHTS...` (options: lensforge.specs.serve)."""
from __future__ import annotations


def run(values: dict) -> int:
    from ..options import make
    from ..specs.serve import ServeOptions

    o = make(ServeOptions, values)
    from ..serve.server import serve

    serve(o)
    return 0
