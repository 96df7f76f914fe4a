"""Reproduce the image-to-image figures: colourisation on CIFAR-10 test, Gatys timings and loss
reductions at 256 and 512 px, fast style network speed; also renders the docs/ strips.

    flock /tmp/lensforge-cpu.lock .venv/bin/python bench/image2image.py \\
        --colorize-run runs/colorize/cifar10-jpeg-unet      # reuse a finished `colorize train` run
    flock /tmp/lensforge-cpu.lock .venv/bin/python bench/image2image.py --train-colorize   # or train it here (8 epochs, ~35 min)

Writes bench/results/image2image.json and docs/img/*.png. Sample photos come from scikit-image
and scikit-learn (installed with the dev extras), so nothing third-party is committed except the
small rendered strips.
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from lensforge.fileio import write_json  # noqa: E402
from lensforge.tasks import colorize, stylize  # noqa: E402

CLI = [str(ROOT / ".venv" / "bin" / "lensforge")]
DOCS = ROOT / "docs" / "img"


def samples() -> dict[str, np.ndarray]:
    import skimage.data as d
    from sklearn.datasets import load_sample_images

    china, flower = load_sample_images().images
    return {"astronaut": d.astronaut(), "coffee": d.coffee(), "chelsea": d.chelsea(), "rocket": d.rocket(),
            "china": china, "flower": flower, "camera": d.camera(), "retina": d.retina(),
            "hubble": d.hubble_deep_field(), "ihc": d.immunohistochemistry(), "coins": d.coins()}


def save(arr: np.ndarray, path: Path) -> Path:
    Image.fromarray(arr).save(path)
    return path


def strip(images: list[np.ndarray], path: Path, height: int = 160, pad: int = 4) -> None:
    """Side-by-side PNG at a common height, kept small for the docs (< 300 KB)."""
    tiles = []
    for im in images:
        im = Image.fromarray(im if im.ndim == 3 else np.repeat(im[..., None], 3, 2)).convert("RGB")
        tiles.append(im.resize((round(im.width * height / im.height), height), Image.LANCZOS))
    canvas = Image.new("RGB", (sum(t.width for t in tiles) + pad * (len(tiles) - 1), height), "white")
    x = 0
    for t in tiles:
        canvas.paste(t, (x, 0))
        x += t.width + pad
    path.parent.mkdir(parents=True, exist_ok=True)
    canvas.save(path, optimize=True)


def run_cli(args: list[str]) -> tuple[float, str]:
    t0 = time.perf_counter()
    p = subprocess.run(CLI + args, capture_output=True, text=True)
    if p.returncode:
        raise SystemExit(f"command failed ({p.returncode}): {' '.join(args)}\n{p.stderr}")
    return time.perf_counter() - t0, p.stdout


def bench_colorize(args, tmp: Path, photos: dict) -> dict:
    if args.train_colorize:
        run_dir = tmp / "colorize-run"
        secs, _ = run_cli(["colorize", "train", "--data", args.cifar, "--epochs", str(args.colorize_epochs),
                           "--no-progress", "--out", str(run_dir)])
    else:
        run_dir, secs = Path(args.colorize_run), None
    res = json.loads((run_dir / "results.json").read_text())
    out = {k: res[k] for k in ("test_psnr", "test_grey_psnr", "test_ssim", "test_grey_ssim", "test_colourfulness",
                               "test_original_colourfulness", "test_colourfulness_ratio", "temperature", "correction",
                               "test_images", "test_greyscale_originals", "test_psnr_all_images",
                               "test_grey_psnr_all_images", "test_pooled_psnr_all_images",
                               "test_grey_pooled_psnr_all_images", "train_seconds", "epochs_run")}
    out["wall_seconds_train"] = secs
    out["psnr_above_grey"] = res["test_psnr"] > res["test_grey_psnr"]
    out["test_vs_grey"] = colorize.describe_test(res["test_psnr"], res["test_grey_psnr"])
    out["colourfulness_at_least_70_percent"] = res["test_colourfulness_ratio"] >= 0.7   # issue 17's target
    # Docs strip: CIFAR test strip from the run, plus full-size photos (grey / ours / original).
    col = colorize.load(run_dir)
    rows = []
    for name in ("chelsea", "coffee", "rocket"):
        rgb = photos[name]
        grey = np.asarray(Image.fromarray(rgb).convert("L"))
        rows.append([grey, col.colorize(grey), rgb])
    for i, row in enumerate(rows):
        strip(row, tmp / f"col_{i}.png", height=120)
    ims = [np.asarray(Image.open(tmp / f"col_{i}.png")) for i in range(len(rows))]
    w = max(im.shape[1] for im in ims)
    stacked = np.concatenate([np.pad(im, ((0, 4), (0, w - im.shape[1]), (0, 0)), constant_values=255) for im in ims])
    Image.fromarray(stacked).save(DOCS / "colorize_photos.png", optimize=True)
    Image.open(run_dir / "comparison.png").save(DOCS / "colorize_cifar10.png", optimize=True)
    return out


def bench_gatys(tmp: Path, photos: dict, features: str) -> list[dict]:
    content, style = save(photos["chelsea"], tmp / "chelsea.png"), save(photos["flower"], tmp / "flower.png")
    rows = []
    for size in (256, 512):
        out = tmp / f"gatys_{size}.png"
        secs, _ = run_cli(["stylize", "run", str(content), str(style), "--out", str(out), "--long-side", str(size),
                           "--features", features, "--report", str(tmp / f"gatys_{size}.json")])
        rep = json.loads((tmp / f"gatys_{size}.json").read_text())
        rep["wall_seconds_cli"] = round(secs, 2)
        rows.append(rep)
        if size == 256:
            strip([photos["chelsea"], photos["flower"], np.asarray(Image.open(out))], DOCS / "stylize_gatys.png")
    return rows


def bench_fast(tmp: Path, photos: dict, epochs: int, n_crops: int, style_weight: float, features: str) -> dict:
    # Content photos: random crops of sample images that are NOT shown in the docs strip.
    data = tmp / "photos" / "train"
    data.mkdir(parents=True)
    rng = np.random.default_rng(0)
    pool = [photos[k] for k in ("coffee", "rocket", "china", "retina", "hubble", "ihc", "camera", "coins")]
    for i in range(n_crops):
        im = pool[i % len(pool)]
        s = int(rng.integers(min(im.shape[:2]) // 3, min(im.shape[:2])))
        y, x = rng.integers(0, im.shape[0] - s + 1), rng.integers(0, im.shape[1] - s + 1)
        crop = Image.fromarray(im[y:y + s, x:x + s]).convert("RGB").resize((160, 160), Image.BICUBIC)
        crop.save(data / f"{i:04d}.jpg", quality=92)
    style = save(photos["flower"], tmp / "flower.png")
    run_dir = tmp / "fast-run"
    secs, stdout = run_cli(["stylize", "train", "--style", str(style), "--data", str(tmp / "photos"),
                            "--image-size", "128", "--epochs", str(epochs), "--style-weight", str(style_weight),
                            "--features", features, "--no-progress", "--out", str(run_dir)])
    res = json.loads((run_dir / "results.json").read_text())
    net = stylize.load(run_dir)
    test = [save(photos[k], tmp / f"{k}.png") for k in ("chelsea", "astronaut")]
    times = []
    for f in test:
        x = stylize.load_rgb(f, 512)
        net.stylize(x)  # warm-up: first call pays one-off kernel selection
        for _ in range(3):
            t0 = time.perf_counter()
            net.stylize(x)
            times.append(time.perf_counter() - t0)
    apply_secs, _ = run_cli(["stylize", "apply", "--weights", str(run_dir), *map(str, test), "--long-side", "512",
                             "--out", str(tmp / "fast_out")])
    outs = [np.asarray(Image.open(tmp / "fast_out" / f"{Path(f).stem}.png")) for f in test]
    strip([photos["chelsea"], outs[0], photos["astronaut"], outs[1]], DOCS / "stylize_fast.png")
    return {"train_images": n_crops, "style_weight": style_weight, "train_wall_seconds": round(secs, 1), "train_seconds": res["train_seconds"], "epochs": epochs,
            "val_style_first_epoch": res.get("first_epoch_val_style"), "val_style": res.get("val_style"),
            "val_content": res.get("val_content"), "seconds_per_512px_image": round(float(np.mean(times)), 4),
            "seconds_per_512px_image_max": round(float(np.max(times)), 4), "timed_images": len(times),
            "cli_apply_wall_seconds_2_images": round(apply_secs, 2), "precision": res.get("precision")}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--colorize-run", default=None, help="finished colorize run folder to evaluate")
    ap.add_argument("--train-colorize", action="store_true", help="train the colouriser here instead")
    ap.add_argument("--cifar", default=str(ROOT.parent / "shared" / "datasets" / "cifar10-jpeg.zip"))
    ap.add_argument("--colorize-epochs", type=int, default=8)
    ap.add_argument("--fast-epochs", type=int, default=5)
    ap.add_argument("--fast-style-weight", type=float, default=3.0)
    ap.add_argument("--fast-crops", type=int, default=800, help="training crops for the fast network")
    # The measured figures use the Caffe-converted SqueezeNet; without this the CLI's default is
    # torchvision's SqueezeNet 1.1, downloaded into the cache.
    ap.add_argument("--features", default=str(ROOT.parent / "shared" / "weights" / "squeezenet1_1-features-caffe.pth"),
                    help="feature-network weights for the style figures")
    ap.add_argument("--skip", default="", help="comma list of parts to skip: colorize,gatys,fast")
    args = ap.parse_args()
    if not args.colorize_run and not args.train_colorize and "colorize" not in args.skip:
        ap.error("give --colorize-run DIR or --train-colorize (or --skip colorize)")
    DOCS.mkdir(parents=True, exist_ok=True)
    out_path = ROOT / "bench" / "results" / "image2image.json"
    results = json.loads(out_path.read_text()) if out_path.exists() else {}
    results["machine"] = {"cpus": torch.get_num_threads(), "torch": torch.__version__}
    photos = samples()
    with tempfile.TemporaryDirectory() as t:
        tmp = Path(t)
        if "colorize" not in args.skip:
            results["colorize_cifar10_test"] = bench_colorize(args, tmp, photos)
            print(json.dumps(results["colorize_cifar10_test"], indent=1), flush=True)
        if "gatys" not in args.skip:
            results["gatys"] = bench_gatys(tmp, photos, args.features)
            print(json.dumps(results["gatys"], indent=1), flush=True)
        if "fast" not in args.skip:
            results["fast_style"] = bench_fast(tmp, photos, args.fast_epochs, args.fast_crops, args.fast_style_weight,
                                               args.features)
            print(json.dumps(results["fast_style"], indent=1), flush=True)
    write_json(out_path, results)
    print(f"wrote {out_path}")


if __name__ == "__main__":
    main()
