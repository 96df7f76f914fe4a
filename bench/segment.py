"""Segmentation benchmarks: data preparation, CPU throughput, and recording runs.

    python bench/segment.py prepare-isbi /tmp/isbi-split        # train = images 0-24, test = 25-29
    flock /tmp/lensforge-cpu.lock lensforge segment train --data /tmp/isbi-split --out /tmp/seg-isbi
    python bench/segment.py record /tmp/seg-isbi isbi "lensforge segment train --data /tmp/isbi-split ..."
    python bench/segment.py prepare-shapes /tmp/shapes         # multi-class, colour-coded masks on real photos
    flock /tmp/lensforge-cpu.lock python bench/segment.py speed  # img/s at the crop size, predict 2048x1536

ISBI-2012's official test images have no public masks, so the measurement holds out the last five
training images (25-29) as a fixed test split, arranged as root/{train,test}/{images,masks}/. Data is
read from ../shared/datasets as a user's download would be, and written under /tmp, never into the repo.
"""
from __future__ import annotations

import argparse
import json
import platform
import sys
import time
import zipfile
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared" / "datasets"
RESULTS = REPO / "bench" / "results"


def prepare_isbi(dest: Path, zip_path: Path = SHARED / "isbi2012-membrane.zip") -> None:
    with zipfile.ZipFile(zip_path) as zf:
        for i in range(30):
            split = "train" if i < 25 else "test"
            for src, sub in (("image", "images"), ("label", "masks")):
                out = dest / split / sub / f"{i}.png"
                out.parent.mkdir(parents=True, exist_ok=True)
                out.write_bytes(zf.read(f"membrane/train/{src}/{i}.png"))
    print(f"{dest}: train 0-24 (25 images), test 25-29 (5 images), masks 255 = cell interior, 0 = membrane")


def prepare_shapes(dest: Path, n_train: int = 40, n_test: int = 10, seed: int = 0) -> None:
    """A multi-class set with real variety: filled discs, squares and triangles (3 classes + background)
    drawn with random colours, sizes, rotations and partial transparency over crops of the real photos
    shipped with scikit-image (astronaut, coffee, chelsea, rocket, ...), saved as JPEG images with
    colour-coded PNG masks and a classes.csv."""
    photos = _photos()
    rng = np.random.default_rng(seed)
    dest.mkdir(parents=True, exist_ok=True)
    (dest / "classes.csv").write_text("name,r,g,b\n" + "".join(f"{k},{r},{g},{b}\n" for k, (r, g, b) in COLOURS.items()))
    for split, n in (("train", n_train), ("test", n_test)):
        for i in range(n):
            p = photos[int(rng.integers(len(photos)))][..., :3]
            h, w = min(int(rng.integers(192, 320)), p.shape[0]), min(int(rng.integers(192, 320)), p.shape[1])
            y0, x0 = int(rng.integers(0, p.shape[0] - h + 1)), int(rng.integers(0, p.shape[1] - w + 1))
            img, mask = _scene(rng, p[y0:y0 + h, x0:x0 + w], int(rng.integers(2, 7)))
            for sub in ("images", "masks"):
                (dest / split / sub).mkdir(parents=True, exist_ok=True)
            img.save(dest / split / "images" / f"{split}{i:03d}.jpg", quality=90)
            mask.save(dest / split / "masks" / f"{split}{i:03d}.png")
    print(f"{dest}: {n_train} train + {n_test} test images, 4 classes, colour masks, classes.csv")


COLOURS = {"background": (0, 0, 0), "disc": (220, 40, 40), "square": (40, 200, 40), "triangle": (40, 80, 230)}


def _photos() -> list[np.ndarray]:
    from skimage import data as skd

    photos = [getattr(skd, n)() for n in ("astronaut", "coffee", "chelsea", "rocket", "hubble_deep_field",
                                          "immunohistochemistry", "motorcycle_left", "retina") if hasattr(skd, n)]
    return [p[..., :3] if p.ndim == 3 else np.repeat(p[..., None], 3, 2) for p in photos]


def _scene(rng, photo: np.ndarray, n_shapes: int, scale: float = 1.0):
    """Shapes with random colour, size, rotation and opacity drawn over a photo; (image, colour mask)."""
    from PIL import Image, ImageDraw

    h, w = photo.shape[:2]
    img = Image.fromarray(np.ascontiguousarray(photo).astype(np.uint8)).convert("RGBA")
    mask = Image.new("RGB", (w, h), COLOURS["background"])
    names = list(COLOURS)
    for _ in range(n_shapes):
        cls = names[int(rng.integers(1, 4))]
        size = int(rng.integers(18, 60) * scale)
        cx, cy = int(rng.integers(0, w)), int(rng.integers(0, h))
        ang = float(rng.uniform(0, 2 * np.pi))
        k = 4 if cls == "square" else 3
        pts = [(cx + size * np.cos(ang + 2 * np.pi * j / k), cy + size * np.sin(ang + 2 * np.pi * j / k))
               for j in range(k)]
        fill = tuple(int(v) for v in rng.integers(0, 256, 3)) + (int(rng.integers(170, 256)),)
        layer = Image.new("RGBA", (w, h), (0, 0, 0, 0))
        dl, dm = ImageDraw.Draw(layer), ImageDraw.Draw(mask)
        if cls == "disc":
            box = [cx - size, cy - size, cx + size, cy + size]
            dl.ellipse(box, fill=fill)
            dm.ellipse(box, fill=COLOURS[cls])
        else:
            dl.polygon(pts, fill=fill)
            dm.polygon(pts, fill=COLOURS[cls])
        img = Image.alpha_composite(img, layer)
    return img.convert("RGB"), mask


