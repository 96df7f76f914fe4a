"""Real inputs for each exported part: the run's own images (and codes, noise for generators).

Parity is measured where it matters, on what the graph will be fed in use: images from the
data the run was trained on, prepared exactly as in training; the codes an encoder makes of them
for decoders; seeded prior noise for generators. When the run's data cannot be read here (a
folder on another machine), seeded random inputs are used and the note says so.
"""
from __future__ import annotations

import numpy as np
import torch

from ..errors import LensforgeError
from .graphs import Plan


def run_split(meta: dict, split: str = "test"):
    """(TensorSet/FileSet of `split` (test, else train), dataset) of the data a checkpoint was
    trained on, read without downloading; raises LensforgeError/OSError when it cannot be read."""
    from ..data import load_dataset

    opts = meta.get("options") or {}
    data = opts.get("data")
    if not data:
        raise LensforgeError("the checkpoint does not say what data it was trained on")
    pre = meta.get("preprocess")
    kwargs: dict = {"data_dir": opts.get("data_dir"), "download": False, "require_labels": False}
    if meta.get("task") in ("colorize", "stylize"):
        kwargs.update(image_size=opts.get("image_size"), channels=3)
    elif pre:
        kwargs.update(image_size=list(pre["size"]), channels=pre["channels"], style=pre.get("style"))
    try:
        ds = load_dataset(data, **kwargs)
    except ValueError as e:
        raise LensforgeError(f"{data}: {e}") from None
    order = {"test": (ds.test, ds.val, ds.train), "train": (ds.train,)}[split]
    target = next(s for s in order if s is not None)
    return target, ds


def first_images(split, n: int) -> torch.Tensor:
    x, _ = split.take(torch.arange(min(n, len(split))))
    return x.float() / 255


def _read_or_say(read, what: str, errors: tuple) -> tuple[torch.Tensor | None, str]:
    """The run's own images and a note saying what they are, or None and why they could not be read
    (the caller then falls back to seeded random inputs)."""
    try:
        images = read()
    except errors as e:
        return None, f"seeded random inputs (the run's data could not be read here: {e})"
    return images, f"{len(images)} {what}"


