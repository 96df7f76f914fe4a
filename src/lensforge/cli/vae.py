"""`lensforge vae train|sample|interpolate|manifold`."""
from __future__ import annotations

from . import add_data_options, add_train_options, train_kwargs
from ..recipes import RECIPES
from .autoencode import add_model_options


def register(sub) -> None:
    p = sub.add_parser("vae", help="variational autoencoders: ELBO, sampling, interpolation")
    verbs = p.add_subparsers(dest="verb", metavar="VERB", parser_class=type(p))
    verbs.required = True

    t = verbs.add_parser("train", help="train a VAE and write a run folder with report")
    add_data_options(t)
    add_model_options(t)
    t.add_argument("--beta", type=float, default=1.0, help="weight of the KL term in the training loss (default 1)")
    t.add_argument("--likelihood", choices=["bernoulli", "gaussian"], default="bernoulli",
                   help="p(x|z): bernoulli for binary-ish images such as digits (default), gaussian for photos")
    add_train_options(t, **RECIPES["vae"])
    t.set_defaults(func=cmd_train)

    s = verbs.add_parser("sample", help="decode N draws from the prior into a PNG grid")
    s.add_argument("--weights", required=True, help="weights file (best.pt) or run folder")
    s.add_argument("--n", type=int, default=64, help="number of samples (default 64)")
    s.add_argument("--seed", type=int, default=0)
    s.add_argument("--out", default="vae_samples.png", help="PNG grid to write (default vae_samples.png)")
    s.add_argument("--device", default="auto")
    s.set_defaults(func=cmd_sample)

    i = verbs.add_parser("interpolate", help="decode the latent path between two images into a PNG strip")
    i.add_argument("--weights", required=True, help="weights file (best.pt) or run folder")
    i.add_argument("a", metavar="IMAGE_A")
    i.add_argument("b", metavar="IMAGE_B")
    i.add_argument("--steps", type=int, default=10, help="images along the path, ends included (default 10)")
    i.add_argument("--out", default="vae_interpolation.png")
    i.add_argument("--device", default="auto")
    i.set_defaults(func=cmd_interpolate)

    m = verbs.add_parser("manifold", help="decode an N x N grid over a 2-D latent (models with --latent-dim 2)")
    m.add_argument("--weights", required=True)
    m.add_argument("--n", type=int, default=15, help="grid side (default 15)")
    m.add_argument("--out", default="vae_manifold.png")
    m.add_argument("--device", default="auto")
    m.set_defaults(func=cmd_manifold)


def save_grid(images, path, ncols: int) -> None:
    """Exact pixels (no resampling), doubled for images under 64 px so they can be seen."""
    from ..report import save_image_grid_png

    save_image_grid_png(images, path, ncols=ncols, scale=2 if max(images.shape[-2:]) < 64 else 1)


def cmd_train(args) -> int:
    from ..tasks import vae

    if args.resume:
        run = vae.train(resume=args.resume, progress=args.progress)
    else:
        run = vae.train(args.data, model=args.model, out=args.out, data_dir=args.data_dir, download=args.download,
                        latent_dim=args.latent_dim, width=args.width, image_size=args.image_size,
                        val_fraction=args.val_fraction, beta=args.beta, likelihood=args.likelihood,
                        **train_kwargs(args))
    r = run.results
    s = r["eval_split"]
    print(f"{s}_neg_elbo={r[f'{s}_neg_elbo']:.2f} nats/image (recon {r[f'{s}_recon']:.2f} + KL {r[f'{s}_kl']:.2f}) "
          f"train_seconds={r['train_seconds']:.1f}")
    print(f"run folder: {run.dir}  (report: {run.dir / 'report.html'})")
    return 0


def cmd_sample(args) -> int:
    import math

    from ..errors import UsageError
    from ..tasks import vae

    if not 1 <= args.n <= 4096:
        raise UsageError("--n must be between 1 and 4096")
    gen = vae.load(args.weights, device=args.device)
    save_grid(gen.sample(args.n, seed=args.seed), args.out, ncols=math.ceil(math.sqrt(args.n)))
    print(f"{args.n} samples written to {args.out}")
    return 0


def cmd_interpolate(args) -> int:
    from ..errors import UsageError
    from ..tasks import vae
    from ..tasks.generative_common import expand_images

    if not 2 <= args.steps <= 256:
        raise UsageError("--steps must be between 2 and 256")
    gen = vae.load(args.weights, device=args.device)
    files = expand_images([args.a, args.b])
    if len(files) != 2:
        raise UsageError(f"interpolate takes two image files, got {len(files)} images from {args.a} {args.b}")
    x, _, _ = gen.read(files)
    save_grid(gen.interpolate(x[0], x[1], args.steps), args.out, ncols=args.steps)
    print(f"{args.steps}-step interpolation written to {args.out}")
    return 0


def cmd_manifold(args) -> int:
    from ..errors import UsageError
    from ..tasks import vae

    if not 2 <= args.n <= 64:
        raise UsageError("--n must be between 2 and 64")
    gen = vae.load(args.weights, device=args.device)
    save_grid(gen.manifold(args.n), args.out, ncols=args.n)
    print(f"{args.n}x{args.n} manifold written to {args.out}")
    return 0
