"""Neural style transfer: Gatys' per-image optimisation and Johnson's feed-forward network.

    stats = gatys("photo.jpg", "painting.jpg", "out.png", long_side=256)
    run = train("photos/", style="painting.jpg", epochs=4)
    load(run.dir).stylize_files(["a.jpg", "b.jpg"], out_dir="styled/")

Both minimise the same perceptual objective on a frozen ImageNet network (models/features.py):
content = feature distance to the photo at one deep layer, style = Gram-matrix distance to the
painting at several layers, plus total variation against pixel noise. Each term is divided by the
size of its target (relative error), so one `style_weight` behaves alike across feature networks,
layers and image sizes, and the reported losses are comparable between runs.

Options are the dataclasses of lensforge.specs.stylize (checked by lensforge.options.make, the
same checks as the CLI); the fast network trains on the one lifecycle (tasks.lifecycle.run).
"""
from __future__ import annotations

import math
import time
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from ..data import Augment, load_dataset
from ..data.imageio import image_size, read_image
from ..data.loader import Batches
from ..engine.checkpoint import load_checkpoint
from ..engine.device import select_runtime
from ..errors import DataError, LensforgeError, UsageError
from ..fileio import write_json
from ..models.features import FeatureNet, gram, load_feature_net, resolve_weights
from ..options import make
from ..specs.stylize import ApplyOptions, GatysOptions, StyleOptions
from .apply import accepts_onnx, InputFile, Record, expand_inputs, save_image, to_uint8, unique_stems
from .colorize import refuse_beyond_memory
from .common import data_summary, restore_model
from .lifecycle import Run, TrainableTask, run

TASK = "stylize"
#: Image-sized float32 vectors L-BFGS keeps: 2 x history_size (50) for its curvature pairs, plus ~6
#: working copies (pixels, gradient, direction, previous gradient...).
_LBFGS_VECTORS = 106
_ADAM_VECTORS = 6
#: float32 planes per pixel of the fast network at base width 16 (scale linearly with width), from the
#: growth of peak RSS on the CPU: training (forward + backward, 512 px) 1892 B/px, inference (1024 px) 526 B/px.
TRANSFORMER_TRAIN_PLANES = 475
TRANSFORMER_INFER_PLANES = 132


# ----------------------------------------------------------------------------- shared pieces

def feature_net(features: str | None = None, convention: str | None = None, download: bool = True) -> FeatureNet:
    """The frozen loss network: the given weights, else $LENSFORGE_FEATURE_WEIGHTS, else torchvision's
    SqueezeNet 1.1 downloaded once into the cache (models/features.py)."""
    return load_feature_net(resolve_weights(features, download=download), convention)


def to_tensor(img: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(img)).permute(2, 0, 1)[None].float().div(255)


def fit_long_side(h: int, w: int, long_side: int | None) -> tuple[int, int]:
    """(h, w) scaled so the longer side is `long_side` (unchanged for None)."""
    if not long_side:
        return h, w
    k = long_side / max(h, w)
    return max(1, round(h * k)), max(1, round(w * k))


def load_rgb(source: str | Path | bytes, long_side: int | None = None, name: str | None = None) -> torch.Tensor:
    """(1,3,H,W) in [0,1], resized (antialiased) so its longer side is `long_side` if given."""
    x = to_tensor(read_image(source, "RGB", name=name))
    h, w = x.shape[-2:]
    size = fit_long_side(h, w, long_side)
    if size != (h, w):
        x = F.interpolate(x, size=size, mode="bilinear", antialias=size[0] < h, align_corners=False).clamp(0, 1)
    return x


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


def gatys_bytes(h: int, w: int, net: FeatureNet, optimizer: str) -> float:
    """Estimated peak memory of Gatys at h x w: the optimiser's image-sized vectors and the feature
    network's activations kept for the backward pass."""
    vectors = _LBFGS_VECTORS if optimizer == "lbfgs" else _ADAM_VECTORS
    return h * w * (3 * 4 * vectors + net.train_bytes_per_pixel)


