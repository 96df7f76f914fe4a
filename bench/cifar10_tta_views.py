"""Would more test-time views lift a trained whitenet? Scores finished CIFAR-10 runs under view sets
beyond the recipe's "flip+shift" (models/classifiers.TestTimeAugment).

    flock /tmp/lensforge-cpu.lock python bench/cifar10_tta_views.py bench/out/cifar10/RUN [RUN ...]
    python bench/cifar10_tta_views.py --split val RUN    # a run trained with --val-fraction: its own val split

Each run's last.pt is scored on the test split (or with --split val, on the validation split the run
carved off, drawn again from its stored fraction and seed) of ../shared/datasets/cifar10-jpeg.zip for 18 views
(the image and its mirror, each shifted by every (dy, dx) in {-1, 0, 1}^2 with reflected borders),
averaged in log-softmax space as TestTimeAugment averages, with these weights:
- flip+shift: the recipe's six views as TestTimeAugment runs them (1/4 each for the unshifted pair,
  1/8 each for the up-left and down-right pairs), through predict_logits as training scores it;
- 3x3: all 18 views alike; 3x3, centre x2 / x4: the unshifted pair weighted 2x / 4x;
- plus: the pair shifted by nothing and by one pixel up, down, left, right (10 views);
- diagonals: the pair unshifted (2x) and shifted along both diagonals (10 views).
Writes bench/results/cifar10_tta_views[_val].json. A view set is chosen on a validation split (--split
val); the test-split figures say how far that choice carries.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from lensforge.data import load_dataset
from lensforge.data.sets import TensorSet
from lensforge.engine.checkpoint import load_checkpoint
from lensforge.errors import LensforgeError
from lensforge.fileio import write_json
from lensforge.tasks.classify import Classifier, predict_logits

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "datasets" / "cifar10-jpeg.zip"
RESULTS = ROOT / "bench" / "results"
SHIFTS = [(dy, dx) for dy in (-1, 0, 1) for dx in (-1, 0, 1)]


@torch.no_grad()
def view_logprobs(clf: Classifier, images: torch.Tensor, batch: int = 500) -> dict[tuple[int, int, int], torch.Tensor]:
    """(flip, dy, dx) -> (N, classes) log-softmax of that view, under the run's autocast."""
    net, rt = clf.model.eval(), clf.rt
    out: dict[tuple[int, int, int], list[torch.Tensor]] = {(f, dy, dx): [] for f in (0, 1) for dy, dx in SHIFTS}
    for start in range(0, len(images), batch):
        x = images[start:start + batch].to(rt.device).float() / 255
        for f in (0, 1):
            padded = F.pad(x.flip(-1) if f else x, (1, 1, 1, 1), mode="reflect")
            for dy, dx in SHIFTS:
                v = padded[..., 1 + dy:1 + dy + x.shape[-2], 1 + dx:1 + dx + x.shape[-1]]
                with rt.autocast():
                    logits = net(v.contiguous(memory_format=torch.channels_last if rt.channels_last
                                              else torch.contiguous_format))
                out[(f, dy, dx)].append(logits.float().log_softmax(1).cpu())
    return {k: torch.cat(v) for k, v in out.items()}


def view_sets() -> dict[str, dict[tuple[int, int], float]]:
    """Name -> weight per shift (both flips of a shift share its weight)."""
    plus = [(0, 0), (-1, 0), (1, 0), (0, -1), (0, 1)]
    return {"flip": {(0, 0): 1.0},
            "3x3": {s: 1.0 for s in SHIFTS},
            "3x3, centre x2": {s: 2.0 if s == (0, 0) else 1.0 for s in SHIFTS},
            "3x3, centre x4": {s: 4.0 if s == (0, 0) else 1.0 for s in SHIFTS},
            "plus": {s: 1.0 for s in plus},
            "diagonals": {s: 2.0 if s == (0, 0) else 1.0 for s in [(0, 0), (-1, -1), (1, 1), (-1, 1), (1, -1)]}}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("runs", nargs="+", type=Path, help="finished classify runs on CIFAR-10")
    ap.add_argument("--split", choices=("test", "val"), default="test")
    a = ap.parse_args()
    torch.set_flush_denormal(True)
    results, splits = {}, {}      # (fraction, seed) -> dataset: decoding 60,000 JPEGs takes a minute
    for run in a.runs:
        t0 = time.perf_counter()
        ckpt = load_checkpoint(run / "weights" / "last.pt", task="classify")
        clf = Classifier(ckpt)
        fraction = ckpt["options"].get("val_fraction", 0.0) if a.split == "val" else 0.0
        if a.split == "val" and not fraction:
            raise SystemExit(f"{run}: trained without --val-fraction, so it has no validation split")
        key = (fraction, ckpt["config"]["seed"])
        if key not in splits:
            splits[key] = load_dataset(DATA, val_fraction=key[0], seed=key[1])
        ds = splits[key]
        test = ds.val if a.split == "val" else ds.test
        y = test.labels
        ref, _ = predict_logits(clf.model, TensorSet(test.images, y), clf.rt, tta="flip+shift")
        views = view_logprobs(clf, test.images)
        row = {"flip+shift (recipe)": (ref.argmax(1) == y).float().mean().item(),
               "single views": {f"flip{f} dy{dy} dx{dx}": round((v.argmax(1) == y).float().mean().item(), 4)
                                for (f, dy, dx), v in views.items()}}
        for name, weights in view_sets().items():
            score = sum(w * (views[(0, *s)] + views[(1, *s)]) for s, w in weights.items())
            row[name] = round((score.argmax(1) == y).float().mean().item(), 4)
        row["seconds"] = round(time.perf_counter() - t0, 1)
        results[str(run)] = row
        print(run, {k: v for k, v in row.items() if k != "single views"}, flush=True)
    out = RESULTS / f"cifar10_tta_views{'_val' if a.split == 'val' else ''}.json"
    write_json(out, {"data": str(DATA.name), "split": a.split, "images": len(test), "runs": results,
                     "measured_at": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())})
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except LensforgeError as e:       # no run there, not a classifier's weights: one line, exit 1
        sys.exit(f"cifar10_tta_views: {e}")
