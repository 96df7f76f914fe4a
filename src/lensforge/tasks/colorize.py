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
setting that still beats the grey image in PSNR, and results.json says in computed words whether
that held on validation and on test.

Greyscale originals (R = G = B: black-and-white photos, 1.2% of CIFAR-10) are left out of the colour
measures (the decoding sweep and the test figures; results.json counts them): they have no colour to
recover, and the grey image is exact on them, so its PSNR there is infinite (capped at 100 dB by
`psnr`) and a handful of them outweigh the rest of a split in a per-image mean PSNR: on CIFAR-10's
test split the 120 of them turn the default run's +0.20 dB over grey into -0.63 dB. Training keeps them.

Training goes through the one lifecycle (tasks.lifecycle.run); the decoding choice is made in
`final_results` and stored in best.pt via `best_meta_updates`, so `calibrate` of a finished run
is the same runner resumed at its end: no second copy of the final step.
"""
from __future__ import annotations

import io
import math
import os
import time
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from ..color import colourfulness, is_greyscale, lab_to_rgb, psnr, rgb_to_lab, ssim
from ..data import Augment, load_dataset
from ..data.imageio import read_image
from ..data.loader import Batches
from ..engine.checkpoint import load_checkpoint
from ..engine.device import Runtime, select_runtime
from ..errors import DataError, LensforgeError, UsageError
from ..options import make
from ..specs.colorize import ApplyOptions, ColorizeOptions
from .apply import accepts_onnx, InputFile, Record, expand_inputs, save_image, unique_stems
from .common import data_summary, restore_model, split_sizes
from .lifecycle import Run, TrainableTask, run

TASK = "colorize"
BIN = 10.0                      # ab bin side, Lab units (Zhang et al.)
SIGMA = 5.0                     # soft-encoding and prior-smoothing width, Lab units
TEMPERATURES = (1.0, 0.8, 0.7, 0.6, 0.5, 0.38)
# Correction 0 gives about the originals' colourfulness and 0.5 two thirds of it on CIFAR-10; 0.3 and 0.4
# fill that gap, where the default run's choice now lands (T 0.6, correction 0.3: 79% of the originals'
# colourfulness at +0.20 dB over grey on test). 54 decodings: the validation sweep ends training ~3 min here.
CORRECTIONS = (0.0, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0)
DEFAULT_DECODING = (0.38, 0.0)  # (temperature, correction) until a validation split chooses
MARGIN_DB = 0.05                # "beats grey" means by at least this much PSNR


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


class _SoftCrossEntropy(torch.autograd.Function):
    """mean over pixels of pixel_w * -sum_k w_k log softmax(logits)[idx_k], for soft targets that sum
    to 1, computed on the (B,Q,H,W) logits in place: since sum_k w_k = 1 the loss is
    logsumexp(logits) - sum_k w_k logits[idx_k], and its gradient is pixel_w * (softmax - scatter(w)) / N.
    The autograd version (permute to (N,Q), log_softmax, gather) made 4-5 full (N,Q) tensors per
    step and their backward passes; this makes one (the softmax in backward)."""

    @staticmethod
    def forward(ctx, logits, idx, w, pixel_w):
        lse = torch.logsumexp(logits, 1)                                   # (B,H,W)
        ce = lse - (logits.gather(1, idx) * w).sum(1)
        ctx.save_for_backward(logits, lse, idx, w, pixel_w)
        return (ce * pixel_w).mean()

    @staticmethod
    def backward(ctx, grad):
        logits, lse, idx, w, pixel_w = ctx.saved_tensors
        g = torch.exp(logits - lse.unsqueeze(1))                           # softmax
        g.scatter_add_(1, idx, -w)
        g.mul_((pixel_w * (grad / pixel_w.numel())).unsqueeze(1))
        return g, None, None, None


def soft_cross_entropy(logits: torch.Tensor, idx: torch.Tensor, w: torch.Tensor, pixel_w: torch.Tensor) -> torch.Tensor:
    """(B,Q,H,W) float logits, (B,k,H,W) target bins and weights (summing to 1 over k), (B,H,W) pixel
    weights -> the rebalanced soft cross-entropy, averaged over pixels (see _SoftCrossEntropy)."""
    return _SoftCrossEntropy.apply(logits, idx, w.to(logits.dtype), pixel_w.to(logits.dtype))


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


# ----------------------------------------------------------------------------- memory checks

def available_memory(device: torch.device) -> int | None:
    """Bytes that a new allocation on `device` can use now (None where it cannot be told)."""
    if device.type == "cuda":
        return torch.cuda.mem_get_info(device)[0]
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return None


def refuse_beyond_memory(need_bytes: float, device: torch.device, what: str, hint: str) -> None:
    """Refuse, in one line and before anything starts, work whose estimated peak does not fit."""
    avail = available_memory(device)
    if avail is not None and need_bytes > avail:
        raise UsageError(f"{what} needs about {_gb(need_bytes)} of memory, {_gb(avail)} available on {device}; {hint}")


def _gb(n: float) -> str:
    return f"{n / 2 ** 30:.1f} GB"


def unet_bytes_per_pixel(base: int, bins: int, training: bool) -> float:
    """Estimated peak bytes per input pixel of the colouriser's U-Net (fp32, per image).

    Training keeps ~22*base activations per pixel over all levels (each level has twice the
    channels on a quarter of the pixels) plus logits, log-softmax and their gradients (~5 x bins);
    inference keeps one level's blocks, the logits, their softmax and the decode (~3 x bins).
    Checked against the growth of peak RSS on the CPU at base 32 and 224 bins: measured 6877 B/px
    training (256 px; formula 7392), 3203 B/px inference with the decode (512 px; formula 3552).
    """
    if training:
        return 4.0 * (22 * base + 5 * bins + 24)
    return 4.0 * (6 * base + 3 * bins + 24)


# ----------------------------------------------------------------------------- training task

def spread_indices(total: int, k: int) -> torch.Tensor:
    """min(k, total) distinct indices spread evenly over range(total), first and last included."""
    return torch.linspace(0, total - 1, min(k, total)).long()


def load_colour_data(opts: ColorizeOptions, seed: int):
    """The dataset and its (H, W), refused in one line unless it is colour and fits the U-Net."""
    m = 2 ** opts.depth
    try:
        ds = load_dataset(opts.data, data_dir=opts.data_dir, download=opts.download, image_size=opts.image_size,
                          channels=3, require_labels=False, val_fraction=opts.val_fraction, seed=seed)
    except ValueError as e:  # load_folder's own test split of a 1-image folder raises it
        raise DataError(f"{opts.data}: {e}") from None
    c, h, w = ds.train.shape
    if c != 3:
        raise DataError(f"{opts.data}: colourisation needs colour images, these have {c} channel(s)")
    if h % m or w % m:
        raise UsageError(f"{opts.data}: images are {h}x{w}; pass --image-size S with S a multiple of {m}")
    # A folder of black-and-white photos decodes to three equal channels and would train a model that
    # only ever says grey: refused from a sample (all of a small folder, 256 spread images of a large one).
    sample = spread_indices(len(ds.train), 256)
    if bool(is_greyscale(ds.train.take(sample)[0].float() / 255).all()):
        raise DataError(f"{opts.data}: the training images are greyscale (R = G = B in all {len(sample)} looked "
                        "at); colourisation learns from colour photos")
    return ds, (h, w)


class ColorizeTask(TrainableTask):
    """Colourisation on the one lifecycle: Lab data and a U-Net from the options, rebalanced soft
    cross-entropy per step, validation loss/PSNR per epoch, and a final step that chooses the
    decoding on validation and measures it against the grey baseline on test."""

    name = TASK
    Options = ColorizeOptions

    def setup(self) -> None:
        opts, cfg, state = self.opts, self.cfg, self.resume_state
        self.ds, self.size = load_colour_data(opts, cfg.seed)
        if state is not None:  # the bins and weights the run was started with, not recomputed
            self.bins, self.weights = state["bins"].float(), state["class_weights"].float()
        else:
            self.bins = ab_bins()
            self.weights = class_weights(empirical_prior(self.ds.train, self.bins), self.bins, opts.rebalance)
        self.model_name = "unet"
        self.model_kwargs = {"in_channels": 1, "out_channels": len(self.bins), "base": opts.base, "depth": opts.depth}
        h, w = self.size
        need = cfg.batch_size * h * w * unet_bytes_per_pixel(opts.base, len(self.bins), True)
        refuse_beyond_memory(need, self.rt.device, f"training at {h}x{w} with --batch-size {cfg.batch_size}",
                             "lower --batch-size or --image-size")
        self.train_batches = Batches(self.ds.train, cfg.batch_size, device=self.rt.device, shuffle=True,
                                     drop_last=True, augment=Augment(flip=True), seed=cfg.seed)
        self.decoding: tuple[float, float] | None = None  # chosen in final_results

    def has_validation(self) -> bool:
        return self.ds.val is not None

    def config_extra(self) -> dict:
        return {"ab_bins": len(self.bins), "splits": split_sizes(self.ds)}

    def summary(self) -> str:
        return f"{data_summary(self.opts.data, self.ds)}; {len(self.bins)} ab bins, rebalance {self.opts.rebalance:g}"

    def extra_meta(self) -> dict:
        t, c = DEFAULT_DECODING
        return {"bins": self.bins.clone(), "class_weights": self.weights.clone(), "size": list(self.size),
                "temperature": t, "correction": c}

    def loss(self, model, rgb: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        lab = rgb_to_lab(rgb)
        logits = model(l_input(lab[:, :1])).float()
        b, _, h, w_ = logits.shape
        idx, w = encode_soft(lab[:, 1:].permute(0, 2, 3, 1).reshape(-1, 2), self.bins)
        idx = idx.view(b, h, w_, -1).permute(0, 3, 1, 2)
        w = w.view(b, h, w_, -1).permute(0, 3, 1, 2)
        pixel_w = self.weights.to(logits.device)[idx[:, 0]]
        return soft_cross_entropy(logits, idx, w, pixel_w), logits

    def training_step(self, model, batch):
        x, _ = batch
        loss, _ = self.loss(model, x)
        return loss, {"loss": loss.detach()}

    @torch.no_grad()
    def evaluate(self, model) -> dict[str, float]:
        if self.ds.val is None:
            return {}
        model.eval()
        total, n, ps = 0.0, 0, []
        for x, _ in Batches(self.ds.val, 256, device=self.rt.device):
            with self.rt.autocast():
                loss, logits = self.loss(model, x)
            total += float(loss) * len(x)
            n += len(x)
            lab = rgb_to_lab(x)
            out = lab_to_rgb(torch.cat([lab[:, :1], decode(logits, self.bins, DEFAULT_DECODING[0])], 1))
            ps.append(psnr(out, x))
        model.train()
        return {"val_loss": total / max(1, n), "val_psnr": float(torch.cat(ps).mean())}

    def final_results(self, run_dir: Path, fit) -> dict:
        """Choose the decoding on validation, evaluate it on test against grey, draw the strip."""
        ds, net, rt, opts = self.ds, self.model, self.rt, self.opts
        net.to(rt.device).eval()
        results: dict = {}
        state = self.resume_state or {}
        decoding = (float(state.get("temperature", DEFAULT_DECODING[0])), float(state.get("correction", DEFAULT_DECODING[1])))
        if ds.val is not None:
            sweep = sweep_decodings(net, ds.val, self.bins, self.weights, rt)
            if sweep:
                row = pick_decoding(sweep)
                decoding = self.decoding = (row["temperature"], row["correction"])
                results["decoding_choice"] = describe_choice(row)
                self.tables.append(("Decoding sweep (validation split, colour originals)", sweep))
            else:
                results["decoding_choice"] = (f"T={decoding[0]:g}, correction={decoding[1]:g} kept: the validation "
                                              "split holds only greyscale originals, nothing to choose on")
            results["val_sweep"] = sweep
        results["temperature"], results["correction"] = decoding
        dec = (decoding[0], self.weights, decoding[1])
        test = ds.test if ds.test is not None else ds.val
        if test is not None:
            if opts.eval_images and opts.eval_images < len(test):
                test = test.subset(torch.arange(opts.eval_images))
            results.update(evaluate_split(net, test, self.bins, dec, rt))
            results["test_measured_on"] = (f"{results['test_images']:,} colour images; "
                                           f"{results['test_greyscale_originals']:,} greyscale originals left out")
            if results["test_images"]:
                results["test_vs_grey"] = describe_test(results["test_psnr"], results["test_grey_psnr"])
            else:
                results["test_vs_grey"] = "the test split holds only greyscale originals: no colour to compare"
            # On test only the temperatures at the chosen correction: a trade-off curve for the report,
            # at a fifth of the cost of the full validation grid.
            results["test_sweep"] = sweep_decodings(net, test, self.bins, self.weights, rt, corrections=(decoding[1],))
            if results["test_sweep"]:
                self.tables.append(("Decoding sweep (test split, colour originals, chosen correction)",
                                    results["test_sweep"]))
            _comparison_strip(net, test, self.bins, dec, rt, run_dir / "comparison.png")
            self.figures.append(("Rows: grey input / colourised / original (test)", "comparison.png"))
        return results

    def best_meta_updates(self) -> dict:
        if self.decoding is None:
            return {}
        return {"temperature": self.decoding[0], "correction": self.decoding[1]}


def train(data: str | None = None, *, out: str | Path | None = None, resume: str | Path | None = None,
          **options) -> Run:
    """Train a colouriser and write a complete run folder (weights, results.json, report.html).

    `options` are any ColorizeOptions or TrainConfig fields (image_size, base, depth, epochs, ...);
    defaults are the colorize recipe (lensforge.recipes), exactly as on the command line.
    """
    return run(ColorizeTask, data, out=out, resume=resume, **options)


def calibrate(run_dir: str | Path) -> dict:
    """Re-choose the decoding on the validation split and re-evaluate on test, for a finished run
    (e.g. one trained before a decoding option existed): the runner resumed at the run's end, so it
    is the very final step of `train` that updates best.pt, results.json and the report."""
    run_dir = Path(run_dir)
    last = run_dir / "weights" / "last.pt"
    if not last.is_file():
        raise UsageError(f"--weights {run_dir}: not a colorize run folder (no weights/last.pt)")
    state = load_checkpoint(last, task=TASK)
    done, planned = int(state["epoch"]), int(state["config"]["epochs"])
    stopped_early = state["config"].get("early_stop") and state.get("bad_epochs", 0) >= state["config"]["early_stop"]
    if done < planned and not stopped_early:
        raise UsageError(f"--weights {run_dir}: the run stopped at epoch {done} of {planned}; finish it with "
                         f"`lensforge colorize train --resume {run_dir}` (that also calibrates)")
    return run(ColorizeTask, resume=run_dir, progress=False, **({"epochs": done} if done < planned else {})).results


# ----------------------------------------------------------------------------- evaluation

@torch.no_grad()
def _predict_logits(net, data, rt: Runtime, batch_size: int = 256):
    """Yields (rgb, L, logits) batch by batch: logits are kept per batch, never for a whole split."""
    for x, _ in Batches(data, batch_size, device=rt.device):
        lab = rgb_to_lab(x)
        with rt.autocast():
            logits = net(l_input(lab[:, :1])).float()
        yield x, lab[:, :1], logits


def _grey(L: torch.Tensor) -> torch.Tensor:
    return lab_to_rgb(torch.cat([L, torch.zeros_like(L), torch.zeros_like(L)], 1))


@torch.no_grad()
def sweep_decodings(net, data, bins, weights, rt: Runtime, temps: Sequence[float] = TEMPERATURES,
                    corrections: Sequence[float] = CORRECTIONS, gains: Sequence[float] = (1.0,)) -> list[dict]:
    """PSNR and colourfulness for each (temperature, correction), plus the grey image's PSNR, over the
    split's colour originals ("images" counts them; no rows when there are none).

    `gains` (bench/colorize_decoding.py) also scales each decoded ab by s: the rows then carry "gain".
    Training does not sweep it: on the default CIFAR-10 run gains 1 to 2 all end at 76-80% of the
    originals' colourfulness above grey (bench/results/colorize_decoding_default.md)."""
    sums = {(t, c, g): [0.0, 0.0] for c in corrections for t in temps for g in gains}
    grey_psnr, n = 0.0, 0
    for x, L, logits in _predict_logits(net, data, rt):
        colour = ~is_greyscale(x)
        x, L, logits = x[colour], L[colour], logits[colour]
        if not len(x):
            continue
        grey_psnr += float(psnr(_grey(L), x).sum())
        for t, c in dict.fromkeys((t, c) for t, c, _ in sums):
            ab = decode(logits, bins, t, weights, c)
            for g in gains:
                out = lab_to_rgb(torch.cat([L, ab * g], 1))
                acc = sums[(t, c, g)]
                acc[0] += float(psnr(out, x).sum())
                acc[1] += float(colourfulness(out).sum())
        n += len(x)
    if not n:
        return []
    return [{"temperature": t, "correction": c, **({"gain": g} if tuple(gains) != (1.0,) else {}),
             "psnr": round(s[0] / n, 4), "colourfulness": round(s[1] / n, 4), "grey_psnr": round(grey_psnr / n, 4),
             "images": n}
            for (t, c, g), s in sums.items()]