def gatys(content: str | Path, style: str | Path, out: str | Path | None = None, **options) -> dict:
    """Optimise the pixels of one image (Gatys et al. 2016); returns time and start/end losses.

    `options` are GatysOptions fields (long_side, steps, style_weight, optimizer, init, features,
    ...), checked exactly as on the command line. L-BFGS is the default: on this smooth,
    well-conditioned objective it needs several times fewer network evaluations than Adam.
    """
    o = make(GatysOptions, {"content": str(content), "style": str(style), "out": None if out is None else str(out),
                            **options})
    for role, path in (("CONTENT", o.content), ("STYLE", o.style)):
        if not Path(path).is_file():
            raise UsageError(f"{role} {path}: no such file")
    rt = select_runtime(o.device, "fp32")  # L-BFGS line searches need exact losses: no bf16 here
    net = feature_net(o.features, o.convention, o.download)
    w0, h0, _ = image_size(o.content)
    h, w = fit_long_side(h0, w0, o.long_side)
    refuse_beyond_memory(gatys_bytes(h, w, net, o.optimizer), rt.device, f"stylize run at {w}x{h} with {o.optimizer}",
                         "lower --long-side" + (" or use --optimizer adam" if o.optimizer == "lbfgs" else ""))
    c = load_rgb(o.content, o.long_side).to(rt.device)
    s = load_rgb(o.style, o.long_side).to(rt.device)
    net = net.to(rt.device)
    t0 = time.perf_counter()
    crit = PerceptualLoss(net, s)
    target = crit.content_target(c)
    torch.manual_seed(o.seed)
    start = {"content": lambda: c.clone(), "colour": lambda: match_colour(c, s),
             "noise": lambda: torch.rand_like(c)}[o.init]()
    # Pixels are sigmoid(z): always in range without clamping. Clamping between L-BFGS steps
    # breaks its curvature estimates and stalls the colour-carrying first layer's Gram match.
    z = torch.logit(start.clamp(1 / 512, 1 - 1 / 512)).requires_grad_(True)
    weights = {"content": o.content_weight, "style": o.style_weight, "tv": o.tv_weight}
    history: list[dict] = []

    def total() -> torch.Tensor:
        parts = crit(torch.sigmoid(z), target)
        loss = sum(weights[k] * v for k, v in parts.items())
        history.append({k: float(v.detach()) for k, v in parts.items()} | {"total": float(loss.detach())})
        return loss

    if o.optimizer == "lbfgs":
        opt = torch.optim.LBFGS([z], lr=1.0, max_iter=o.steps, max_eval=int(o.steps * 1.25) + 1, history_size=50,
                                tolerance_grad=0, tolerance_change=0, line_search_fn="strong_wolfe")

        def closure():
            opt.zero_grad()
            loss = total()
            loss.backward()
            return loss
        opt.step(closure)
    else:
        opt = torch.optim.Adam([z], lr=0.05)
        for _ in range(o.steps):
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
    res = {"content": o.content, "style": o.style, "out": o.out, "long_side": o.long_side,
           "size": list(x.shape[-2:]), "steps": o.steps, "evaluations": len(history), "seconds": round(seconds, 2),
           "features": net.arch, "convention": net.convention, "optimizer": o.optimizer,
           "init": o.init, "style_loss_photo": float(photo["style"]),
           "style_loss_start": history[0]["style"], "style_loss_end": float(end["style"]),
           "content_loss_start": history[0]["content"], "content_loss_end": float(end["content"]),
           "tv_start": history[0]["tv"], "tv_end": float(end["tv"]),
           "style_reduction": history[0]["style"] / max(float(end["style"]), 1e-12),
           "weights": weights, "device": str(rt.device)}
    if o.out is not None:
        save_image(o.out, x[0])
    if o.report is not None:
        write_json(o.report, res)
    res["image"] = x.detach()
    return res


# ----------------------------------------------------------------------------- fast network: training

