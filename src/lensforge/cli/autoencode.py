"""`lensforge autoencode train|denoise|score`."""
from __future__ import annotations

import sys

from . import add_data_options, add_train_options, train_kwargs
from ..recipes import RECIPES


def add_model_options(t, models=("dense", "conv"), default="conv", latent=16) -> None:
    m = t.add_argument_group("model")
    m.add_argument("--model", default=default, choices=list(models), help=f"network type (default {default})")
    m.add_argument("--latent-dim", type=int, default=latent, metavar="K", help=f"size of the latent code (default {latent})")
    m.add_argument("--width", type=int, default=32, help="base channel count; dense layers use 16x/8x it (default 32)")
    m.add_argument("--image-size", type=int, default=None, help="resize folder images to SIZE x SIZE (default: probed)")
    m.add_argument("--val-fraction", type=float, default=0.0,
                   help="carve this fraction of train off as validation for best-epoch selection (default 0)")


def register(sub) -> None:
    p = sub.add_parser("autoencode", help="autoencoders: reconstruction, denoising, anomaly scores")
    verbs = p.add_subparsers(dest="verb", metavar="VERB", parser_class=type(p))
    verbs.required = True

    t = verbs.add_parser("train", help="train a (denoising) autoencoder and write a run folder with report")
    add_data_options(t)
    add_model_options(t)
    t.add_argument("--denoise", type=float, default=0.0, metavar="NOISE",
                   help="train to remove Gaussian noise of this std on [0,1] pixels, e.g. 0.3 (default off)")
    add_train_options(t, **RECIPES["autoencode"])
    t.set_defaults(func=cmd_train)

    d = verbs.add_parser("denoise", help="apply a trained (denoising) autoencoder to images")
    d.add_argument("--weights", required=True, help="weights file (best.pt) or run folder")
    d.add_argument("inputs", nargs="+", metavar="FILE_OR_DIR")
    d.add_argument("--out", required=True, metavar="DIR", help="folder for the cleaned PNGs (<name>.png)")
    d.add_argument("--add-noise", type=float, default=0.0, metavar="SIGMA",
                   help="first corrupt the inputs with this noise (also writes <name>_noisy.png), for demos")
    d.add_argument("--device", default="auto")
    d.set_defaults(func=cmd_denoise)

    s = verbs.add_parser("score", help="rank images by reconstruction error (anomaly detection) into a CSV")
    s.add_argument("--weights", required=True, help="weights file (best.pt) or run folder")
    s.add_argument("inputs", nargs="*", metavar="FILE_OR_DIR")
    s.add_argument("--data", default=None, help="also score a dataset split (name or folder)")
    s.add_argument("--data-dir", default=None)
    s.add_argument("--split", default="test", choices=["test", "train", "val"])
    s.add_argument("--no-download", dest="download", action="store_false")
    s.add_argument("--out", required=True, metavar="CSV", help="write rank,name,label,mse here")
    s.add_argument("--top", type=int, default=10, help="print the N most anomalous (default 10)")
    s.add_argument("--device", default="auto")
    s.set_defaults(func=cmd_score)


def cmd_train(args) -> int:
    from ..tasks import autoencode

    if args.resume:
        run = autoencode.train(resume=args.resume, progress=args.progress)
    else:
        run = autoencode.train(args.data, model=args.model, out=args.out, data_dir=args.data_dir,
                               download=args.download, latent_dim=args.latent_dim, width=args.width,
                               image_size=args.image_size, val_fraction=args.val_fraction, denoise=args.denoise,
                               **train_kwargs(args))
    r = run.results
    split = r["eval_split"]
    line = f"{split}_mse={r[f'{split}_mse']:.5f} {split}_psnr={r[f'{split}_psnr']:.2f}dB"
    pca = [k for k in r if k.startswith("pca")]
    if pca:
        line += f" {pca[0]}={r[pca[0]]:.5f}"
    if f"{split}_psnr_gain_db" in r:
        line += f" noisy_psnr={r[f'{split}_noisy_psnr']:.2f}dB gain={r[f'{split}_psnr_gain_db']:.2f}dB"
    print(line + f" train_seconds={r['train_seconds']:.1f}")
    print(f"run folder: {run.dir}  (report: {run.dir / 'report.html'})")
    return 0


def cmd_denoise(args) -> int:
    from ..errors import UsageError
    from ..tasks import autoencode

    if not 0 <= args.add_noise <= 2:
        raise UsageError("--add-noise must be in [0, 2]")
    pairs = autoencode.denoise_files(args.weights, args.inputs, args.out, device=args.device,
                                     add_noise_sigma=args.add_noise)
    for src, dst in pairs:
        print(f"{src}\t{dst}")
    print(f"{len(pairs)} image(s) written to {args.out}", file=sys.stderr)
    return 0


def cmd_score(args) -> int:
    from ..errors import UsageError
    from ..tasks import autoencode
    from ..tasks.generative_common import write_csv

    if args.top < 0:
        raise UsageError("--top must be >= 0")
    rows = autoencode.score(args.weights, args.inputs, data=args.data, data_dir=args.data_dir, split=args.split,
                            device=args.device, download=args.download)
    write_csv(args.out, ["rank", "name", "label", "mse"],
              [[r["rank"], r["name"], r.get("label", ""), f"{r['mse']:.6g}"] for r in rows])
    for r in rows[:args.top]:
        print(f"{r['rank']}\t{r['mse']:.5f}\t{r['name']}" + (f"\t{r['label']}" if r.get("label") else ""))
    print(f"{len(rows)} image(s) scored; ranking in {args.out}", file=sys.stderr)
    return 0
