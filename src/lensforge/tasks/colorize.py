"""Colourisation: a U-Net that sees lightness (L) and predicts chroma (ab) in Lab space.

    run = train("../shared/datasets/cifar10-jpeg.zip", epochs=4)
    col = load(run.dir)
    col.colorize_files(["old_photo.jpg"], out_dir="coloured/")

Regressing ab with L2/L1 gives sepia: for an object that may be red or blue, the loss-optimal
answer is the grey average. Following Zhang et al. (2016), chroma is instead classified into
quantised ab bins (10x10 Lab units, in-gamut only), with soft targets, class rebalancing towards
rare saturated colours, and an "annealed mean" decode. Two decode knobs trade vividness against
per-pixel accuracy: the temperature, and how much of the rebalancing bias is divided back out
("correction"). Both are chosen on a validation split (never the test set): the most colourful
setting that still beats the grey image in PSNR.
"""
from __future__ import annotations

import io
import json
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np
import torch
import torch.nn.functional as F
import yaml

from ..color import colourfulness, lab_to_rgb, psnr, rgb_to_lab, ssim
from ..data import Augment, load_dataset
from ..data.imageio import read_image
from ..data.loader import Batches
from ..engine.checkpoint import load_checkpoint, save_checkpoint
from ..engine.device import Runtime, select_runtime
from ..engine.trainer import TrainConfig, fit
from ..errors import DataError, UsageError
from ..fileio import write_bytes, write_json
from ..models import create_model
from ..recipes import with_recipe
from .common import Run, restore_model, resume_checkpoint, split_options, split_sizes
from ..runs import new_run_dir, write_config
from .classify import expand_inputs  # noqa: F401  (same file/folder expansion as classify predict)

TASK = "colorize"
BIN = 10.0                      # ab bin side, Lab units (Zhang et al.)
SIGMA = 5.0                     # soft-encoding and prior-smoothing width, Lab units
TEMPERATURES = (1.0, 0.8, 0.7, 0.6, 0.5, 0.38)
CORRECTIONS = (0.0, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0)


@dataclass
class ColorizeOptions:
    """Task options on top of TrainConfig; all of them land in config.yaml."""

    data: str = "cifar10"
    data_dir: str | None = None
    size: int | None = None          # train/model resolution for folders (default: probed, 32 for CIFAR)
    base: int = 32                   # U-Net width
    depth: int = 3
    rebalance: float = 0.5           # 0 = plain soft cross-entropy, 1 = fully inverse-frequency weights
    val_fraction: float = 0.05
    eval_images: int = 0             # 0 = the whole test split
    download: bool = True


# ----------------------------------------------------------------------------- ab quantisation

_BINS: torch.Tensor | None = None


def ab_bins() -> torch.Tensor:
    """(Q,2) centres of the 10x10 ab cells that hold at least one displayable sRGB colour."""
    global _BINS
    if _BINS is None:
        grid = torch.arange(-110, 111, BIN)
        a, b = torch.meshgrid(grid, grid, indexing="ij")
        ab = torch.stack([a.flatten(), b.flatten()], 1)
        L = torch.linspace(1, 99, 50)
        lab = torch.stack([L.view(-1, 1).expand(-1, len(ab)), ab[:, 0].expand(len(L), -1),
                           ab[:, 1].expand(len(L), -1)], 0)[None]          # (1,3,nL,Q)
        rgb = lab_to_rgb(lab, clamp=False)[0]
        ok = ((rgb >= -1e-3) & (rgb <= 1 + 1e-3)).all(0).any(0)
        _BINS = ab[ok].float()
    return _BINS


_LUT: dict = {}
_LUT_RANGE = 128    # ab are tabulated on a 1-unit grid over [-128, 127], the whole Lab range