class StyleTask(TrainableTask):
    """A transformer network trained through the frozen loss network, on the one lifecycle."""

    name = TASK
    Options = StyleOptions

    def setup(self) -> None:
        opts, cfg, rt = self.opts, self.cfg, self.rt
        if not Path(opts.style).is_file():
            raise UsageError(f"--style {opts.style}: no such file")
        try:
            ds = load_dataset(opts.data, image_size=opts.image_size, channels=3, require_labels=False,
                              download=opts.download)
        except ValueError as e:  # load_folder's own test split of a 1-image folder raises it
            raise DataError(f"{opts.data}: {e}") from None
        val = ds.test if ds.test is not None else ds.val
        if val is None:
            val = ds.train
        self.ds = ds
        self.train_set, self.val = ds.train, val.subset(torch.arange(min(opts.val_images, len(val))))
        net = feature_net(opts.features, opts.convention, opts.download)
        s = opts.image_size
        need = cfg.batch_size * s * s * (net.train_bytes_per_pixel + transformer_bytes_per_pixel(opts.base, True))
        refuse_beyond_memory(need, rt.device, f"training at {s}x{s} with --batch-size {cfg.batch_size}",
                             "lower --batch-size or --image-size")
        style = load_rgb(opts.style, opts.style_long_side or 2 * s).to(rt.device)
        net = net.to(rt.device)
        net = net.to(memory_format=torch.channels_last) if rt.channels_last else net
        self.crit = PerceptualLoss(net, style)
        thumb = to_uint8(F.interpolate(style, size=(64, 64), mode="area")[0])       # (64,64,3) uint8
        self.style_meta = {"file": str(opts.style), "size": list(style.shape[-2:]), "features": net.arch,
                           "convention": net.convention, "thumbnail": torch.from_numpy(thumb).permute(2, 0, 1).contiguous()}
        self.model_name, self.model_kwargs = "style-transformer", {"base": opts.base, "blocks": opts.blocks}
        self.w = {"content": opts.content_weight, "style": opts.style_weight, "tv": opts.tv_weight}
        self.train_batches = Batches(self.train_set, cfg.batch_size, device=rt.device, shuffle=True, drop_last=True,
                                     augment=Augment(flip=True), seed=cfg.seed)

    def run_name(self) -> str:
        return f"{Path(self.opts.style).stem}-fast"

    def summary(self) -> str:
        m = self.style_meta
        return (f"{data_summary(self.opts.data, self.ds)}; style {Path(m['file']).name} at "
                f"{m['size'][1]}x{m['size'][0]}, {m['features']} features ({m['convention']})")

    def title(self) -> str:
        return f"lensforge stylize: {Path(self.opts.style).name}"

    def config_extra(self) -> dict:
        return {"features": self.style_meta["features"], "convention": self.style_meta["convention"],
                "train_images": len(self.train_set)}

    def extra_meta(self) -> dict:
        return {"style": self.style_meta}

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
        for x, _ in Batches(self.val, 4, device=self.rt.device):
            with self.rt.autocast():
                loss, parts = self._losses(model, x)
            for k, v in {"loss": loss, **parts}.items():
                sums[k] = sums.get(k, 0.0) + float(v) * len(x)
            n += len(x)
        model.train()
        return {f"val_{k}": v / max(1, n) for k, v in sums.items()}

    @torch.no_grad()
    def final_results(self, run_dir: Path, fit) -> dict:
        from ..report import save_image_grid_png

        history = fit.history
        best = history[fit.best_epoch - 1] if fit.best_epoch else history[-1]
        results = {k: v for k, v in best.items() if k.startswith("val_")}
        results["first_epoch_val_style"] = history[0].get("val_style")
        net = self.model.to(self.rt.device).eval()
        x, _ = self.val.take(torch.arange(min(4, len(self.val))))
        x = x.float().div(255).to(self.rt.device)
        with self.rt.autocast():
            y = net(x).float()
        save_image_grid_png(torch.cat([x, y]).cpu(), run_dir / "samples.png", ncols=len(x))
        self.figures.append(("Validation photos (top) and stylised (bottom)", "samples.png"))
        return results