def pick_decoding(sweep: list[dict], margin: float = MARGIN_DB) -> dict:
    """The sweep row with the most colour whose PSNR still beats grey by `margin` dB; if none does,
    the one with the best PSNR."""
    ok = [row for row in sweep if row["psnr"] >= row["grey_psnr"] + margin]
    return max(ok, key=lambda r: r["colourfulness"]) if ok else max(sweep, key=lambda r: r["psnr"])


def describe_choice(row: dict, margin: float = MARGIN_DB) -> str:
    """What the chosen decoding did on validation, in words computed from its numbers."""
    head = f"T={row['temperature']:g}, correction={row['correction']:g}: "
    p, g = row["psnr"], row["grey_psnr"]
    split = f"the validation split ({row['images']:,} colour images)" if "images" in row else "the validation split"
    if p >= g + margin:
        return (head + f"the most colourful decoding on {split} whose PSNR ({p:.2f} dB) beats the grey "
                f"baseline ({g:.2f} dB) by at least {margin:g} dB")
    return (head + f"no decoding beat the grey baseline on {split} by {margin:g} dB; this one has the "
            f"best PSNR there ({p:.2f} dB against grey's {g:.2f} dB)")


def describe_test(test_psnr: float, grey_psnr: float) -> str:
    d = test_psnr - grey_psnr
    side = "above" if d > 0 else "below" if d < 0 else "equal to"
    amount = f"{abs(d):.2f} dB " if d else ""
    return f"test PSNR {test_psnr:.2f} dB is {amount}{side} the grey baseline ({grey_psnr:.2f} dB)"


