"""`lensforge gan train|sample`."""
from __future__ import annotations

from . import add_data_options, add_train_options
from . import train_kwargs
from ..recipes import RECIPES


def register(sub) -> None:
    p = sub.add_parser("gan", help="generative adversarial networks (DCGAN), with a Frechet-distance score")
    verbs = p.add_subparsers(dest="verb", metavar="VERB", parser_class=type(p))
    verbs.required = True

    t = verbs.add_parser("train", help="train a DCGAN and write a run folder with per-epoch samples and report")
    add_data_options(t)
    m = t.add_argument_group("model")
    m.add_argument("--model", default="dcgan", choices=["dcgan"])
    m.add_argument("--conditional", action="store_true", help="condition G and D on the class (needs labels)")
    m.add_argument("--latent-dim", type=int, default=64, metavar="K", help="noise dimension (default 64)")
    m.add_argument("--width", type=int, default=32, help="base channel count of G and D (default 32)")
    m.add_argument("--d-lr", type=float, default=None, help="discriminator learning rate (default: --lr)")
    m.add_argument("--augment", choices=["auto", "on", "off"], default="auto",
                   help="DiffAugment (translate + cutout on all D inputs); auto = on for training sets under "
                        "10,000 images, where D otherwise memorises the data (default auto)")
    m.add_argument("--image-size", type=int, default=None, help="resize folder images to SIZE x SIZE (default: probed)")
    q = t.add_argument_group("quality measurement")
    q.add_argument("--fd-classifier", default="auto", metavar="RUN_OR_WEIGHTS",
                   help="lensforge classifier whose features define the Frechet distance: a classify run folder or "
                        "weights, 'auto' (train a small CNN on the same data first) or 'none' (default auto)")
    q.add_argument("--fd-samples", type=int, default=2000, help="samples per Frechet distance (default 2000)")
    add_train_options(t, **RECIPES["gan"])
    t.set_defaults(func=cmd_train)

    s = verbs.add_parser("sample", help="generate N images into a PNG grid (and optionally one file each)")
    s.add_argument("--weights", required=True, help="weights file (best.pt) or run folder")
    s.add_argument("--n", type=int, default=64, help="number of samples (default 64)")
    s.add_argument("--label", default=None, help="class name to generate (conditional models; default: cycle classes)")
    s.add_argument("--seed", type=int, default=0)
    s.add_argument("--out", default="gan_samples.png", help="PNG grid to write (default gan_samples.png)")
    s.add_argument("--each", default=None, metavar="DIR", help="also write every sample as DIR/sample_NNNN.png")
    s.add_argument("--device", default="auto")
    s.set_defaults(func=cmd_sample)


def cmd_train(args) -> int:
    from ..tasks import gan

    if args.resume:
        run = gan.train(resume=args.resume, progress=args.progress)
    else:
        kw = train_kwargs(args)
        run = gan.train(args.data, model=args.model, out=args.out, data_dir=args.data_dir, download=args.download,
                        conditional=args.conditional, latent_dim=args.latent_dim, width=args.width, d_lr=args.d_lr,
                        augment=args.augment, image_size=args.image_size, fd_classifier=args.fd_classifier,
                        fd_samples=args.fd_samples,
                        **kw)
    r = run.results
    if isinstance(r.get("fd_vs_train"), float):
        line = (f"fd_vs_train={r['fd_vs_train']:.3f} fd_vs_test={r.get('fd_vs_test', float('nan')):.3f} "
                f"(real test vs train {r.get('fd_real_test_vs_train', float('nan')):.3f}) "
                f"recognisable={r['recognisable_fraction']:.3f}")
    else:
        line = "fd not measured"
    print(line + f" train_seconds={r['train_seconds']:.1f}")
    print(f"run folder: {run.dir}  (report: {run.dir / 'report.html'})")
    return 0


def cmd_sample(args) -> int:
    import math
    from pathlib import Path

    from ..errors import UsageError
    from ..tasks import gan
    from ..tasks.generative_common import save_png
    from .vae import save_grid

    if not 1 <= args.n <= 4096:
        raise UsageError("--n must be between 1 and 4096")
    g = gan.load(args.weights, device=args.device)
    labels = None
    if args.label is not None:
        if not g.conditional:
            raise UsageError(f"--label {args.label}: {args.weights} is not a conditional GAN")
        labels = [g.class_index(args.label)]
    images = g.sample(args.n, labels=labels, seed=args.seed)
    save_grid(images, args.out, ncols=math.ceil(math.sqrt(args.n)))
    if args.each:
        for i, img in enumerate(images):
            save_png(img, Path(args.each) / f"sample_{i:04d}.png")
    print(f"{args.n} samples written to {args.out}" + (f" and {args.each}/" if args.each else ""))
    return 0