def transformer_bytes_per_pixel(base: int, training: bool) -> float:
    """Estimated peak bytes per pixel of the fast network (models/style.py) at width `base`."""
    return 4.0 * (TRANSFORMER_TRAIN_PLANES if training else TRANSFORMER_INFER_PLANES) * base / 16


def train(data: str | None = None, *, style: str | None = None, out: str | Path | None = None,
          resume: str | Path | None = None, **options) -> Run:
    """Train a fast style network on a folder of photos and write a run folder with report.

    `options` are StyleOptions or TrainConfig fields (image_size, base, blocks, style_weight,
    features, epochs, ...); defaults are the stylize recipe, exactly as on the command line."""
    if style is not None:
        options["style"] = str(style)
    return run(StyleTask, data, out=out, resume=resume, **options)


# ----------------------------------------------------------------------------- fast network: use

class StyleNet:
    """A trained feed-forward style network; works on any image size."""

    def __init__(self, ckpt: dict, device: str = "auto"):
        self.rt = select_runtime(device, "auto")
        self.model = restore_model(ckpt, "style-transformer", "the style network")
        self.fmt = torch.channels_last if self.rt.channels_last else torch.contiguous_format
        self.model.to(self.rt.device, memory_format=self.fmt).eval()
        self.base = int(ckpt["model_kwargs"].get("base", 16))
        self.style = ckpt.get("style", {})

    def memory_needed(self, h: int, w: int) -> float:
        """Estimated peak bytes to stylise an h x w image (the network plus input/output copies)."""
        return h * w * (transformer_bytes_per_pixel(self.base, False) + 4.0 * 12)

    @torch.no_grad()
    def stylize(self, x: torch.Tensor) -> torch.Tensor:
        """(1,3,H,W) in [0,1] -> same shape, stylised; refused in one line (UsageError) when the
        estimated memory does not fit."""
        h, w = x.shape[-2:]
        refuse_beyond_memory(self.memory_needed(h, w), self.rt.device, f"stylising {w}x{h}",
                             "pass --long-side to shrink the image")
        with self.rt.autocast():
            return self.model(x.to(self.rt.device).contiguous(memory_format=self.fmt)).float()

    def stylize_files(self, inputs: Iterable[str | Path | InputFile], out_dir: str | Path,
                      long_side: int | None = None) -> list[Record]:
        """Stylise each input into out_dir/<stem>.png; one Record per input with values out and
        seconds, or the error (unreadable, too large) while the rest go on."""
        items = [i if isinstance(i, InputFile) else InputFile(str(i), Path(i)) for i in inputs]
        records = []
        for item, stem in zip(items, unique_stems(items)):
            try:
                x = load_rgb(item.source(), long_side, name=item.name)
                t0 = time.perf_counter()
                y = self.stylize(x)
            except LensforgeError as e:
                msg = str(e)
                records.append(Record(item.name, error=msg if msg.startswith(item.name) else f"{item.name}: {msg}"))
                continue
            seconds = time.perf_counter() - t0
            dest = save_image(Path(out_dir) / f"{stem}.png", y[0])
            records.append(Record(item.name, {"out": str(dest), "seconds": round(seconds, 4)}))
        return records


@accepts_onnx(TASK)
def load(weights: str | Path, device: str = "auto") -> StyleNet:
    """Load a trained fast style network (a .pt file or a run folder) safely (weights_only)."""
    return StyleNet(load_checkpoint(weights, task=TASK), device=device)


def apply(weights: str | Path, inputs: Sequence[str | Path], out: str | Path, **options) -> list[Record]:
    """`lensforge stylize apply` as a function: options are ApplyOptions fields (long_side, device),
    checked before the model is loaded."""
    o = make(ApplyOptions, {"weights": str(weights), "inputs": [str(i) for i in inputs], "out": str(out), **options})
    files = expand_inputs(o.inputs)
    net = load(o.weights, device=o.device)
    return net.stylize_files(files, o.out, long_side=o.long_side)
