"""Handlers of `lensforge colorize train|apply|calibrate` (options: lensforge.specs.colorize)."""
from __future__ import annotations

from .common import print_outputs, print_run


def _headline(r: dict) -> str:
    if "test_psnr" not in r:
        return f"temperature={r.get('temperature')} correction={r.get('correction')}"
    return (f"test_psnr={r['test_psnr']:.3f} grey_psnr={r['test_grey_psnr']:.3f} test_ssim={r['test_ssim']:.4f} "
            f"grey_ssim={r['test_grey_ssim']:.4f} colourfulness={r['test_colourfulness']:.2f} "
            f"original_colourfulness={r['test_original_colourfulness']:.2f} temperature={r['temperature']} "
            f"correction={r['correction']}" + (f" ({r['test_measured_on']})" if "test_measured_on" in r else ""))


def train(values: dict) -> int:
    from ..tasks import colorize

    run = colorize.train(**values)
    print_run(run, _headline(run.results))
    return 0


def calibrate(values: dict) -> int:
    from ..options import make
    from ..specs.colorize import CalibrateOptions
    from ..tasks import colorize

    o = make(CalibrateOptions, values)
    print(_headline(colorize.calibrate(o.weights)))
    return 0


def apply(values: dict) -> int:
    from ..tasks import colorize

    return print_outputs(colorize.apply(**values))
