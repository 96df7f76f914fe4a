"""`lensforge colorize train|apply`."""
from __future__ import annotations

import sys
from pathlib import Path

from . import add_data_options, add_train_options, train_kwargs
from ..recipes import RECIPES
from ..errors import UsageError


def register(sub) -> None:
    p = sub.add_parser("colorize", help="colourise grey photos (U-Net in Lab space)")
    verbs = p.add_subparsers(dest="verb", metavar="VERB", parser_class=type(p))
    verbs.required = True

    t = verbs.add_parser("train", help="train a colouriser on colour images and write a run folder with report")
    add_data_options(t, default="cifar10")
    m = t.add_argument_group("model")
    m.add_argument("--size", type=int, default=None,
                   help="train resolution for folders, a multiple of 2**depth (default: probed; CIFAR-10 is 32)")
    m.add_argument("--base", type=int, default=32, help="U-Net width of the first level (default 32)")
    m.add_argument("--depth", type=int, default=3, help="U-Net down-sampling levels (default 3)")
    m.add_argument("--rebalance", type=float, default=0.5,
                   help="weight rare saturated colours up: 0 off, 1 full inverse frequency (default 0.5)")
    m.add_argument("--val-fraction", type=float, default=0.05,
                   help="train fraction held out to pick the epoch and decode temperature (default 0.05)")
    m.add_argument("--eval-images", type=int, default=0, help="evaluate on the first N test images (default all)")
    add_train_options(t, **RECIPES["colorize"])
    t.set_defaults(func=cmd_train)

    a = verbs.add_parser("apply", help="colourise image files or folders of any size")
    a.add_argument("--weights", required=True, help="weights file (best.pt) or run folder")
    a.add_argument("inputs", nargs="+", metavar="FILE_OR_DIR")
    a.add_argument("--out", required=True, metavar="DIR", help="folder for <name>.png outputs")
    a.add_argument("--size", type=int, default=None,
                   help="shorter side at which chroma is predicted (default: the training size)")
    a.add_argument("--temperature", type=float, default=None,
                   help="decode temperature: lower = more vivid (default: chosen at training)")
    a.add_argument("--device", default="auto")
    a.set_defaults(func=cmd_apply)

    c = verbs.add_parser("calibrate", help="re-pick the decoding on validation and re-evaluate a finished run")
    c.add_argument("--weights", required=True, metavar="RUN_DIR", help="run folder written by colorize train")
    c.add_argument("--device", default="auto")
    c.set_defaults(func=cmd_calibrate)


def _summary(r: dict) -> None:
    if "test_psnr" in r:
        print(f"test_psnr={r['test_psnr']:.3f} grey_psnr={r['test_grey_psnr']:.3f} test_ssim={r['test_ssim']:.4f} "
              f"grey_ssim={r['test_grey_ssim']:.4f} colourfulness={r['test_colourfulness']:.2f} "
              f"original_colourfulness={r['test_original_colourfulness']:.2f} temperature={r['temperature']} "
              f"correction={r['correction']}")


def cmd_calibrate(args) -> int:
    from ..tasks import colorize

    if not (Path(args.weights) / "weights" / "best.pt").is_file():
        raise UsageError(f"--weights {args.weights}: not a colorize run folder (no weights/best.pt)")
    _summary(colorize.calibrate(args.weights, device=args.device))
    return 0


def cmd_train(args) -> int:
    from ..tasks import colorize

    if args.resume:
        run = colorize.train(resume=args.resume, progress=args.progress)
    else:
        opts = dict(data_dir=args.data_dir, size=args.size, base=args.base, depth=args.depth, rebalance=args.rebalance,
                    val_fraction=args.val_fraction, eval_images=args.eval_images, download=args.download)
        run = colorize.train(args.data, out=args.out, **opts, **train_kwargs(args))
    _summary(run.results)
    print(f"train_seconds={run.results['train_seconds']:.1f}")
    print(f"run folder: {run.dir}  (report: {run.dir / 'report.html'})")
    return 0


def check_paths(args) -> None:
    """Missing paths are usage errors (exit 2), reported before any model is loaded."""
    for p in [args.weights, *args.inputs]:
        if not Path(p).exists():
            raise UsageError(f"{p}: no such file or folder")


def cmd_apply(args) -> int:
    from ..tasks import colorize

    check_paths(args)
    if args.size is not None and args.size < 8:
        raise UsageError("--size must be >= 8")
    if args.temperature is not None and not 0 < args.temperature <= 10:
        raise UsageError("--temperature must be in (0, 10]")
    col = colorize.load(args.weights, device=args.device)
    files = colorize.expand_inputs(args.inputs)
    if not files:
        raise UsageError(f"no image files found in {' '.join(args.inputs)}")
    failed = 0
    for r in col.colorize_files(files, args.out, size=args.size, temperature=args.temperature):
        if r.error:
            failed += 1
            print(f"error: {r.error}", file=sys.stderr)
        else:
            print(f"{r.file}\t{r.out}\t{r.seconds:.3f}s")
    if failed:
        print(f"{failed} of {len(files)} file(s) could not be read", file=sys.stderr)
    return 1 if failed else 0
