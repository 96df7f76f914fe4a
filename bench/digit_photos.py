"""How well does an MNIST model read photographed handwriting? A seeded, offline stand-in for
"photos of digits people wrote on paper", scored through the public predict path.

    python bench/digit_photos.py --runs baseline=/tmp/dg-run1 robust=/tmp/dg-run2
    python bench/digit_photos.py --runs robust=RUN --limit 200 --no-write        # a quick look, prints only
    # score with an older lensforge on PYTHONPATH first, then merge its runs into the table:
    PYTHONPATH=/old/src python bench/digit_photos.py --runs old=RUN --no-write --json /tmp/old.json
    python bench/digit_photos.py --runs new=RUN --merge /tmp/old.json
    python bench/digit_photos.py --remake-md      # the .md again from the .json, no scoring

Source handwriting: scikit-learn's bundled digits (1,797 digits by 43 writers, UCI "optdigits";
never MNIST, so this measures transfer to other people's handwriting). Each 8x8 image counts the
ink in 4x4 blocks of the writer's 32x32 bitmap; it is upsampled with a cubic spline, thresholded
into a smooth shape, reduced to its centre line (skeleton) and drawn again with a pen of a chosen
width, so stroke width is a free factor. Every photo then gets, seeded per image: pen width (2-25%
of the digit's height), size in the frame (15-70% of its height), off-centre placement, rotation
(+-20 deg), a slight perspective tilt, tinted paper with gradient light and faint texture,
a black, blue or grey pen, sensor noise, focus blur and JPEG compression (quality 35-92).

Two sets are rendered from the same 1,797 digits: "clean" (black pen of MNIST-like width 12%,
centred, upright, white paper, no blur, JPEG 95): what the writers' style alone costs; and "photo"
(all factors above). Each trained run is scored by `lensforge.classify.load(run).predict(files)`
on the JPEG files, so the checkpoint's own "digit" preprocessing runs exactly as for a user.
Accuracy is reported overall and per nuisance factor (e.g. thin pen, big rotation, small digit,
heavy blur); each factor's rows are the photos where it is present, whatever else they have.
"""
from __future__ import annotations

import argparse
import datetime as dt
import io
import json
import shlex
import sys
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
from PIL import Image
from scipy import ndimage

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
SEED = 2026
GLYPH_ZOOM = 16        # source pixel -> glyph pixels: a 12x12 padded digit becomes a 192 px glyph
PAPER_TINTS = {"white": (250, 250, 248), "cream": (246, 238, 214), "grey": (218, 218, 214),
               "blue-white": (232, 238, 248), "yellow": (250, 240, 170)}
INKS = {"black": (25, 25, 30), "blue": (25, 45, 150), "grey": (85, 85, 90)}


@dataclass
class Factors:
    """What was done to one photo (all recorded in the results so any row can be re-derived)."""

    pen: float          # pen width / digit height
    size: float         # digit height / frame height
    offset: float       # distance of the digit centre from the frame centre, / frame side
    rotation: float     # degrees, counter-clockwise
    perspective: float  # max corner displacement / frame side
    paper: str
    gradient: float     # darkest / brightest illumination across the frame is 1 - gradient
    ink: str
    ink_strength: float  # 1 = full pen colour, lower = faded ink / pencil-like
    noise: float        # sensor noise sigma, grey levels
    blur: float         # Gaussian focus blur sigma, px at the photo's size
    jpeg: int           # JPEG quality
    side: int           # photo side in px


# ------------------------------------------------------------------------------ rendering

def centre_line(digit8: np.ndarray) -> np.ndarray:
    """The writer's stroke centre line at glyph resolution (bool), from an 8x8 ink-count image.

    A cubic spline through the block counts, lightly smoothed and thresholded at 45% of the peak,
    gives the smooth shape of the stroke; its skeleton is the path the pen took, which can be
    redrawn at any width. (Looked at on the first 20 digits: stronger smoothing or a 40% threshold
    closes small loops, a 55% threshold breaks thin joins.)
    """
    from skimage.morphology import skeletonize

    img = np.pad(digit8.astype(np.float32) / 16.0, 2)
    smooth = ndimage.zoom(img, GLYPH_ZOOM, order=3, mode="grid-constant", grid_mode=True)
    smooth = ndimage.gaussian_filter(smooth, GLYPH_ZOOM * 0.15)
    shape = smooth > 0.45 * smooth.max()
    return skeletonize(shape)


