"""`lensforge` CLI with model defaults overridden from LF_SWEEP_MODEL (JSON), for recipe sweeps only."""
import json
import os
import sys

from lensforge.models import classifiers

over = json.loads(os.environ.get("LF_SWEEP_MODEL", "{}"))
for cls_name, kw in over.items():
    cls = getattr(classifiers, cls_name)
    orig = cls.__init__

    def patched(self, *a, __orig=orig, __kw=kw, **k):
        __orig(self, *a, **{**__kw, **k})
    cls.__init__ = patched

from lensforge.cli import main  # noqa: E402

sys.exit(main())