def _soft_lut(bins: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Soft encodings for every integer (a, b): a 65k-entry lookup replaces a per-pixel nearest-bin
    search that cost more than the U-Net's forward pass on a CPU."""
    key = (hash(bins.float().cpu().numpy().tobytes()), k)
    if key not in _LUT:
        g = torch.arange(-_LUT_RANGE, _LUT_RANGE, dtype=torch.float32)
        a, b = torch.meshgrid(g, g, indexing="ij")
        ab = torch.stack([a.flatten(), b.flatten()], 1)
        d2 = torch.cdist(ab, bins.float()).pow(2)
        dist, idx = d2.topk(k, dim=1, largest=False)
        _LUT.clear()
        _LUT[key] = (idx, torch.softmax(-dist / (2 * SIGMA ** 2), dim=1))
    return _LUT[key]


def encode_soft(ab: torch.Tensor, bins: torch.Tensor, k: int = 5) -> tuple[torch.Tensor, torch.Tensor]:
    """(N,2) ab -> indices (N,k) of the nearest bins and their Gaussian weights (N,k), summing to 1."""
    idx, w = _soft_lut(bins, k)
    q = (ab.float().round().clamp(-_LUT_RANGE, _LUT_RANGE - 1) + _LUT_RANGE).long()
    cell = (q[:, 0] * (2 * _LUT_RANGE) + q[:, 1]).cpu()
    return idx[cell].to(ab.device), w[cell].to(ab.device)


def class_weights(prior: torch.Tensor, bins: torch.Tensor, strength: float) -> torch.Tensor:
    """Zhang's rebalancing: w ~ 1 / ((1-s) * smoothed prior + s / Q), scaled so E_prior[w] = 1.

    `strength` here is Zhang's 1 - lambda, so 0 switches rebalancing off (all weights 1).
    """
    if strength <= 0:
        return torch.ones(len(bins))
    d2 = torch.cdist(bins, bins).pow(2)
    smooth = (torch.exp(-d2 / (2 * SIGMA ** 2)) @ prior)
    smooth = smooth / smooth.sum()
    lam = 1.0 - strength
    w = 1.0 / (lam * smooth + (1 - lam) / len(bins))
    return w / (smooth * w).sum()


def empirical_prior(data, bins: torch.Tensor, max_images: int = 2000) -> torch.Tensor:
    """Frequency of each ab bin over (a sample of) the training images."""
    n = len(data)
    idx = torch.linspace(0, n - 1, min(n, max_images)).long()
    counts = torch.zeros(len(bins))
    for chunk in idx.split(256):
        x, _ = data.take(chunk)
        ab = rgb_to_lab(x.float() / 255)[:, 1:].permute(0, 2, 3, 1).reshape(-1, 2)
        nearest = torch.cdist(ab, bins).argmin(1)
        counts += torch.bincount(nearest, minlength=len(bins)).float()
    return (counts + 1e-3) / (counts + 1e-3).sum()


def decode(logits: torch.Tensor, bins: torch.Tensor, temperature: float, class_weights: torch.Tensor | None = None,
           correction: float = 0.0) -> torch.Tensor:
    """(B,Q,H,W) logits -> (B,2,H,W) ab by the annealed mean: softmax(log p / T) averaged over bins.

    T = 1 is the distribution mean, T -> 0 the mode (vivid, blotchy). Training with rebalancing
    makes the network predict p(q) * w(q), biased towards saturated colours; `correction` c in
    [0,1] divides w**c back out (c = 1 gives the calibrated posterior: best PSNR, dullest).
    """
    logits = logits.float()
    if correction and class_weights is not None:
        logits = logits - correction * class_weights.to(logits.device).log().view(1, -1, 1, 1)
    p = torch.softmax(logits / temperature, dim=1)
    return torch.einsum("bqhw,qc->bchw", p, bins.to(logits.device))


def l_input(L: torch.Tensor) -> torch.Tensor:
    """Lightness 0..100 -> about -1..1, the range the U-Net's first layer was initialised for."""
    return L / 50.0 - 1.0


# ----------------------------------------------------------------------------- training task

class ColorizeTask:
    """Binds image data and a U-Net to the engine's step/evaluate protocol."""

    def __init__(self, train_set, val_set, model, model_kwargs: dict, bins, weights, cfg: TrainConfig,
                 opts: ColorizeOptions, rt: Runtime, size: tuple[int, int]):
        self.model, self.model_kwargs, self.bins, self.weights = model, model_kwargs, bins, weights
        self.opts, self.rt, self.size, self.cfg = opts, rt, size, cfg
        self.train_batches = Batches(train_set, cfg.batch_size, device=rt.device, shuffle=True, drop_last=True,
                                     augment=Augment(flip=True), seed=cfg.seed)
        self.val_set = val_set

    def loss(self, model, rgb: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        lab = rgb_to_lab(rgb)
        logits = model(l_input(lab[:, :1])).float()
        q = logits.shape[1]
        logp = logits.permute(0, 2, 3, 1).reshape(-1, q).log_softmax(1)
        idx, w = encode_soft(lab[:, 1:].permute(0, 2, 3, 1).reshape(-1, 2), self.bins)
        pixel_w = self.weights.to(logp.device)[idx[:, 0]]
        ce = -(logp.gather(1, idx) * w).sum(1)
        return (ce * pixel_w).mean(), logits

    def training_step(self, model, batch):
        x, _ = batch
        loss, _ = self.loss(model, x)
        return loss, {"loss": loss.detach()}

    @torch.no_grad()
    def evaluate(self, model) -> dict[str, float]:
        if self.val_set is None:
            return {}
        model.eval()
        total, n, ps = 0.0, 0, []
        for x, _ in Batches(self.val_set, 256, device=self.rt.device):
            with self.rt.autocast():
                loss, logits = self.loss(model, x)
            total += float(loss) * len(x)
            n += len(x)
            lab = rgb_to_lab(x)
            out = lab_to_rgb(torch.cat([lab[:, :1], decode(logits, self.bins, 0.38)], 1))
            ps.append(psnr(out, x))
        model.train()
        return {"val_loss": total / max(1, n), "val_psnr": float(torch.cat(ps).mean())}

    def checkpoint_meta(self) -> dict:
        return {"task": TASK, "model_name": "unet", "model_kwargs": self.model_kwargs,
                "bins": self.bins.clone(), "class_weights": self.weights.clone(), "size": list(self.size),
                "temperature": 0.38, "correction": 0.0, "options": asdict(self.opts)}


def _build(opts: ColorizeOptions, cfg: TrainConfig):
    if not 0 <= opts.rebalance <= 1:
        raise UsageError("--rebalance must be in [0, 1]")
    if opts.depth < 1 or opts.base < 4:
        raise UsageError("--depth must be >= 1 and --base >= 4")
    m = 2 ** opts.depth
    if opts.size is not None and (opts.size < m or opts.size % m):
        raise UsageError(f"--size {opts.size}: must be a multiple of {m} (2**depth)")
    try:
        ds = load_dataset(opts.data, data_dir=opts.data_dir, download=opts.download, image_size=opts.size,
                          channels=3, require_labels=False, val_fraction=opts.val_fraction, seed=cfg.seed)
    except ValueError as e:  # load_folder's own test split of a 1-image folder raises it
        raise DataError(f"{opts.data}: {e}") from None
    c, h, w = ds.train.shape
    if c != 3:
        raise DataError(f"{opts.data}: colourisation needs colour images, these have {c} channel(s)")
    if h % m or w % m:
        raise UsageError(f"{opts.data}: images are {h}x{w}; pass --size S with S a multiple of {m}")
    return ds, (h, w)


def train(data: str = "cifar10", *, out: str | Path | None = None, resume: str | Path | None = None, **options) -> Run:
    """Train a colouriser and write a complete run folder (weights, results.json, report.html)."""
    if resume is not None:
        return _resume(Path(resume), progress=options.get("progress", True))
    options = with_recipe(TASK, {**options, "monitor": "val_loss", "mode": "min"})
    opts, cfg = split_options(options, ColorizeOptions, data=str(data))
    rt = select_runtime(cfg.device, cfg.precision)
    ds, size = _build(opts, cfg)
    bins = ab_bins()
    weights = class_weights(empirical_prior(ds.train, bins), bins, opts.rebalance)
    kwargs = {"in_channels": 1, "out_channels": len(bins), "base": opts.base, "depth": opts.depth}
    torch.manual_seed(cfg.seed)
    net = create_model("unet", **kwargs)
    name = f"{Path(opts.data).stem if not opts.data.isidentifier() else opts.data}-unet"
    run_dir = new_run_dir(TASK, name, out)
    return _train_and_report(run_dir, ds, size, net, kwargs, bins, weights, cfg, opts, rt, None)


def _resume(run_dir: Path, progress: bool = True) -> Run:
    state, opts, cfg = resume_checkpoint(run_dir, TASK, ColorizeOptions, progress)
    rt = select_runtime(cfg.device, cfg.precision)
    ds, size = _build(opts, cfg)
    net = create_model("unet", **state["model_kwargs"])
    return _train_and_report(run_dir, ds, size, net, state["model_kwargs"], state["bins"], state["class_weights"],
                             cfg, opts, rt, state)


def calibrate(run_dir: str | Path, device: str = "auto") -> dict:
    """Re-choose the decoding on the validation split and re-evaluate on test, for a finished run
    (e.g. one trained before a decoding option existed); updates best.pt, results.json, report."""
    run_dir = Path(run_dir)
    state = load_checkpoint(run_dir / "weights" / "best.pt", task=TASK)
    opts = ColorizeOptions(**state["options"])
    cfg = TrainConfig.from_dict(state["config"])
    rt = select_runtime(device, cfg.precision)
    ds, _ = _build(opts, cfg)
    results = json.loads((run_dir / "results.json").read_text()) if (run_dir / "results.json").exists() else {}
    results.update(_finalize(run_dir, ds, opts, rt))
    write_json(run_dir / "results.json", results)
    config = yaml.safe_load((run_dir / "config.yaml").read_text()) if (run_dir / "config.yaml").exists() else {}
    _write_html(run_dir, results, config or {"data": opts.data})
    return results


def _finalize(run_dir: Path, ds, opts: ColorizeOptions, rt: Runtime) -> dict:
    """Pick the decoding on validation, store it in best.pt, evaluate on test, draw the strip."""
    best_path = run_dir / "weights" / "best.pt"
    best = load_checkpoint(best_path, task=TASK)
    net = create_model("unet", **best["model_kwargs"])
    net.load_state_dict(best["model"])
    net.to(rt.device).eval()
    bins, weights = best["bins"], best["class_weights"]
    results: dict = {}
    if ds.val is not None:
        sweep = sweep_decodings(net, ds.val, bins, weights, rt)
        best["temperature"], best["correction"] = pick_decoding(sweep)
        save_checkpoint(best_path, {k: v for k, v in best.items() if k not in ("format", "version")})
        results["decoding_choice"] = "most colourful on the validation split with PSNR above the grey baseline"
        results["val_sweep"] = sweep
    results["temperature"], results["correction"] = best.get("temperature", 0.38), best.get("correction", 0.0)
    dec = (results["temperature"], weights, results["correction"])
    test = ds.test if ds.test is not None else ds.val
    if test is not None:
        if opts.eval_images and opts.eval_images < len(test):
            test = test.subset(torch.arange(opts.eval_images))
        results.update(evaluate_split(net, test, bins, dec, rt))
        # On test only the temperatures at the chosen correction: a trade-off curve for the report,
        # at a fifth of the cost of the full validation grid.
        results["test_sweep"] = sweep_decodings(net, test, bins, weights, rt, corrections=(results["correction"],))
        _comparison_strip(net, test, bins, dec, rt, run_dir / "comparison.png")
    return results


def _train_and_report(run_dir, ds, size, net, kwargs, bins, weights, cfg, opts, rt, resume_state) -> Run:
    task = ColorizeTask(ds.train, ds.val, net, kwargs, bins, weights, cfg, opts, rt, size)
    config = {"task": TASK, **asdict(opts), "train": asdict(cfg), "runtime": rt.describe(), "model_kwargs": kwargs,
              "ab_bins": len(bins), "splits": split_sizes(ds)}
    write_config(run_dir, config)
    result = fit(task, cfg, run_dir, resume=resume_state)
    results = {"best_epoch": result.best_epoch, "epochs_run": len(result.history),
               "train_seconds": round(result.train_seconds, 2), **rt.describe()}
    results.update(_finalize(run_dir, ds, opts, rt))
    from ..report import plot_curves
    plot_curves(result.history, run_dir / "curves.png")
    write_json(run_dir / "results.json", results)
    _write_html(run_dir, results, config)
    return Run(run_dir, results, result.history)


# ----------------------------------------------------------------------------- evaluation

@torch.no_grad()
def _predict_logits(net, data, rt: Runtime, batch_size: int = 256):
    """Yields (rgb, L, logits) batch by batch: logits are kept per batch, never for a whole split."""
    for x, _ in Batches(data, batch_size, device=rt.device):
        lab = rgb_to_lab(x)
        with rt.autocast():
            logits = net(l_input(lab[:, :1])).float()
        yield x, lab[:, :1], logits


@torch.no_grad()
def sweep_decodings(net, data, bins, weights, rt: Runtime, temps: Sequence[float] = TEMPERATURES,
                    corrections: Sequence[float] = CORRECTIONS) -> list[dict]:
    """PSNR and colourfulness for each (temperature, correction), plus the grey image's PSNR."""
    sums = {(t, c): [0.0, 0.0] for c in corrections for t in temps}
    grey_psnr, n = 0.0, 0
    for x, L, logits in _predict_logits(net, data, rt):
        grey = lab_to_rgb(torch.cat([L, torch.zeros_like(L), torch.zeros_like(L)], 1))
        grey_psnr += float(psnr(grey, x).sum())
        for (t, c), acc in sums.items():
            out = lab_to_rgb(torch.cat([L, decode(logits, bins, t, weights, c)], 1))
            acc[0] += float(psnr(out, x).sum())
            acc[1] += float(colourfulness(out).sum())
        n += len(x)
    return [{"temperature": t, "correction": c, "psnr": round(s[0] / n, 4), "colourfulness": round(s[1] / n, 4),
             "grey_psnr": round(grey_psnr / n, 4)} for (t, c), s in sums.items()]


def pick_decoding(sweep: list[dict], margin: float = 0.05) -> tuple[float, float]:
    """(temperature, correction) with the most colour whose PSNR still beats grey by `margin` dB;
    if none does, the one with the best PSNR."""
    ok = [row for row in sweep if row["psnr"] >= row["grey_psnr"] + margin]
    row = max(ok, key=lambda r: r["colourfulness"]) if ok else max(sweep, key=lambda r: r["psnr"])
    return row["temperature"], row.get("correction", 0.0)


@torch.no_grad()
def evaluate_split(net, data, bins, dec: tuple, rt: Runtime) -> dict:
    """PSNR/SSIM vs the original RGB for our output and for the grey (L-only) baseline, and colourfulness."""
    acc = {k: 0.0 for k in ("psnr", "ssim", "grey_psnr", "grey_ssim", "colourfulness", "original_colourfulness",
                            "grey_colourfulness")}
    n = 0
    for x, L, logits in _predict_logits(net, data, rt):
        out = lab_to_rgb(torch.cat([L, decode(logits, bins, *dec)], 1))
        grey = lab_to_rgb(torch.cat([L, torch.zeros_like(L), torch.zeros_like(L)], 1))
        for key, val in (("psnr", psnr(out, x)), ("ssim", ssim(out, x)), ("grey_psnr", psnr(grey, x)),
                         ("grey_ssim", ssim(grey, x)), ("colourfulness", colourfulness(out)),
                         ("original_colourfulness", colourfulness(x)), ("grey_colourfulness", colourfulness(grey))):
            acc[key] += float(val.sum())
        n += len(x)
    res = {f"test_{k}": round(v / n, 4) for k, v in acc.items()}
    res["test_colourfulness_ratio"] = round(acc["colourfulness"] / max(acc["original_colourfulness"], 1e-9), 4)
    res["test_images"] = n
    return res


@torch.no_grad()
def _comparison_strip(net, data, bins, dec: tuple, rt, path: Path, n: int = 8) -> None:
    from ..report import save_image_grid_png

    idx = torch.linspace(0, len(data) - 1, min(n, len(data))).long()
    x, _ = data.take(idx)
    x = x.float().to(rt.device) / 255
    lab = rgb_to_lab(x)
    with rt.autocast():
        logits = net(l_input(lab[:, :1])).float()
    ours = lab_to_rgb(torch.cat([lab[:, :1], decode(logits, bins, *dec)], 1))
    grey = lab[:, :1].repeat(1, 3, 1, 1) / 100
    scale = max(1, 128 // max(x.shape[-2:]))
    save_image_grid_png(torch.cat([grey, ours, x]).cpu(), path, ncols=len(idx), scale=scale)


def _write_html(run_dir: Path, results: dict, config: dict) -> None:
    from ..report import write_report

    summary = {k: v for k, v in results.items() if not k.endswith("_sweep")}
    images = [(c, str(run_dir / f)) for c, f in (("Rows: grey input / colourised / original (test)", "comparison.png"),
                                                  ("Training curves", "curves.png")) if (run_dir / f).exists()]
    tables = [(f"Decoding sweep ({k.split('_')[0]} split)", results[k]) for k in ("val_sweep", "test_sweep")
              if k in results]
    write_report(run_dir / "report.html", title=f"lensforge colorize: {config['data']}", summary=summary,
                 images=images, tables=tables, config=config)


# ----------------------------------------------------------------------------- loaded models

def _alpha(path: str | Path, shape: tuple[int, int]) -> np.ndarray | None:
    """The file's alpha channel, upright like read_image's pixels, or None; never raises."""
    try:
        from PIL import Image, ImageOps
        with Image.open(path) as img:
            if "A" not in img.getbands() and not (img.mode == "P" and "transparency" in img.info):
                return None
            a = np.asarray(ImageOps.exif_transpose(img.convert("RGBA")).getchannel("A"))
            return a if a.shape == shape else None
    except Exception:  # noqa: BLE001 -- alpha is a nicety; the pixels were already read fine
        return None


@dataclass
class Colorized:
    file: str
    out: str | None = None
    seconds: float = 0.0
    error: str | None = None


class Colorizer:
    """A trained colouriser: chroma predicted at the model's resolution, lightness kept at full resolution."""

    def __init__(self, ckpt: dict, device: str = "auto"):
        self.rt = select_runtime(device, "auto")
        self.model = restore_model(ckpt, "unet", "the colouriser's U-Net")
        self.model.to(self.rt.device).eval()
        self.bins = ckpt["bins"].float()
        self.size = int(min(ckpt["size"]))
        self.temperature = float(ckpt.get("temperature", 0.38))
        self.correction = float(ckpt.get("correction", 0.0))
        self.class_weights = ckpt["class_weights"].float()
        self.multiple = self.model.multiple

    def _work_shape(self, h: int, w: int, size: int) -> tuple[int, int]:
        """Shorter side ~= size (the scale objects had in training), both sides multiples of 2**depth."""
        k = size / min(h, w)
        m = self.multiple
        return max(m, int(round(h * k / m)) * m), max(m, int(round(w * k / m)) * m)

    @torch.no_grad()
    def colorize(self, rgb: np.ndarray, size: int | None = None, temperature: float | None = None) -> np.ndarray:
        """uint8 HxWx3 (or HxW grey) -> uint8 HxWx3 colourised, same size."""
        arr = np.asarray(rgb)
        if arr.ndim == 2:
            arr = np.repeat(arr[..., None], 3, axis=2)
        x = torch.from_numpy(np.ascontiguousarray(arr)).permute(2, 0, 1)[None].float().div(255).to(self.rt.device)
        h, w = x.shape[-2:]
        L_full = rgb_to_lab(x)[:, :1]
        small = F.interpolate(x, size=self._work_shape(h, w, size or self.size), mode="bilinear",
                              antialias=True, align_corners=False)
        L_small = rgb_to_lab(small)[:, :1]
        with self.rt.autocast():
            logits = self.model(l_input(L_small)).float()
        ab = decode(logits, self.bins, temperature or self.temperature, self.class_weights, self.correction)
        ab = F.interpolate(ab, size=(h, w), mode="bilinear", align_corners=False)
        out = lab_to_rgb(torch.cat([L_full, ab], 1))[0]
        return (out.permute(1, 2, 0).cpu().numpy() * 255).round().astype(np.uint8)

    def colorize_files(self, files: Iterable[str | Path], out_dir: str | Path, size: int | None = None,
                       temperature: float | None = None) -> list[Colorized]:
        """Colourise each file into out_dir/<stem>.png; an unreadable file gets `error`, the rest go on."""
        from PIL import Image

        out_dir = Path(out_dir)
        results = []
        for f in files:
            t0 = time.perf_counter()
            try:
                rgb = read_image(f, "RGB")
            except DataError as e:
                results.append(Colorized(str(f), error=str(e)))
                continue
            out = self.colorize(rgb, size, temperature)
            alpha = _alpha(f, out.shape[:2])
            img = Image.fromarray(np.dstack([out, alpha]) if alpha is not None else out)
            buf = io.BytesIO()
            img.save(buf, format="PNG")
            dest = out_dir / f"{Path(f).stem}.png"
            write_bytes(dest, buf.getvalue())
            results.append(Colorized(str(f), str(dest), time.perf_counter() - t0))
        return results


def load(weights: str | Path, device: str = "auto") -> Colorizer:
    """Load a trained colouriser (a .pt file or a run folder) safely (weights_only)."""
    return Colorizer(load_checkpoint(weights, task=TASK), device=device)
