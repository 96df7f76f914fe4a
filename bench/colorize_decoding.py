"""How much colour can a trained colouriser show while its PSNR still beats the grey image?

Issue 17 asks for colourfulness >= 70% of the originals' on the CIFAR-10 test split with PSNR above
the grey baseline. `colorize train` picks, on the validation split, the most colourful (temperature,
correction) of its grid that beats grey by MARGIN_DB. This script adds a third knob, a chroma gain s
(decoded ab times s), and reports for each gain the best row found on validation and what that
decoding gives on test. Why a gain: for a pixel whose predicted chroma is the posterior mean m, any
s in (0, 2) keeps the expected squared error below grey's, so a calibrated model could buy colour
almost for free; how far this one gets is what the table says.

    flock /tmp/lensforge-cpu.lock .venv/bin/python bench/colorize_decoding.py RUN_DIR [--name NAME]

RUN_DIR is a finished `lensforge colorize train` run. Writes bench/results/colorize_decoding[_NAME].{json,md}.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from lensforge.engine.checkpoint import load_checkpoint  # noqa: E402
from lensforge.errors import LensforgeError  # noqa: E402
from lensforge.fileio import write_json, write_text  # noqa: E402
from lensforge.options import make  # noqa: E402
from lensforge.specs.colorize import ColorizeOptions  # noqa: E402
from lensforge.tasks import colorize as C  # noqa: E402

GAINS = (1.0, 1.25, 1.5, 1.75, 2.0)


def write_table(out: dict, stem: Path) -> str:
    """The frontier as markdown next to the JSON; returns the text."""
    original, margin = out["test_original_colourfulness"], out["margin_db"]
    lines = [f"# Colourisation decoding frontier: {Path(out['run']).name}", "",
             f"`python bench/colorize_decoding.py {out['run']}` ({out['measured_at']}, {round(out['seconds'])} s); "
             f"the run: {out['trained']}.", "",
             f"Per gain, the most colourful (T, correction) whose validation PSNR beats grey by {margin} dB (where "
             f"none does, the best PSNR, marked), then that decoding on the test split "
             f"({out['gain_1_test']['test_images']} images; the originals' colourfulness {original:.2f}).", "",
             "| gain | T | correction | val PSNR - grey | test PSNR - grey | test colourfulness | ratio |",
             "|---|---|---|---|---|---|---|"]
    for r in out["frontier"]:
        mark = "" if r["val_psnr_minus_grey"] >= margin else " (nothing beat grey)"
        lines.append(f"| {r['gain']:g} | {r['temperature']:g} | {r['correction']:g} | "
                     f"{r['val_psnr_minus_grey']:+.3f} dB{mark} | {r['test_psnr_minus_grey']:+.3f} dB | "
                     f"{r['test_colourfulness']:.2f} | {r['test_colourfulness_ratio']:.1%} |")
    text = "\n".join(lines) + "\n"
    write_text(stem.with_suffix(".md"), text)
    return text


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("run", type=Path, help="a finished colorize run folder")
    ap.add_argument("--name", default="", help="suffix of the result files")
    a = ap.parse_args()
    ckpt = load_checkpoint(a.run, task=C.TASK)        # the run's best.pt, read once
    col = C.Colorizer(ckpt)
    ds, _ = C.load_colour_data(make(ColorizeOptions, ckpt["options"]), ckpt["config"]["seed"])
    if ds.val is None or ds.test is None:
        raise SystemExit(f"{a.run}: the run has no validation or no test split to measure on")
    t0 = time.perf_counter()
    val = C.sweep_decodings(col.model, ds.val, col.bins, col.class_weights, col.rt, gains=GAINS)
    picks = {gain: C.pick_decoding([r for r in val if r["gain"] == gain]) for gain in GAINS}
    # One pass over the test split for every chosen decoding (the grid spanned by the picks), one for the
    # originals' colourfulness (and the gain-1 decoding's SSIM etc.).
    test = C.sweep_decodings(col.model, ds.test, col.bins, col.class_weights, col.rt,
                             temps=sorted({p["temperature"] for p in picks.values()}),
                             corrections=sorted({p["correction"] for p in picks.values()}), gains=GAINS)
    base = C.evaluate_split(col.model, ds.test, col.bins,
                            (picks[1.0]["temperature"], col.class_weights, picks[1.0]["correction"]), col.rt)
    rows = []
    for gain, pick in picks.items():
        key = (pick["temperature"], pick["correction"], gain)
        row = next(r for r in test if (r["temperature"], r["correction"], r["gain"]) == key)
        rows.append({"gain": gain, "temperature": pick["temperature"], "correction": pick["correction"],
                     "val_psnr_minus_grey": round(pick["psnr"] - pick["grey_psnr"], 3),
                     "val_colourfulness": pick["colourfulness"],
                     "test_psnr_minus_grey": round(row["psnr"] - row["grey_psnr"], 3),
                     "test_colourfulness": row["colourfulness"]})
    original = base["test_original_colourfulness"]
    for r in rows:
        r["test_colourfulness_ratio"] = round(r["test_colourfulness"] / original, 4)
    out = {"run": str(a.run), "margin_db": C.MARGIN_DB, "gains": GAINS, "test_original_colourfulness": original,
           "seconds": round(time.perf_counter() - t0, 1), "frontier": rows, "gain_1_test": base, "val_sweep": val}
    stem = ROOT / "bench" / "results" / f"colorize_decoding{'_' + a.name if a.name else ''}"
    out["trained"] = (f"`lensforge colorize train --data {Path(ckpt['options']['data']).name}`, "
                      f"{ckpt['config']['epochs']} epochs, U-Net base {ckpt['options']['base']}, depth "
                      f"{ckpt['options']['depth']}, {ckpt['runtime']['precision']}")
    out["measured_at"] = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    write_json(stem.with_suffix(".json"), out)
    print(write_table(out, stem))
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except LensforgeError as e:       # no run there, another task's run: one line, exit 1
        sys.exit(f"colorize_decoding: {e}")