def real_inputs(plan: Plan, n: int = 64) -> tuple[dict[str, tuple], str]:
    """{part role: input tuple} and a note saying where the inputs came from."""
    meta, task = plan.meta, plan.task
    g = torch.Generator().manual_seed(0)
    images, note = None, ""
    if task == "faceswap":
        return faceswap_inputs(plan)
    data = meta["options"].get("data")
    if task == "detect":
        images, note = _read_or_say(lambda: detect_images(meta), "letterboxed images of " + str(data),
                                    (LensforgeError, OSError, ValueError))
    elif task == "segment":
        images, note = _read_or_say(lambda: segment_images(meta), f"images of {data} (crops)",
                                    (LensforgeError, OSError, ValueError))
    elif task != "gan":
        images, note = _read_or_say(lambda: first_images(run_split(meta)[0], n), f"images of {data}",
                                    (LensforgeError, OSError))
    out: dict[str, tuple] = {}
    for part in plan.parts:
        ex = part.example
        if task == "gan":
            z = torch.randn(n, ex[0].shape[1], generator=g)
            k = int(meta.get("num_classes") or 0)
            out[part.role] = (z, torch.arange(n) % k) if k else (z,)
            note = f"{n} seeded prior draws"
        elif part.role == "decoder":
            enc = next(p for p in plan.parts if p.role == "encoder")
            x = out["encoder"][0]
            with torch.no_grad():
                codes = enc.module(x)
            codes = codes[0] if isinstance(codes, tuple) else codes
            prior = torch.randn(len(codes), codes.shape[1], generator=g)
            out[part.role] = (torch.cat([codes.float(), prior]),)
        elif task == "colorize":
            from ..color import rgb_to_lab
            from ..tasks.colorize import l_input

            if images is None:
                images = torch.rand(8, 3, *ex[0].shape[-2:], generator=g)
            m = int(meta["multiple"])
            h, w = images.shape[-2:]
            x = images[..., : h // m * m, : w // m * m]
            out[part.role] = (l_input(rgb_to_lab(x)[:, :1]),)
        elif task in ("segment", "detect"):
            x = images if images is not None else torch.rand(4, *ex[0].shape[1:], generator=g)
            out[part.role] = (x,)
        else:
            x = images if images is not None else torch.rand(n, *ex[0].shape[1:], generator=g)
            if task == "stylize":
                x = x[:8]
            out[part.role] = (x,)
    return out, note


def segment_images(meta: dict, n: int = 4, side: int = 64) -> torch.Tensor:
    """Crops (side x side, rounded to the network's multiple) of the first test images of a
    segmentation run's data, read as segment evaluate reads them."""
    from ..data.segdata import load_segmentation

    opts = meta.get("options") or {}
    if not opts.get("data"):
        raise LensforgeError("the checkpoint does not say what data it was trained on")
    d = load_segmentation(opts["data"], classes=opts.get("classes"), num_classes=len(meta["classes"]["names"])
                          if isinstance(meta.get("classes"), dict) and "names" in meta["classes"] else None,
                          mask_mode=meta.get("mask_mode") or "auto", channels=int(meta["channels"]),
                          val_fraction=opts.get("val_fraction", 0.0), test_fraction=opts.get("test_fraction", 0.2),
                          skip_unmatched=opts.get("skip_unmatched", False), seed=(meta.get("config") or {}).get("seed", 0))
    split = d.test if d.test is not None else d.train
    m = int(meta["multiple"])
    crops = []
    for img in split.images[:n]:
        h, w = img.shape[-2:]
        s = max(m, min(side, h, w) // m * m)
        crops.append(img[:, :s, :s])
    s = min(c.shape[-1] for c in crops)
    return torch.stack([c[:, :s, :s] for c in crops]).float() / 255


def detect_images(meta: dict, n: int = 4) -> torch.Tensor:
    """The first test images of a detection run's data, letterboxed as Detector.predict does."""
    from ..data.boxes import load_detection
    from ..data.detaugment import letterbox
    from ..data.imageio import read_image

    data = (meta.get("options") or {}).get("data")
    if not data:
        raise LensforgeError("the checkpoint does not say what data it was trained on")
    ds = load_detection(data)
    split = ds.splits.get("test") or next(iter(ds.splits.values()))
    out = []
    for s in split[:n]:
        boxed, _, _ = letterbox(read_image(s.read(), "RGB", name=s.name), int(meta["image_size"]))
        out.append(torch.from_numpy(np.ascontiguousarray(boxed)).permute(2, 0, 1))
    return torch.stack(out).float() / 255


def faceswap_inputs(plan: Plan, n: int = 8) -> tuple[dict[str, tuple], str]:
    """Up to `n` aligned faces of each identity, re-cut to the network's size and margin as training
    reads them, for the encoder; the codes it makes of them for both decoders."""
    from ..tasks.faceswap import load_face_set

    meta = plan.meta
    s, margin = int(meta["image_size"]), float(meta["face_margin"])
    opts = meta.get("options") or {}
    try:
        sets = [load_face_set(opts[k], s, margin) for k in ("a", "b")]
        x = torch.cat([f.images[:n] for f in sets]).float() / 255
        note = f"{len(x)} aligned faces of {opts['a']} and {opts['b']}"
    except (LensforgeError, OSError, KeyError) as e:
        x = torch.rand(2 * n, 3, s, s, generator=torch.Generator().manual_seed(0))
        note = f"seeded random inputs (the run's face sets could not be read here: {e})"
    encoder = next(p for p in plan.parts if p.role == "encoder")
    with torch.no_grad():
        codes = encoder.module(x)
    return {p.role: (x,) if p is encoder else (codes,) for p in plan.parts}, note
