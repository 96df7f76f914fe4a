"""Neural style transfer: Gatys' per-image optimisation and Johnson's feed-forward network.

    stats = gatys("photo.jpg", "painting.jpg", "out.png", size=256)
    run = train("photos/", style="painting.jpg", epochs=4)
    load(run.dir).stylize_files(["a.jpg", "b.jpg"], out_dir="styled/")

Both minimise the same perceptual objective on a frozen ImageNet network (models/features.py):
content = feature distance to the photo at one deep layer, style = Gram-matrix distance to the
painting at several layers, plus total variation against pixel noise. Each term is divided by the
size of its target (relative error), so one `style_weight` behaves alike across feature networks,
layers and image sizes, and the reported losses are comparable between runs.
"""
from __future__ import annotations

import io
import math
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Iterable

import numpy as np
import torch
import torch.nn.functional as F

from ..data import Augment, load_dataset
from ..data.imageio import read_image
from ..data.loader import Batches
from ..engine.checkpoint import load_checkpoint
from ..engine.device import select_runtime
from ..engine.trainer import TrainConfig, fit
from ..errors import DataError, UsageError
from ..fileio import write_bytes, write_json
from ..models import create_model
from ..models.features import FeatureNet, default_weights, gram, load_feature_net, resolve_weights
from ..recipes import with_recipe
from .common import Run, restore_model, resume_checkpoint, split_options
from ..runs import new_run_dir, write_config
from .classify import expand_inputs  # noqa: F401  (same file/folder expansion as classify predict)

TASK = "stylize"


# ----------------------------------------------------------------------------- shared pieces

def feature_net(features: str | None = None, convention: str | None = None, download: bool = True) -> FeatureNet:
    """The frozen loss network: the given weights, else $LENSFORGE_FEATURE_WEIGHTS / the shared SqueezeNet."""
    spec = features or default_weights()
    if not spec:
        raise UsageError("no feature-network weights: pass --features FILE (SqueezeNet 1.1 / VGG16 / VGG19 .pth) "
                         "or --features vgg19 to download torchvision's, or set LENSFORGE_FEATURE_WEIGHTS")
    return load_feature_net(resolve_weights(spec, download=download), convention)


def to_tensor(img: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(img)).permute(2, 0, 1)[None].float().div(255)


def to_uint8(x: torch.Tensor) -> np.ndarray:
    return (x.detach().float().clamp(0, 1)[0].permute(1, 2, 0).cpu().numpy() * 255).round().astype(np.uint8)


def load_rgb(path: str | Path, longer_side: int | None = None) -> torch.Tensor:
    """(1,3,H,W) in [0,1], resized (antialiased) so its longer side is `longer_side` if given."""
    x = to_tensor(read_image(path, "RGB"))
    if longer_side:
        h, w = x.shape[-2:]
        k = longer_side / max(h, w)
        x = F.interpolate(x, size=(max(1, round(h * k)), max(1, round(w * k))), mode="bilinear",
                          antialias=k < 1, align_corners=False).clamp(0, 1)
    return x


def save_png(path: str | Path, x: torch.Tensor) -> None:
    from PIL import Image

    buf = io.BytesIO()
    fmt = "JPEG" if Path(path).suffix.lower() in (".jpg", ".jpeg") else "PNG"
    Image.fromarray(to_uint8(x)).save(buf, format=fmt, **({"quality": 95} if fmt == "JPEG" else {}))
    write_bytes(path, buf.getvalue())