def draw_pen(line: np.ndarray, width: float) -> np.ndarray:
    """Anti-aliased coverage (0..1) of a round pen of `width` glyph pixels along the line."""
    dist = ndimage.distance_transform_edt(~line)
    return np.clip(width / 2 + 0.5 - dist, 0.0, 1.0).astype(np.float32)


def _homography(glyph_box: tuple[int, int, int, int], f: Factors, rng: np.random.Generator) -> np.ndarray:
    """Glyph pixels -> photo pixels: scale the digit's height to f.size of the frame, rotate,
    move off-centre by f.offset, then tilt the frame by moving its corners up to f.perspective."""
    import cv2

    top, bottom, left, right = glyph_box
    side = f.side
    cy, cx = (top + bottom) / 2, (left + right) / 2
    s = f.size * side / max(bottom - top, 1)
    a = np.deg2rad(f.rotation)
    direction = rng.uniform(0, 2 * np.pi)
    ty = side / 2 + f.offset * side * np.sin(direction)
    tx = side / 2 + f.offset * side * np.cos(direction)
    # counter-clockwise on screen (y down): x' = x cos + y sin, y' = -x sin + y cos
    m = np.array([[s * np.cos(a), s * np.sin(a), 0], [-s * np.sin(a), s * np.cos(a), 0], [0, 0, 1.0]])
    m[0, 2] = tx - (m[0, 0] * cx + m[0, 1] * cy)
    m[1, 2] = ty - (m[1, 0] * cx + m[1, 1] * cy)
    corners = np.float32([[0, 0], [side, 0], [side, side], [0, side]])
    moved = corners + rng.uniform(-f.perspective, f.perspective, (4, 2)).astype(np.float32) * side
    tilt = cv2.getPerspectiveTransform(corners, moved)
    return tilt @ m


def _paper(f: Factors, rng: np.random.Generator) -> np.ndarray:
    """Tinted paper under uneven light: a linear gradient in a random direction, a soft vignette,
    and faint low-frequency texture (float RGB 0..255)."""
    side = f.side
    yy, xx = np.mgrid[0:side, 0:side].astype(np.float32) / side - 0.5
    angle = rng.uniform(0, 2 * np.pi)
    ramp = xx * np.cos(angle) + yy * np.sin(angle)          # -0.71..0.71
    light = 1.0 - f.gradient * (ramp + 0.71) / 1.42
    light *= 1.0 - 0.15 * (xx ** 2 + yy ** 2) * rng.uniform(0, 1)
    texture = ndimage.gaussian_filter(rng.normal(0, 1, (side, side)).astype(np.float32), side / 60)
    texture *= 3.0 / max(float(texture.std()), 1e-6)
    tint = np.array(PAPER_TINTS[f.paper], np.float32)
    return tint[None, None, :] * light[..., None] + texture[..., None]


def draw_factors(rng: np.random.Generator) -> Factors:
    """One photo's nuisance factors, each drawn independently."""
    pen = float(np.exp(rng.uniform(np.log(0.02), np.log(0.25))))
    size = float(rng.uniform(0.15, 0.7))
    return Factors(
        pen=round(pen, 4), size=round(size, 3),
        offset=round(float(rng.uniform(0, 0.5 * (1 - size) * 0.8)), 3),
        rotation=round(float(rng.uniform(-20, 20)), 2),
        perspective=round(float(rng.uniform(0, 0.06)), 3),
        paper=str(rng.choice(list(PAPER_TINTS), p=[0.4, 0.2, 0.15, 0.15, 0.1])),
        gradient=round(float(rng.uniform(0, 0.55)), 3),
        ink=str(rng.choice(list(INKS), p=[0.5, 0.35, 0.15])),
        ink_strength=round(float(rng.uniform(0.6, 1.0)), 3),
        noise=round(float(rng.uniform(1, 8)), 2),
        blur=round(float(rng.choice([0.0, rng.uniform(0.3, 1.2), rng.uniform(1.2, 3.0)], p=[0.3, 0.45, 0.25])), 2),
        jpeg=int(rng.integers(35, 93)),
        side=int(rng.choice([160, 224, 320])),
    )