def big_scene(dest: Path, seed: int = 1) -> None:
    """A 2048x1536 photo (astronaut, enlarged) with shapes at the training sizes, for predict on a large image."""
    from PIL import Image

    rng = np.random.default_rng(seed)
    photo = np.asarray(Image.fromarray(_photos()[0]).resize((2048, 1536), Image.BICUBIC))
    img, mask = _scene(rng, photo, 40)
    dest.mkdir(parents=True, exist_ok=True)
    img.save(dest / "scene2048.jpg", quality=92)
    mask.save(dest / "scene2048_truth.png")
    print(f"{dest}/scene2048.jpg: 2048x1536 with 40 shapes; truth in scene2048_truth.png")


def speed(crop: int = 256, batch: int = 4, steps: int = 6) -> dict:
    import torch

    from lensforge.engine.device import select_runtime
    from lensforge.models.segmentation import segmentation_loss
    from lensforge.specs.segment import SegmentOptions
    from lensforge.tasks.segment import model_multiple, model_spec
    from lensforge.tasks.segment_ops import predict_probs
    from lensforge.models import create_model

    rt = select_runtime("auto", "auto")
    out = {"cpu": platform.processor() or platform.machine(), "threads": torch.get_num_threads(),
           "precision": rt.precision, "crop": crop, "batch": batch}
    for model in ("unet", "deeplab"):
        opts = SegmentOptions(data="-", model=model)
        name, kw = model_spec(opts, 3, 2)
        net = create_model(name, **kw)
        opt = torch.optim.AdamW(net.parameters(), lr=1e-3)
        x = torch.rand(batch, 3, crop, crop)
        y = (torch.rand(batch, crop, crop) > 0.5).long()
        net.train()
        for i in range(steps + 1):
            if i == 1:
                t0 = time.perf_counter()
            with rt.autocast():
                loss, _ = segmentation_loss(net(x), y)
            opt.zero_grad()
            loss.backward()
            opt.step()
        train_ips = batch * steps / (time.perf_counter() - t0)
        net.eval()
        big = torch.rand(3, 1536, 2048)
        t0 = time.perf_counter()
        predict_probs(net, big, tile=256, overlap=64, multiple=model_multiple(name, kw), tta=False)
        pred_s = time.perf_counter() - t0
        out[model] = {"kwargs": kw, "params": sum(p.numel() for p in net.parameters()),
                      "train_img_per_s": round(train_ips, 2), "predict_2048x1536_s": round(pred_s, 2)}
        print(model, out[model], flush=True)
    return out


def record(run_dir: Path, name: str, command: str, note: str = "") -> None:
    res = json.loads((run_dir / "results.json").read_text())
    cfg = (run_dir / "config.yaml").read_text()
    out = {"command": command, "note": note, "run_dir": str(run_dir), "results": res, "config_yaml": cfg}
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / f"segment_{name}.json").write_text(json.dumps(out, indent=2) + "\n")
    print(f"wrote {RESULTS / f'segment_{name}.json'}")


def main() -> None:
    ap = argparse.ArgumentParser()
    sub = ap.add_subparsers(dest="cmd", required=True)
    p = sub.add_parser("prepare-isbi")
    p.add_argument("dest", type=Path)
    p = sub.add_parser("prepare-shapes")
    p.add_argument("dest", type=Path)
    p = sub.add_parser("big-scene")
    p.add_argument("dest", type=Path)
    p = sub.add_parser("speed")
    p.add_argument("--crop", type=int, default=256)
    p.add_argument("--batch", type=int, default=4)
    p = sub.add_parser("record")
    p.add_argument("run_dir", type=Path)
    p.add_argument("name")
    p.add_argument("command")
    p.add_argument("--note", default="")
    a = ap.parse_args()
    if a.cmd == "prepare-isbi":
        prepare_isbi(a.dest)
    elif a.cmd == "prepare-shapes":
        prepare_shapes(a.dest)
    elif a.cmd == "big-scene":
        big_scene(a.dest)
    elif a.cmd == "speed":
        res = speed(a.crop, a.batch)
        RESULTS.mkdir(parents=True, exist_ok=True)
        res["command"] = "flock /tmp/lensforge-cpu.lock python bench/segment.py speed " + " ".join(sys.argv[2:])
        (RESULTS / "segment_speed.json").write_text(json.dumps(res, indent=2) + "\n")
    else:
        record(a.run_dir, a.name, a.command, a.note)


if __name__ == "__main__":
    main()
