"""`lensforge classify train|eval|predict`."""
from __future__ import annotations

import json
import sys

from . import add_data_options, add_train_options, train_kwargs
from ..errors import UsageError
from ..recipes import RECIPES


def register(sub) -> None:
    p = sub.add_parser("classify", help="image classification (MLP, CNN, ResNet)")
    verbs = p.add_subparsers(dest="verb", metavar="VERB", parser_class=type(p))
    verbs.required = True

    t = verbs.add_parser("train", help="train a classifier and write a run folder with report")
    add_data_options(t)
    m = t.add_argument_group("model")
    m.add_argument("--model", default="cnn", help="mlp, cnn (default) or resnet")
    m.add_argument("--image-size", type=int, default=None, help="resize folder images to this size (default: probed)")
    m.add_argument("--val-fraction", type=float, default=0.0,
                   help="carve this fraction of train off as validation for best-epoch selection (default 0)")
    m.add_argument("--label-smoothing", type=float, default=0.1, help="(default 0.1)")
    m.add_argument("--translate", type=int, default=None, help="max random shift in px (default per dataset)")
    m.add_argument("--flip", dest="flip", action="store_true", default=None, help="random horizontal flips")
    m.add_argument("--no-flip", dest="flip", action="store_false", help="no flips (default for digits)")
    m.add_argument("--cutout", type=int, default=None, help="cutout square size in px, 0 = off (default per dataset)")
    m.add_argument("--no-tta", dest="tta", action="store_false", help="no flip test-time augmentation")
    add_train_options(t, **RECIPES["classify"])
    t.set_defaults(func=cmd_train)

    e = verbs.add_parser("eval", help="evaluate saved weights on a dataset")
    e.add_argument("--weights", required=True, help="weights file (best.pt/last.pt) or run folder")
    add_data_options(e, default=None)
    e.add_argument("--split", default="test", choices=["test", "train", "val"])
    e.add_argument("--device", default="auto")
    e.add_argument("--json", action="store_true", help="print the full result as JSON")
    e.set_defaults(func=cmd_eval)

    pr = verbs.add_parser("predict", help="predict labels for image files or folders")
    pr.add_argument("--weights", required=True, help="weights file (best.pt/last.pt) or run folder")
    pr.add_argument("inputs", nargs="+", metavar="FILE_OR_DIR")
    pr.add_argument("--top-k", type=int, default=1, help="also list the K most likely classes")
    pr.add_argument("--out", default=None, help="write predictions to this CSV (file,label,confidence,error)")
    pr.add_argument("--device", default="auto")
    pr.set_defaults(func=cmd_predict)


def cmd_train(args) -> int:
    from ..tasks import classify

    if args.resume:
        run = classify.train(resume=args.resume, progress=args.progress)
    else:
        opts = dict(data_dir=args.data_dir, image_size=args.image_size, val_fraction=args.val_fraction,
                    label_smoothing=args.label_smoothing, translate=args.translate, flip=args.flip,
                    cutout=args.cutout, tta=args.tta, download=args.download)
        run = classify.train(args.data, model=args.model, out=args.out, **opts, **train_kwargs(args))
    r = run.results
    print(f"test_accuracy={r.get('test_accuracy', float('nan')):.4f} best_epoch={r['best_epoch']} "
          f"train_seconds={r['train_seconds']:.1f} device={r['device']} precision={r['precision']}")
    print(f"run folder: {run.dir}  (report: {run.dir / 'report.html'})")
    return 0


def cmd_eval(args) -> int:
    from ..tasks import classify

    res = classify.evaluate(args.weights, args.data, data_dir=args.data_dir, split=args.split,
                            device=args.device, download=args.download)
    if args.json:
        print(json.dumps(res, indent=2))
    else:
        print(f"{args.split}_accuracy={res['accuracy']:.4f} {args.split}_loss={res['loss']:.4f} images={res['images']}")
    return 0


def cmd_predict(args) -> int:
    from ..tasks import classify

    if args.top_k < 1:
        raise UsageError("--top-k must be >= 1")
    clf = classify.load(args.weights, device=args.device)
    files = classify.expand_inputs(args.inputs)
    if not files:
        raise UsageError(f"no image files found in {' '.join(args.inputs)}")
    preds = clf.predict(files, top_k=args.top_k)
    failed = 0
    for p in preds:
        if p.error:
            failed += 1
            print(f"error: {p.error}", file=sys.stderr)
        elif args.top_k > 1:
            print(f"{p.file}\t" + "\t".join(f"{l} ({c:.3f})" for l, c in p.top))
        else:
            print(f"{p.file}\t{p.label}\t{p.confidence:.4f}")
    if args.out:
        classify.write_predictions_csv(args.out, preds, args.top_k)
    if failed:
        print(f"{failed} of {len(preds)} file(s) could not be read", file=sys.stderr)
    return 1 if failed else 0
