"""`lensforge stylize run|train|apply`.

`run CONTENT STYLE` is Gatys' optimisation (slow, any style, no training); `train` fits a fast
feed-forward network to one style and `apply` runs it on any number of photos. `run` is the
default verb, so `lensforge stylize CONTENT STYLE --out OUT` works too (see DEFAULT_VERBS).
"""
from __future__ import annotations

import sys

from . import add_train_options, train_kwargs
from ..recipes import RECIPES
from .colorize import check_paths
from ..errors import UsageError


def _feature_options(p) -> None:
    g = p.add_argument_group("feature network")
    g.add_argument("--features", default=None, metavar="WEIGHTS",
                   help="ImageNet weights: a .pth file (SqueezeNet 1.1, VGG16 or VGG19 state_dict) or vgg16/vgg19/"
                        "squeezenet1_1 to download torchvision's file with checksum (default "
                        "$LENSFORGE_FEATURE_WEIGHTS, else shared/weights/squeezenet1_1-features-caffe.pth)")
    g.add_argument("--convention", choices=["caffe", "torchvision"], default=None,
                   help="input convention of the weights (default: caffe for SqueezeNet, torchvision for VGG)")
    g.add_argument("--no-download", dest="download", action="store_false", help="never download weights")


def register(sub) -> None:
    p = sub.add_parser("stylize", help="neural style transfer (Gatys optimisation, fast feed-forward network)")
    verbs = p.add_subparsers(dest="verb", metavar="VERB", parser_class=type(p))
    verbs.required = True

    r = verbs.add_parser("run", help="Gatys et al.: optimise one image to CONTENT's layout in STYLE's textures (the default verb: "
                                 "`lensforge stylize CONTENT STYLE --out OUT` is the same)")
    r.add_argument("content", metavar="CONTENT")
    r.add_argument("style", metavar="STYLE")
    r.add_argument("--out", required=True, help="output image (.png/.jpg)")
    r.add_argument("--size", type=int, default=256, help="longer side of the output in px (default 256)")
    r.add_argument("--steps", type=int, default=200, help="optimiser iterations (default 200)")
    r.add_argument("--style-weight", type=float, default=1e4, help="style vs content balance (default 1e4)")
    r.add_argument("--content-weight", type=float, default=1.0, help="(default 1)")
    r.add_argument("--tv-weight", type=float, default=1e-3, help="total-variation smoothing (default 1e-3)")
    r.add_argument("--optimizer", choices=["lbfgs", "adam"], default="lbfgs", help="(default lbfgs)")
    r.add_argument("--init", choices=["colour", "content", "noise"], default="colour",
                   help="start image: colour = the photo recoloured to the style's palette (default), content = "
                        "the photo as is, noise = random")
    r.add_argument("--report", default=None, metavar="JSON", help="also write time and losses to this JSON file")
    r.add_argument("--device", default="auto")
    r.add_argument("--seed", type=int, default=0)
    _feature_options(r)
    r.set_defaults(func=cmd_run)

    t = verbs.add_parser("train", help="train a fast style network for one STYLE image on a folder of photos")
    t.add_argument("--style", required=True, help="the style image")
    t.add_argument("--data", required=True, help="folder or .zip of content photos (any layout, labels ignored)")
    t.add_argument("--size", type=int, default=128, help="training crop size in px (default 128)")
    t.add_argument("--base", type=int, default=16, help="network width (default 16; Johnson et al. used 32)")
    t.add_argument("--blocks", type=int, default=3, help="residual blocks (default 3; Johnson et al. used 5)")
    t.add_argument("--style-weight", type=float, default=3.0,
                   help="style vs content balance (default 3; far below Gatys' 1e4, as the network does not start "
                        "from the photo: at 10 and above it paints the style and drops the content)")
    t.add_argument("--tv-weight", type=float, default=1e-3, help="(default 1e-3)")
    t.add_argument("--style-size", type=int, default=None, help="style image longer side (default 2x --size)")
    _feature_options(t)
    add_train_options(t, **RECIPES["stylize"])
    t.set_defaults(func=cmd_train)

    a = verbs.add_parser("apply", help="stylise image files or folders with a trained fast network")
    a.add_argument("--weights", required=True, help="weights file (best.pt) or run folder")
    a.add_argument("inputs", nargs="+", metavar="FILE_OR_DIR")
    a.add_argument("--out", required=True, metavar="DIR", help="folder for <name>.png outputs")
    a.add_argument("--size", type=int, default=None, help="resize so the longer side is this (default: as is)")
    a.add_argument("--device", default="auto")
    a.set_defaults(func=cmd_apply)


def cmd_run(args) -> int:
    from ..tasks import stylize

    res = stylize.gatys(args.content, args.style, args.out, size=args.size, steps=args.steps,
                        style_weight=args.style_weight, content_weight=args.content_weight, tv_weight=args.tv_weight,
                        optimizer=args.optimizer, init=args.init, features=args.features, convention=args.convention,
                        download=args.download, device=args.device, seed=args.seed, report=args.report)
    print(f"{res['out']}\tseconds={res['seconds']:.1f} style_loss={res['style_loss_start']:.4g}->"
          f"{res['style_loss_end']:.4g} content_loss={res['content_loss_start']:.4g}->{res['content_loss_end']:.4g}")
    return 0


def cmd_train(args) -> int:
    from ..tasks import stylize

    if args.resume:
        run = stylize.train(resume=args.resume, progress=args.progress)
    else:
        run = stylize.train(args.data, style=args.style, out=args.out, size=args.size, base=args.base,
                            blocks=args.blocks, style_weight=args.style_weight, tv_weight=args.tv_weight,
                            style_size=args.style_size, features=args.features, convention=args.convention,
                            download=args.download, **train_kwargs(args))
    r = run.results
    print(f"val_style_loss={r.get('val_style', float('nan')):.4g} val_content_loss={r.get('val_content', float('nan')):.4g} "
          f"train_seconds={r['train_seconds']:.1f}")
    print(f"run folder: {run.dir}  (report: {run.dir / 'report.html'})")
    return 0


def cmd_apply(args) -> int:
    from ..tasks import stylize

    check_paths(args)
    if args.size is not None and args.size < 16:
        raise UsageError("--size must be >= 16")
    net = stylize.load(args.weights, device=args.device)
    files = stylize.expand_inputs(args.inputs)
    if not files:
        raise UsageError(f"no image files found in {' '.join(args.inputs)}")
    failed = 0
    for r in net.stylize_files(files, args.out, size=args.size):
        if r.error:
            failed += 1
            print(f"error: {r.error}", file=sys.stderr)
        else:
            print(f"{r.file}\t{r.out}\t{r.seconds:.3f}s")
    if failed:
        print(f"{failed} of {len(files)} file(s) could not be read", file=sys.stderr)
    return 1 if failed else 0