CLEAN = Factors(pen=0.12, size=0.6, offset=0.0, rotation=0.0, perspective=0.0, paper="white", gradient=0.0,
                ink="black", ink_strength=1.0, noise=0.0, blur=0.0, jpeg=95, side=224)


def render(digit8: np.ndarray, f: Factors, rng: np.random.Generator) -> bytes:
    """One JPEG photo of the digit under the factors `f` (rng: placement, light, noise draws)."""
    import cv2

    line = centre_line(digit8)
    rows, cols = np.nonzero(line)
    box = (rows.min(), rows.max(), cols.min(), cols.max())
    height = max(box[1] - box[0], 1)
    coverage = draw_pen(line, max(f.pen * height, 1.0))
    # the pen's round ends and width reach beyond the centre line: measure the drawn box instead
    rows, cols = np.nonzero(coverage > 0.5)
    box = (rows.min(), rows.max(), cols.min(), cols.max())
    h = _homography(box, f, rng)
    cov = cv2.warpPerspective(coverage, h, (f.side, f.side), flags=cv2.INTER_LINEAR, borderValue=0.0)
    paper = _paper(f, rng)
    ink = np.array(INKS[f.ink], np.float32)[None, None, :]
    alpha = (cov * f.ink_strength)[..., None]
    photo = paper * (1 - alpha) + (ink * (paper / 255.0)) * alpha    # ink is lit by the same light
    if f.blur > 0:
        photo = ndimage.gaussian_filter(photo, (f.blur, f.blur, 0))
    if f.noise > 0:
        photo = photo + rng.normal(0, f.noise, photo.shape)
    out = io.BytesIO()
    Image.fromarray(np.clip(photo, 0, 255).round().astype(np.uint8)).save(out, "JPEG", quality=f.jpeg)
    return out.getvalue()


def render_set(kind: str, seed: int = SEED, limit: int | None = None, skip=lambda i, label: False):
    """Yield (index, label, factors, jpeg bytes or None where skip(i, label)) for the 'clean' or
    'photo' set, deterministically: the factors are drawn first from each photo's own generator."""
    from sklearn.datasets import load_digits

    bunch = load_digits()
    n = len(bunch.target) if limit is None else min(limit, len(bunch.target))
    for i in range(n):
        rng = np.random.default_rng([seed, i])
        f = CLEAN if kind == "clean" else draw_factors(rng)
        label = int(bunch.target[i])
        yield i, label, f, None if skip(i, label) else render(bunch.images[i], f, rng)


def write_set(kind: str, folder: Path, seed: int = SEED, limit: int | None = None, reuse: bool = False) -> list[dict]:
    """Write folder/<label>/<kind>-NNNN.jpg (a classify folder layout) and return one row per photo;
    with `reuse`, files already there (from the same seed) are kept rather than rendered again."""
    def path_of(i: int, label: int) -> Path:
        return folder / str(label) / f"{kind}-{i:04d}.jpg"

    rows = []
    for i, label, f, jpeg in render_set(kind, seed, limit, skip=lambda i, y: reuse and path_of(i, y).is_file()):
        path = path_of(i, label)
        if jpeg is not None:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(jpeg)
        rows.append({"file": str(path), "label": str(label), "index": i, **asdict(f)})
    return rows


# ------------------------------------------------------------------------------ factors and scoring

#: name -> (description, test on a row). A photo counts in every factor it has.
FACTORS = {
    "thin pen": ("pen width < 5% of the digit height (ballpoint on a big digit)", lambda r: r["pen"] < 0.05),
    "thick pen": ("pen width > 15% of the digit height (marker)", lambda r: r["pen"] > 0.15),
    "big rotation": ("|rotation| > 12 deg", lambda r: abs(r["rotation"]) > 12),
    "small digit": ("digit height < 25% of the frame", lambda r: r["size"] < 0.25),
    "heavy blur": ("focus blur sigma > 1.2 px", lambda r: r["blur"] > 1.2),
    "strong gradient": ("light falls off by > 35% across the frame", lambda r: r["gradient"] > 0.35),
    "tinted paper": ("cream, grey, blue-white or yellow paper", lambda r: r["paper"] != "white"),
    "blue pen": ("blue ink", lambda r: r["ink"] == "blue"),
    "faint ink": ("ink strength < 0.75 (faded pen / grey pencil-like)", lambda r: r["ink_strength"] < 0.75
                  or r["ink"] == "grey"),
    "low JPEG quality": ("JPEG quality < 50", lambda r: r["jpeg"] < 50),
    "off-centre": ("digit centre > 15% of the frame from its centre", lambda r: r["offset"] > 0.15),
}