@torch.no_grad()
def evaluate_split(net, data, bins, dec: tuple, rt: Runtime) -> dict:
    """PSNR/SSIM vs the original RGB for our output and for the grey (L-only) baseline, and
    colourfulness, over the colour originals; the greyscale originals left out are counted.

    Over every image (theirs included) two PSNRs are kept for reference: the per-image mean
    (`*_psnr_all_images`, where grey's is capped at 100 dB on each greyscale original) and the PSNR
    of the split's mean squared error (`*_pooled_psnr_all_images`), which stays finite."""
    keys = ("psnr", "ssim", "grey_psnr", "grey_ssim", "colourfulness", "original_colourfulness", "grey_colourfulness")
    acc = dict.fromkeys(keys, 0.0)
    every = dict.fromkeys(("psnr", "grey_psnr", "mse", "grey_mse"), 0.0)
    n = n_all = 0
    for x, L, logits in _predict_logits(net, data, rt):
        out = lab_to_rgb(torch.cat([L, decode(logits, bins, *dec)], 1))
        grey = _grey(L)
        ours_psnr, grey_psnr = psnr(out, x), psnr(grey, x)
        for who, p in (("", ours_psnr), ("grey_", grey_psnr)):   # each image's MSE back from its PSNR
            every[f"{who}psnr"] += float(p.sum())
            every[f"{who}mse"] += float(torch.pow(10.0, -p.double() / 10).sum())
        n_all += len(x)
        colour = ~is_greyscale(x)
        if not colour.any():
            continue
        out, grey, x = out[colour], grey[colour], x[colour]
        for key, val in (("psnr", ours_psnr[colour]), ("ssim", ssim(out, x)), ("grey_psnr", grey_psnr[colour]),
                         ("grey_ssim", ssim(grey, x)), ("colourfulness", colourfulness(out)),
                         ("original_colourfulness", colourfulness(x)), ("grey_colourfulness", colourfulness(grey))):
            acc[key] += float(val.sum())
        n += len(x)
    res = {}
    if n:
        res = {f"test_{k}": round(v / n, 4) for k, v in acc.items()}
        res["test_colourfulness_ratio"] = round(acc["colourfulness"] / max(acc["original_colourfulness"], 1e-9), 4)
    res["test_images"], res["test_greyscale_originals"] = n, n_all - n
    if n_all:
        res["test_psnr_all_images"] = round(every["psnr"] / n_all, 4)
        res["test_grey_psnr_all_images"] = round(every["grey_psnr"] / n_all, 4)
        for who in ("", "grey_"):
            mse = max(every[f"{who}mse"] / n_all, 1e-10)
            res[f"test_{who}pooled_psnr_all_images"] = round(10 * math.log10(1 / mse), 4)
    return res