class PerceptualLoss:
    """Relative content, style and TV losses against fixed targets; callable on a batch of images."""

    def __init__(self, net: FeatureNet, style: torch.Tensor):
        self.net, self.layers = net, net.layers
        with torch.no_grad():
            feats = net(style, self.layers.style)
            self.style_grams = {i: gram(f) for i, f in feats.items()}
        self.style_norm = {i: g.pow(2).mean() for i, g in self.style_grams.items()}

    def content_target(self, content: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            return self.net(content, (self.layers.content,))[self.layers.content].float()

    def __call__(self, x: torch.Tensor, content_feats: torch.Tensor) -> dict[str, torch.Tensor]:
        idx = tuple(sorted(set(self.layers.style) | {self.layers.content}))
        feats = self.net(x, idx)
        fc = feats[self.layers.content].float()
        content = (fc - content_feats).pow(2).mean() / content_feats.pow(2).mean().clamp_min(1e-8)
        style = sum(((gram(feats[i]) - g).pow(2).mean() / self.style_norm[i]) for i, g in self.style_grams.items())
        style = style / len(self.style_grams)
        tv = ((x[..., 1:, :] - x[..., :-1, :]).pow(2).mean() + (x[..., :, 1:] - x[..., :, :-1]).pow(2).mean())
        return {"content": content, "style": style, "tv": tv}


def check_loss_weights(**weights: float) -> None:
    """A negative weight turns a loss term into a reward: training would run and diverge silently."""
    for name, w in weights.items():
        if w < 0:
            raise UsageError(f"--{name.replace('_', '-')} {w:g}: must be >= 0")


# ----------------------------------------------------------------------------- Gatys

def match_colour(content: torch.Tensor, style: torch.Tensor) -> torch.Tensor:
    """The content photo with the style image's RGB mean and covariance (a linear colour transfer).

    Starting Gatys from this instead of the raw photo (cf. Gatys et al. 2017, "Controlling
    perceptual factors") hands the optimiser the palette it otherwise fights the pixel range for:
    the first layer's Gram match, which carries colour, converges several times further.
    """
    cf, sf = content[0].reshape(3, -1).double(), style[0].reshape(3, -1).double()
    mc, ms = cf.mean(1, keepdim=True), sf.mean(1, keepdim=True)
    eye = 1e-5 * torch.eye(3, dtype=torch.float64, device=cf.device)
    ec, vc = torch.linalg.eigh(torch.cov(cf) + eye)
    es, vs = torch.linalg.eigh(torch.cov(sf) + eye)
    transform = (vs @ torch.diag(es.clamp_min(0).sqrt()) @ vs.T) @ (vc @ torch.diag(ec.rsqrt()) @ vc.T)
    return (transform @ (cf - mc) + ms).reshape_as(content).float().clamp(0, 1)


def gatys(content: str | Path, style: str | Path, out: str | Path | None = None, *, size: int = 256,
          steps: int = 200, style_weight: float = 1e4, content_weight: float = 1.0, tv_weight: float = 1e-3,
          optimizer: str = "lbfgs", init: str = "colour", features: str | None = None,
          convention: str | None = None, download: bool = True, device: str = "auto", seed: int = 0,
          report: str | Path | None = None) -> dict:
    """Optimise the pixels of one image (Gatys et al. 2016); returns time and start/end losses.

    L-BFGS is the default: on this smooth, well-conditioned objective it needs several times fewer
    network evaluations than Adam. The image is clamped to [0,1] between steps.
    """
    if size < 32 or size > 4096:
        raise UsageError(f"--size {size}: must be between 32 and 4096")
    if steps < 1:
        raise UsageError("--steps must be >= 1")
    check_loss_weights(style_weight=style_weight, content_weight=content_weight, tv_weight=tv_weight)
    if optimizer not in ("lbfgs", "adam") or init not in ("colour", "content", "noise"):
        raise UsageError("--optimizer must be lbfgs or adam, --init colour, content or noise")
    for role, path in (("CONTENT", content), ("STYLE", style)):
        if not Path(path).is_file():
            raise UsageError(f"{role} {path}: no such file")
    if out is not None and Path(out).suffix.lower() not in (".png", ".jpg", ".jpeg"):
        raise UsageError(f"--out {out}: give a .png or .jpg file name")
    rt = select_runtime(device, "fp32")  # L-BFGS line searches need exact losses: no bf16 here
    c = load_rgb(content, size).to(rt.device)
    s = load_rgb(style, size).to(rt.device)
    net = feature_net(features, convention, download).to(rt.device)
    t0 = time.perf_counter()
    crit = PerceptualLoss(net, s)
    target = crit.content_target(c)
    torch.manual_seed(seed)
    start = {"content": lambda: c.clone(), "colour": lambda: match_colour(c, s),
             "noise": lambda: torch.rand_like(c)}[init]()
    # Pixels are sigmoid(z): always in range without clamping. Clamping between L-BFGS steps
    # breaks its curvature estimates and stalls the colour-carrying first layer's Gram match.
    z = torch.logit(start.clamp(1 / 512, 1 - 1 / 512)).requires_grad_(True)
    weights = {"content": content_weight, "style": style_weight, "tv": tv_weight}
    history: list[dict] = []

    def total() -> torch.Tensor:
        parts = crit(torch.sigmoid(z), target)
        loss = sum(weights[k] * v for k, v in parts.items())
        history.append({k: float(v.detach()) for k, v in parts.items()} | {"total": float(loss.detach())})
        return loss

    if optimizer == "lbfgs":
        opt = torch.optim.LBFGS([z], lr=1.0, max_iter=steps, max_eval=int(steps * 1.25) + 1, history_size=50,
                                tolerance_grad=0, tolerance_change=0, line_search_fn="strong_wolfe")

        def closure():
            opt.zero_grad()
            loss = total()
            loss.backward()
            return loss
        opt.step(closure)
    else:
        opt = torch.optim.Adam([z], lr=0.05)
        for _ in range(steps):
            opt.zero_grad()
            total().backward()
            opt.step()
    with torch.no_grad():
        x = torch.sigmoid(z)
        end = crit(x, target)
        photo = crit(c, target)
    seconds = time.perf_counter() - t0
    if not all(math.isfinite(h["total"]) for h in history):
        raise FloatingPointError("style transfer diverged (non-finite loss); lower --style-weight or use --optimizer adam")
    res = {"content": str(content), "style": str(style), "out": str(out) if out else None,
           "size": list(x.shape[-2:]), "steps": steps, "evaluations": len(history), "seconds": round(seconds, 2),
           "features": net.arch, "convention": net.convention, "optimizer": optimizer,
           "init": init, "style_loss_photo": float(photo["style"]),
           "style_loss_start": history[0]["style"], "style_loss_end": float(end["style"]),
           "content_loss_start": history[0]["content"], "content_loss_end": float(end["content"]),
           "tv_start": history[0]["tv"], "tv_end": float(end["tv"]),
           "style_reduction": history[0]["style"] / max(float(end["style"]), 1e-12),
           "weights": weights, "device": str(rt.device)}
    if out is not None:
        save_png(out, x)
    if report is not None:
        write_json(report, res)
    res["image"] = x.detach()
    return res


# ----------------------------------------------------------------------------- fast network: training

@dataclass
class StyleOptions:
    data: str = ""
    style: str = ""
    size: int = 128
    style_size: int | None = None
    base: int = 16
    blocks: int = 3
    # Gatys starts from the photo, so content survives a huge style weight; a network trained from
    # scratch does not: measured on 800 crops x 5 epochs, 3 keeps the subject, 10+ paints it over.
    style_weight: float = 3.0
    content_weight: float = 1.0
    tv_weight: float = 1e-3
    features: str | None = None
    convention: str | None = None
    val_images: int = 8
    download: bool = True


class StyleTask:
    """A transformer network trained through the frozen loss network, on the engine's protocol."""

    def __init__(self, train_set, val_set, model, kwargs, crit: PerceptualLoss, cfg: TrainConfig, opts: StyleOptions,
                 rt, style_meta: dict):
        self.model, self.kwargs, self.crit, self.opts, self.rt, self.style_meta = model, kwargs, crit, opts, rt, style_meta
        self.train_batches = Batches(train_set, cfg.batch_size, device=rt.device, shuffle=True, drop_last=True,
                                     augment=Augment(flip=True), seed=cfg.seed)
        self.val_set = val_set
        self.w = {"content": opts.content_weight, "style": opts.style_weight, "tv": opts.tv_weight}

    def _losses(self, model, x):
        y = model(x)
        parts = self.crit(y, self.crit.content_target(x))
        return sum(self.w[k] * v for k, v in parts.items()), parts

    def training_step(self, model, batch):
        x, _ = batch
        loss, parts = self._losses(model, x)
        return loss, {"loss": loss.detach(), **{k: v.detach() for k, v in parts.items()}}

    @torch.no_grad()
    def evaluate(self, model) -> dict[str, float]:
        model.eval()
        sums, n = {}, 0
        for x, _ in Batches(self.val_set, 4, device=self.rt.device):
            with self.rt.autocast():
                loss, parts = self._losses(model, x)
            for k, v in {"loss": loss, **parts}.items():
                sums[k] = sums.get(k, 0.0) + float(v) * len(x)
            n += len(x)
        model.train()
        return {f"val_{k}": v / max(1, n) for k, v in sums.items()}

    def checkpoint_meta(self) -> dict:
        return {"task": TASK, "model_name": "style-transformer", "model_kwargs": self.kwargs,
                "style": self.style_meta, "options": asdict(self.opts)}


def _build(opts: StyleOptions, cfg: TrainConfig, rt):
    if opts.size < 32 or opts.size % 4:
        raise UsageError(f"--size {opts.size}: must be a multiple of 4, at least 32")
    check_loss_weights(style_weight=opts.style_weight, content_weight=opts.content_weight, tv_weight=opts.tv_weight)
    if not Path(opts.style).is_file():
        raise UsageError(f"--style {opts.style}: no such file")
    try:
        ds = load_dataset(opts.data, image_size=opts.size, channels=3, require_labels=False, download=opts.download)
    except ValueError as e:  # load_folder's own test split of a 1-image folder raises it
        raise DataError(f"{opts.data}: {e}") from None
    val = ds.test if ds.test is not None else ds.val
    if val is None:
        val = ds.train
    val = val.subset(torch.arange(min(opts.val_images, len(val))))
    style = load_rgb(opts.style, opts.style_size or 2 * opts.size).to(rt.device)
    net = feature_net(opts.features, opts.convention, opts.download).to(rt.device)
    net = net.to(memory_format=torch.channels_last) if rt.channels_last else net
    crit = PerceptualLoss(net, style)
    meta = {"file": str(opts.style), "size": list(style.shape[-2:]), "features": net.arch, "convention": net.convention,
            "thumbnail": (to_tensor(to_uint8(F.interpolate(style, size=(64, 64), mode="area")))[0] * 255).to(torch.uint8)}
    return ds.train, val, crit, meta, style


def train(data: str = "", *, style: str = "", out: str | Path | None = None, resume: str | Path | None = None,
          **options) -> Run:
    """Train a fast style network on a folder of photos and write a run folder with report."""
    if resume is not None:
        return _resume(Path(resume), progress=options.get("progress", True))
    options = with_recipe(TASK, {**options, "monitor": "val_loss", "mode": "min"})
    opts, cfg = split_options(options, StyleOptions, data=str(data), style=str(style))
    rt = select_runtime(cfg.device, cfg.precision)
    train_set, val, crit, meta, style_img = _build(opts, cfg, rt)
    kwargs = {"base": opts.base, "blocks": opts.blocks}
    torch.manual_seed(cfg.seed)
    net = create_model("style-transformer", **kwargs)
    run_dir = new_run_dir(TASK, f"{Path(opts.style).stem}-fast", out)
    return _train_and_report(run_dir, train_set, val, net, kwargs, crit, meta, cfg, opts, rt, None)


def _resume(run_dir: Path, progress: bool = True) -> Run:
    state, opts, cfg = resume_checkpoint(run_dir, TASK, StyleOptions, progress)
    rt = select_runtime(cfg.device, cfg.precision)
    train_set, val, crit, meta, _ = _build(opts, cfg, rt)
    net = create_model("style-transformer", **state["model_kwargs"])
    return _train_and_report(run_dir, train_set, val, net, state["model_kwargs"], crit, meta, cfg, opts, rt, state)


def _train_and_report(run_dir, train_set, val, net, kwargs, crit, meta, cfg, opts, rt, resume_state) -> Run:
    task = StyleTask(train_set, val, net, kwargs, crit, cfg, opts, rt, meta)
    config = {"task": TASK, **asdict(opts), "train": asdict(cfg), "runtime": rt.describe(), "model_kwargs": kwargs,
              "features": meta["features"], "convention": meta["convention"], "train_images": len(train_set)}
    write_config(run_dir, config)
    result = fit(task, cfg, run_dir, resume=resume_state)
    best = load_checkpoint(run_dir / "weights" / "best.pt", task=TASK)
    net.load_state_dict(best["model"])
    net.eval()
    results = {"best_epoch": result.best_epoch, "epochs_run": len(result.history),
               "train_seconds": round(result.train_seconds, 2), **rt.describe()}
    last = result.history[result.best_epoch - 1] if result.best_epoch else result.history[-1]
    results.update({k: v for k, v in last.items() if k.startswith("val_")})
    first = result.history[0]
    results["first_epoch_val_style"] = first.get("val_style")
    x, _ = val.take(torch.arange(min(4, len(val))))
    x = x.float().div(255).to(rt.device)
    with torch.no_grad(), rt.autocast():
        y = net(x).float()
    from ..report import plot_curves, save_image_grid_png
    save_image_grid_png(torch.cat([x, y]).cpu(), run_dir / "samples.png", ncols=len(x))
    plot_curves(result.history, run_dir / "curves.png")
    write_json(run_dir / "results.json", results)
    from ..report import write_report
    images = [(c, str(run_dir / f)) for c, f in (("Validation photos (top) and stylised (bottom)", "samples.png"),
                                                  ("Training curves", "curves.png"))]
    write_report(run_dir / "report.html", title=f"lensforge stylize: {Path(opts.style).name}", summary=results,
                 images=images, config=config)
    return Run(run_dir, results, result.history)


# ----------------------------------------------------------------------------- fast network: use

@dataclass
class Stylized:
    file: str
    out: str | None = None
    seconds: float = 0.0
    error: str | None = None


class StyleNet:
    """A trained feed-forward style network; works on any image size."""

    def __init__(self, ckpt: dict, device: str = "auto"):
        self.rt = select_runtime(device, "auto")
        self.model = restore_model(ckpt, "style-transformer", "the style network")
        fmt = torch.channels_last if self.rt.channels_last else torch.contiguous_format
        self.model.to(self.rt.device, memory_format=fmt).eval()
        self.style = ckpt.get("style", {})

    @torch.no_grad()
    def stylize(self, x: torch.Tensor) -> torch.Tensor:
        """(1,3,H,W) in [0,1] -> same shape, stylised."""
        fmt = torch.channels_last if self.rt.channels_last else torch.contiguous_format
        with self.rt.autocast():
            return self.model(x.to(self.rt.device).contiguous(memory_format=fmt)).float()

    def stylize_files(self, files: Iterable[str | Path], out_dir: str | Path, size: int | None = None) -> list[Stylized]:
        """Stylise each file into out_dir/<stem>.png; an unreadable file gets `error`, the rest go on."""
        results = []
        for f in files:
            try:
                x = load_rgb(f, size)
            except DataError as e:
                results.append(Stylized(str(f), error=str(e)))
                continue
            t0 = time.perf_counter()
            y = self.stylize(x)
            seconds = time.perf_counter() - t0
            dest = Path(out_dir) / f"{Path(f).stem}.png"
            save_png(dest, y)
            results.append(Stylized(str(f), str(dest), seconds))
        return results


def load(weights: str | Path, device: str = "auto") -> StyleNet:
    """Load a trained fast style network (a .pt file or a run folder) safely (weights_only)."""
    return StyleNet(load_checkpoint(weights, task=TASK), device=device)