def score(run: str, rows: list[dict]) -> tuple[dict, list]:
    """Accuracy of a run on the rows' files through lensforge.classify.load(run).predict."""
    import lensforge

    clf = lensforge.classify.load(run, device="cpu")
    preds = clf.predict([r["file"] for r in rows])
    errors = [p.error for p in preds if p.error]
    if errors:
        raise SystemExit(f"{run}: {len(errors)} photos could not be read, e.g. {errors[0]}")
    right = np.array([p.label == r["label"] for p, r in zip(preds, rows)])
    out = {"accuracy": round(float(right.mean()), 4), "n": len(rows), "factors": {}}
    for name, (_, test) in FACTORS.items():
        mask = np.array([bool(test(r)) for r in rows])
        if mask.any():
            out["factors"][name] = {"accuracy": round(float(right[mask].mean()), 4), "n": int(mask.sum())}
    none = np.array([not any(test(r) for _, test in FACTORS.values()) for r in rows])
    if none.any():
        out["factors"]["none of these"] = {"accuracy": round(float(right[none].mean()), 4), "n": int(none.sum())}
    return out, preds


def run_facts(run: str) -> dict:
    """The training run's own figures (results.json) and augmentation (config.yaml)."""
    facts: dict = {"run": run}
    res = Path(run) / "results.json"
    if res.is_file():
        r = json.loads(res.read_text())
        facts.update({k: r.get(k) for k in ("test_accuracy", "test_accuracy_plain", "train_seconds", "device",
                                            "precision", "best_epoch")})
    cfg = Path(run) / "config.yaml"
    if cfg.is_file():
        import yaml

        c = yaml.safe_load(cfg.read_text())
        facts["augment"] = c.get("augment")
        facts["data"] = c.get("data")
        facts["epochs"] = (c.get("train") or c.get("config") or {}).get("epochs") if isinstance(c, dict) else None
    return facts


def digits_test_indices() -> set[int]:
    """The photos' source digits that a run trained on lensforge's bundled "digits" set never saw
    (its test split): the other 80% were its training images, so only these measure transfer."""
    from lensforge.data.catalog import digits_split

    return {int(i) for i in digits_split()[1]}


# ------------------------------------------------------------------------------ figure