@torch.no_grad()
def _comparison_strip(net, data, bins, dec: tuple, rt, path: Path, n: int = 8) -> None:
    from ..report import save_image_grid_png

    idx = spread_indices(len(data), n)
    x, _ = data.take(idx)
    x = x.float().to(rt.device) / 255
    lab = rgb_to_lab(x)
    with rt.autocast():
        logits = net(l_input(lab[:, :1])).float()
    ours = lab_to_rgb(torch.cat([lab[:, :1], decode(logits, bins, *dec)], 1))
    grey = lab[:, :1].repeat(1, 3, 1, 1) / 100
    scale = max(1, 128 // max(x.shape[-2:]))
    save_image_grid_png(torch.cat([grey, ours, x]).cpu(), path, ncols=len(idx), scale=scale)


# ----------------------------------------------------------------------------- loaded models

def _alpha(source: Path | bytes, shape: tuple[int, int]) -> np.ndarray | None:
    """The file's alpha channel, upright like read_image's pixels, or None; never raises."""
    try:
        from PIL import Image, ImageOps
        with Image.open(io.BytesIO(source) if isinstance(source, bytes) else source) as img:
            if "A" not in img.getbands() and not (img.mode == "P" and "transparency" in img.info):
                return None
            a = np.asarray(ImageOps.exif_transpose(img.convert("RGBA")).getchannel("A"))
            return a if a.shape == shape else None
    except Exception:  # noqa: BLE001 -- alpha is a nicety; the pixels were already read fine
        return None


class Colorizer:
    """A trained colouriser: chroma predicted at the model's resolution, lightness kept at full resolution."""

    def __init__(self, ckpt: dict, device: str = "auto"):
        self.rt = select_runtime(device, "auto")
        self.model = restore_model(ckpt, "unet", "the colouriser's U-Net")
        self.model.to(self.rt.device).eval()
        self.bins = ckpt["bins"].float()
        self.image_size = int(min(ckpt["size"]))
        self.temperature = float(ckpt.get("temperature", DEFAULT_DECODING[0]))
        self.correction = float(ckpt.get("correction", DEFAULT_DECODING[1]))
        self.class_weights = ckpt["class_weights"].float()
        self.base = int(ckpt["model_kwargs"].get("base", 32))
        self.multiple = self.model.multiple

    def _work_shape(self, h: int, w: int, image_size: int) -> tuple[int, int]:
        """Shorter side ~= image_size (the scale objects had in training), both sides multiples of 2**depth."""
        k = image_size / min(h, w)
        m = self.multiple
        return max(m, int(round(h * k / m)) * m), max(m, int(round(w * k / m)) * m)

    def memory_needed(self, h: int, w: int, image_size: int | None = None) -> float:
        """Estimated peak bytes to colourise an h x w image: the U-Net at the work shape, plus ~15
        float32 planes at full resolution (RGB, Lab, upsampled ab, the output)."""
        wh, ww = self._work_shape(h, w, image_size or self.image_size)
        return wh * ww * unet_bytes_per_pixel(self.base, len(self.bins), False) + 60.0 * h * w

    @torch.no_grad()
    def colorize(self, rgb: np.ndarray, image_size: int | None = None, temperature: float | None = None) -> np.ndarray:
        """uint8 HxWx3 (or HxW grey) -> uint8 HxWx3 colourised, same size; refused in one line
        (UsageError) when the estimated memory does not fit."""
        arr = np.asarray(rgb)
        if arr.ndim == 2:
            arr = np.repeat(arr[..., None], 3, axis=2)
        h, w = arr.shape[:2]
        size = image_size or self.image_size
        refuse_beyond_memory(self.memory_needed(h, w, size), self.rt.device,
                             f"colourising {w}x{h} at --image-size {size}", "lower --image-size or use a smaller image")
        x = torch.from_numpy(np.ascontiguousarray(arr)).permute(2, 0, 1)[None].float().div(255).to(self.rt.device)
        L_full = rgb_to_lab(x)[:, :1]
        small = F.interpolate(x, size=self._work_shape(h, w, size), mode="bilinear", antialias=True,
                              align_corners=False)
        with self.rt.autocast():
            logits = self.model(l_input(rgb_to_lab(small)[:, :1])).float()
        ab = decode(logits, self.bins, temperature or self.temperature, self.class_weights, self.correction)
        ab = F.interpolate(ab, size=(h, w), mode="bilinear", align_corners=False)
        out = lab_to_rgb(torch.cat([L_full, ab], 1))[0]
        return (out.permute(1, 2, 0).cpu().numpy() * 255).round().astype(np.uint8)

    def colorize_files(self, inputs: Iterable[str | Path | InputFile], out_dir: str | Path,
                       image_size: int | None = None, temperature: float | None = None) -> list[Record]:
        """Colourise each input into out_dir/<stem>.png (alpha kept); one Record per input with
        values out and seconds, or the error (unreadable, too large) while the rest go on."""
        items = [i if isinstance(i, InputFile) else InputFile(str(i), Path(i)) for i in inputs]
        records = []
        for item, stem in zip(items, unique_stems(items)):
            t0 = time.perf_counter()
            try:
                src = item.source()
                out = self.colorize(read_image(src, "RGB", name=item.name), image_size, temperature)
            except LensforgeError as e:
                msg = str(e)
                records.append(Record(item.name, error=msg if msg.startswith(item.name) else f"{item.name}: {msg}"))
                continue
            alpha = _alpha(src, out.shape[:2])
            dest = save_image(Path(out_dir) / f"{stem}.png", np.dstack([out, alpha]) if alpha is not None else out)
            records.append(Record(item.name, {"out": str(dest), "seconds": round(time.perf_counter() - t0, 4)}))
        return records


@accepts_onnx(TASK)
def load(weights: str | Path, device: str = "auto") -> Colorizer:
    """Load a trained colouriser (a .pt file or a run folder) safely (weights_only)."""
    return Colorizer(load_checkpoint(weights, task=TASK), device=device)


def apply(weights: str | Path, inputs: Sequence[str | Path], out: str | Path, **options) -> list[Record]:
    """`lensforge colorize apply` as a function: options are ApplyOptions fields (image_size,
    temperature, device), checked before the model is loaded."""
    o = make(ApplyOptions, {"weights": str(weights), "inputs": [str(i) for i in inputs], "out": str(out), **options})
    files = expand_inputs(o.inputs)
    col = load(o.weights, device=o.device)
    return col.colorize_files(files, o.out, image_size=o.image_size, temperature=o.temperature)