def strip(rows: list[dict], preds_by_run: dict[str, list], spec, path: Path, n: int = 16) -> None:
    """Sample photos (first n of the photo set, one per column), each run's prediction under it,
    and what the digit preprocessing hands the model (28x28) in the last row."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from lensforge.data.preprocess import load_and_prepare
    from lensforge.fileio import atomic_open

    picks = list(range(min(n, len(rows))))
    fig, axes = plt.subplots(2, len(picks), figsize=(1.15 * len(picks), 2.9))
    for col, i in enumerate(picks):
        r = rows[i]
        axes[0, col].imshow(Image.open(r["file"]).convert("RGB"))
        lines = [f"true {r['label']}"]
        colours = []
        for name, preds in preds_by_run.items():
            ok = preds[i].label == r["label"]
            lines.append(f"{name[:18]} {preds[i].label}")
            colours.append("tab:green" if ok else "tab:red")
        axes[0, col].set_title("\n".join(lines), fontsize=6.5,
                               color=colours[-1] if colours else "black")
        axes[1, col].imshow(load_and_prepare(r["file"], spec)[0], cmap="gray", vmin=0, vmax=255)
        for ax in axes[:, col]:
            ax.set_xticks([])
            ax.set_yticks([])
    axes[1, 0].set_ylabel("model input", fontsize=7)
    fig.suptitle("Rendered photos of handwritten digits (scikit-learn digits writers); "
                 "title colour: last run right/wrong", fontsize=8)
    fig.tight_layout()
    with atomic_open(path, "wb") as f:
        fig.savefig(f, dpi=110, format="png")
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--runs", nargs="+", metavar="NAME=RUN", help="trained classify runs to score")
    p.add_argument("--remake-md", action="store_true",
                   help="no scoring: rewrite digit_photos.md from digit_photos.json (after a change to the table)")
    p.add_argument("--out", default=str(ROOT / "bench" / "out" / "digit_photos"), help="where the JPEGs go")
    p.add_argument("--seed", type=int, default=SEED)
    p.add_argument("--limit", type=int, default=None, help="first N digits only (quick check)")
    p.add_argument("--reuse", action="store_true", help="keep photos already in --out (rendered with this --seed)")
    p.add_argument("--no-write", action="store_true", help="print only; leave bench/results and docs/img alone")
    p.add_argument("--note", default="", help="recorded with the results, e.g. how loaded the machine was")
    p.add_argument("--json", default=None, help="also write the results to this file (with --no-write too)")
    p.add_argument("--merge", nargs="*", default=[], metavar="JSON",
                   help="put the runs of earlier results files first, e.g. one scored by another lensforge version")
    args = p.parse_args(argv)
    if args.remake_md:
        return remake_markdown(ROOT / "bench" / "results")
    if not args.runs:
        p.error("--runs is required (or --remake-md)")
    RUNS: dict[str, str] = {}
    for item in args.runs:
        name, _, run = item.partition("=")
        if not run:
            p.error(f"--runs {item}: expected NAME=RUN")
        if not Path(run).exists():       # before minutes of rendering, not after
            p.error(f"--runs {item}: {run} does not exist")
        RUNS[name] = run
    out = Path(args.out)
    sets = {kind: write_set(kind, out / f"{kind}-seed{args.seed}", args.seed, args.limit, args.reuse)
            for kind in ("clean", "photo")}
    given = argv if argv is not None else sys.argv[1:]
    results = {"command": f"python bench/{Path(__file__).name} " + " ".join(shlex.quote(a) for a in given),
               "date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
               "source": "scikit-learn load_digits (UCI optdigits, 43 writers), rendered by bench/digit_photos.py",
               "seed": args.seed, "note": args.note, "factors": {k: d for k, (d, _) in FACTORS.items()}, "runs": {}}
    photo_preds = {}
    for name, run in RUNS.items():
        entry = run_facts(run)
        held_out = digits_test_indices() if entry.get("data") == "digits" else None
        for kind, rows in sets.items():
            entry[kind], preds = score(run, rows)
            if kind == "photo":
                photo_preds[name] = preds
            if held_out is not None:
                right = [p.label == r["label"] for p, r in zip(preds, rows) if r["index"] in held_out]
                entry[kind]["held_out"] = {"accuracy": round(float(np.mean(right)), 4), "n": len(right)}
        results["runs"][name] = entry
        print(f"{name}: clean {entry['clean']['accuracy']:.4f}  photo {entry['photo']['accuracy']:.4f}  "
              f"(own test set {entry.get('test_accuracy')})", flush=True)
        if held_out is not None:
            print(f"    trained on 80% of these digits; its test digits only: clean "
                  f"{entry['clean']['held_out']['accuracy']:.4f}  photo {entry['photo']['held_out']['accuracy']:.4f}"
                  f"  (n={entry['photo']['held_out']['n']})")
        for factor, v in entry["photo"]["factors"].items():
            print(f"    {factor:18s} {v['accuracy']:.4f}  (n={v['n']})")
    if args.json:
        from lensforge.fileio import write_json

        write_json(args.json, results)
    merged = {}
    for other in args.merge:
        earlier = json.loads(Path(other).read_text())
        # an entry merged in once already keeps the command that scored it
        merged.update({name: {"command": earlier["command"], **entry} for name, entry in earlier["runs"].items()})
    results["runs"] = {**merged, **results["runs"]}
    if args.no_write:
        return 0
    import lensforge
    from lensforge.fileio import write_json, write_text

    res_dir = ROOT / "bench" / "results"
    write_json(res_dir / "digit_photos.json", results)
    write_text(res_dir / "digit_photos.md", markdown(results))
    spec = lensforge.classify.load(next(iter(RUNS.values())), device="cpu").spec
    # the strip's photos are the first digits, which a run trained on the digits set has seen
    unseen = {n: preds for n, preds in photo_preds.items() if results["runs"][n].get("data") != "digits"}
    strip(sets["photo"], unseen or photo_preds, spec, ROOT / "docs" / "img" / "digit_photos.png")
    print(f"wrote {res_dir / 'digit_photos.json'}, .md and docs/img/digit_photos.png")
    return 0


def remake_markdown(res_dir: Path) -> int:
    """digit_photos.md again from digit_photos.json, with what the table now shows; a run's "data"
    (which set it trained on) is filled in from its config.yaml where the results predate it."""
    from lensforge.fileio import write_json, write_text

    results = json.loads((res_dir / "digit_photos.json").read_text())
    for entry in results["runs"].values():
        cfg = Path(entry.get("run", "")) / "config.yaml"
        if "data" not in entry and cfg.is_file():
            entry["data"] = run_facts(entry["run"]).get("data")
    write_json(res_dir / "digit_photos.json", results)
    write_text(res_dir / "digit_photos.md", markdown(results))
    print(f"rewrote {res_dir / 'digit_photos.md'} from digit_photos.json")
    return 0


def markdown(results: dict) -> str:
    names = list(results["runs"])
    head = "| | " + " | ".join(names) + " | n |\n|---|" + "---|" * (len(names) + 1) + "\n"
    runs = results["runs"]
    lines = [f"# Photographed handwritten digits\n\n`{results['command']}` ({results['date']})\n\n"
             f"Source: {results['source']}; seed {results['seed']}. {results.get('note', '')}\n\n", head]
    for key, label, fmt in (("test_accuracy", "own test set accuracy (MNIST or digits)", "{:.4f}"),
                            ("train_seconds", "train seconds", "{:.0f}"), ("epochs", "epochs", "{}")):
        cells = (fmt.format(runs[n][key]) if runs[n].get(key) is not None else "-" for n in names)
        lines.append(f"| {label} | " + " | ".join(cells) + " | |\n")
    for kind in ("clean", "photo"):
        lines.append(f"| **{kind} renders** | " + " | ".join(f"**{runs[n][kind]['accuracy']:.4f}**" for n in names)
                     + f" | {runs[names[0]][kind]['n']} |\n")
    if any("held_out" in runs[n]["photo"] for n in names):
        for kind in ("clean", "photo"):
            cells = " | ".join(f"{runs[n][kind]['held_out']['accuracy']:.4f}" if "held_out" in runs[n][kind] else "-"
                               for n in names)
            n_held = next(runs[n][kind]["held_out"]["n"] for n in names if "held_out" in runs[n][kind])
            lines.append(f"| {kind}, digits test split only | {cells} | {n_held} |\n")
    for factor in runs[names[0]]["photo"]["factors"]:
        cells = " | ".join(f"{runs[n]['photo']['factors'][factor]['accuracy']:.4f}" for n in names)
        lines.append(f"| photo: {factor} | {cells} | {runs[names[0]]['photo']['factors'][factor]['n']} |\n")
    lines.append("\nFactors: " + "; ".join(f"{k}: {v}" for k, v in results["factors"].items()) + ".\n")
    if any(runs[n].get("data") == "digits" for n in names):
        lines.append("\nA run trained on lensforge's bundled `digits` set (" + ", ".join(
            n for n in names if runs[n].get("data") == "digits") + ") saw 80% of these digits, as 8x8 scans "
            "rather than photos, in training: its photo figures measure the photo factors, not transfer to new "
            "handwriting" + (" (the 'digits test split only' rows count the 359 it never saw)"
                             if any("held_out" in runs[n]["photo"] for n in names) else "") + ".\n")
    lines.append("\nRuns:\n\n" + "".join(
        f"- {n}: `{runs[n].get('run')}`, augment {runs[n].get('augment')}"
        + (f"; scored by `{runs[n]['command']}`" if runs[n].get("command") else "") + "\n" for n in names))
    return "".join(lines)


if __name__ == "__main__":
    from lensforge.errors import LensforgeError

    try:
        sys.exit(main())
    except LensforgeError as e:       # an unreadable run: one line, exit 1, no results written
        sys.exit(f"digit_photos: {e}")
