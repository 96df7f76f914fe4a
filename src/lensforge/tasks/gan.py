"""DCGAN (optionally class-conditional): train, sample, and measure sample quality as a number.

    run = train("mnist", data_dir="../shared/datasets", epochs=10, fd_classifier="runs/classify/mnist-cnn")
    gan = load(run.dir)
    gan.sample(64, labels=None)          # (64, C, H, W) in [0, 1]

The engine owns the generator and its optimiser; the discriminator and its optimiser live in the
task (stepped inside `training_step`, saved through the task's state_dict), so resume, EMA,
checkpoints and metrics.csv work exactly as for every other task.

Quality is a Frechet distance between Gaussian fits of *features of a lensforge classifier
trained on the same dataset* (its penultimate layer), computed for generated samples against
real training images every epoch. It is an FID in spirit but not comparable to published FIDs,
which use ImageNet Inception-v3 features; results.json names the classifier used. The same
classifier also says how many samples are confidently recognisable as some class.
"""
from __future__ import annotations

import math
import sys
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from ..data import Dataset
from ..data.augment import augment_batch
from ..data.loader import Batches
from ..engine.checkpoint import load_checkpoint
from ..engine.device import Runtime, select_runtime
from ..engine.trainer import TrainConfig
from ..errors import DataError, UsageError
from ..models import create_model
from ..recipes import with_recipe
from ..runs import new_run_dir
from .generative_common import (Run, base_results, finish_run, load_generative, load_images,
                                resume_checkpoint, run_name, split_options, split_sizes, train_run)

TASK = "gan"
CONFIDENT = 0.9     # a sample counts as recognisable when the classifier's top probability exceeds this
AUGMENT_BELOW = 10_000   # "auto" DiffAugment for training sets smaller than this


def diff_augment(x: torch.Tensor) -> torch.Tensor:
    """DiffAugment (Zhao et al., 2020): random translation by 1/8 of the side and a cutout of half
    of it, applied to everything D sees, real and generated, in both players' steps. The ops are
    differentiable, so G still gets gradients through them; D can no longer memorise a few hundred
    training images, which otherwise ends a small-data GAN within a few epochs (D wins, G's
    gradients vanish)."""
    side = min(x.shape[-2:])
    return augment_batch(x, translate=max(1, side // 8), cutout_size=side // 2)


@dataclass
class GANOptions:
    data: str = "digits"
    data_dir: str | None = None
    model: str = "dcgan"
    conditional: bool = False
    latent_dim: int = 64
    width: int = 32
    d_lr: float | None = None          # discriminator learning rate (default: --lr)
    image_size: int | None = None
    fd_classifier: str = "auto"        # classify run/weights, "auto" (train one when labelled) or "none"
    fd_samples: int = 2000
    augment: str = "auto"              # DiffAugment: "on", "off", or "auto" (on below AUGMENT_BELOW images)
    download: bool = True

    def validate(self) -> None:
        if self.model != "dcgan":
            raise UsageError(f"--model {self.model}: only dcgan is available")
        if self.latent_dim < 1 or self.width < 1:
            raise UsageError("--latent-dim and --width must be >= 1")
        if self.d_lr is not None and not (self.d_lr > 0 and math.isfinite(self.d_lr)):
            raise UsageError("--d-lr must be a positive number")
        if self.fd_samples < 10:
            raise UsageError("--fd-samples must be >= 10")
        if self.augment not in ("auto", "on", "off"):
            raise UsageError(f"--augment {self.augment}: choose auto, on or off")


# ----------------------------------------------------------------------------- Frechet distance

def frechet_distance(f1: np.ndarray, f2: np.ndarray) -> float:
    """Frechet distance between Gaussians fitted to two feature sets (rows = samples):
    |mu1 - mu2|^2 + Tr(S1 + S2 - 2 (S1 S2)^1/2)."""
    import warnings

    from scipy import linalg

    f1, f2 = np.asarray(f1, np.float64), np.asarray(f2, np.float64)
    mu1, mu2 = f1.mean(0), f2.mean(0)
    s1, s2 = np.cov(f1, rowvar=False), np.cov(f2, rowvar=False)
    with warnings.catch_warnings():      # fewer samples than features: singular but still well defined
        warnings.simplefilter("ignore", linalg.LinAlgWarning)
        covmean = linalg.sqrtm(s1 @ s2)
    if not np.isfinite(covmean).all():
        eps = np.eye(len(s1)) * 1e-6
        covmean = linalg.sqrtm((s1 + eps) @ (s2 + eps))
    covmean = covmean.real
    return float(((mu1 - mu2) ** 2).sum() + np.trace(s1) + np.trace(s2) - 2 * np.trace(covmean))


class FeatureJudge:
    """A trained lensforge classifier used as a feature extractor (input of its last linear
    layer) and as a judge of whether samples look like any class."""

    def __init__(self, weights: str | Path, shape: tuple[int, int, int], device: torch.device):
        from ..tasks.classify import Classifier

        self.source = str(weights)
        clf = Classifier(load_checkpoint(weights, task="classify"), device=str(device))
        spec = clf.spec
        if (spec.channels, *spec.size) != tuple(shape):
            raise DataError(f"--fd-classifier {weights}: expects images {(spec.channels, *spec.size)}, "
                            f"the GAN makes {tuple(shape)}")
        self.model, self.device, self.classes = clf.model.eval(), clf.rt.device, clf.classes
        self.test_accuracy = None
        lin = [m for m in self.model.modules() if isinstance(m, torch.nn.Linear)]
        if not lin:
            raise DataError(f"--fd-classifier {weights}: model has no linear layer to take features from")
        self._feats: list[torch.Tensor] = []
        lin[-1].register_forward_pre_hook(lambda mod, inp: self._feats.append(inp[0].detach().float()))

    @torch.no_grad()
    def __call__(self, x: torch.Tensor, batch_size: int = 500) -> tuple[np.ndarray, torch.Tensor]:
        """(penultimate features, class probabilities) of images in [0, 1]."""
        feats, probs = [], []
        for i in range(0, len(x), batch_size):
            self._feats.clear()
            logits = self.model(x[i:i + batch_size].to(self.device)).float()
            feats.append(self._feats[-1].cpu())
            probs.append(logits.softmax(1).cpu())
        return torch.cat(feats).numpy(), torch.cat(probs)


def real_images(split, n: int, seed: int = 0) -> torch.Tensor:
    idx = torch.randperm(len(split), generator=torch.Generator().manual_seed(seed))[:n].sort().values
    return split.take(idx)[0].float() / 255


# ----------------------------------------------------------------------------- task

class GANTask:
    def __init__(self, ds: Dataset, gen, disc, opts: GANOptions, cfg: TrainConfig, rt: Runtime,
                 g_kwargs: dict, d_kwargs: dict, run_dir: Path, judge: FeatureJudge | None):
        self.ds, self.model, self.opts, self.cfg, self.rt = ds, gen, opts, cfg, rt
        self.g_kwargs, self.d_kwargs, self.run_dir, self.judge = g_kwargs, d_kwargs, run_dir, judge
        self.disc = disc.to(rt.device)
        self.d_opt = torch.optim.Adam(self.disc.parameters(), lr=opts.d_lr or cfg.lr, betas=(0.5, 0.999))
        self.train_batches = Batches(ds.train, cfg.batch_size, device=rt.device, shuffle=True, drop_last=True,
                                     seed=cfg.seed)
        g = torch.Generator().manual_seed(cfg.seed + 99)
        self.fixed_z = torch.randn(64, opts.latent_dim, generator=g)
        self.fixed_labels = (torch.arange(64) % ds.num_classes) if opts.conditional else None
        self.progress: list[torch.Tensor] = []          # one uint8 row of fixed-noise samples per epoch
        self.augment = opts.augment == "on" or (opts.augment == "auto" and len(ds.train) < AUGMENT_BELOW)
        self.ref_feats = None
        if judge is not None:
            self.ref_feats, _ = judge(real_images(ds.train, opts.fd_samples, seed=1))

    def _labels(self, n: int, generator=None) -> torch.Tensor | None:
        if not self.opts.conditional:
            return None
        return torch.randint(0, self.ds.num_classes, (n,), generator=generator).to(self.rt.device)

    def training_step(self, gen, batch):
        x, y = batch
        n = len(x)
        y = y if self.opts.conditional else None
        z = torch.randn(n, self.opts.latent_dim, device=x.device)
        fake = gen(z, y)
        aug = diff_augment if self.augment else (lambda t: t)
        # discriminator step on its own optimiser; fakes detached so G's graph is not touched
        self.disc.train()
        self.d_opt.zero_grad(set_to_none=True)
        d_real, d_fake = self.disc(aug(x), y), self.disc(aug(fake.detach()), y)
        d_loss = F.binary_cross_entropy_with_logits(d_real, torch.ones_like(d_real)) + \
            F.binary_cross_entropy_with_logits(d_fake, torch.zeros_like(d_fake))
        d_loss.backward()
        self.d_opt.step()
        # generator loss (non-saturating); the engine backpropagates and steps G. The gradients it
        # leaves on D's parameters are discarded by the zero_grad above on the next step.
        g_out = self.disc(aug(fake), y)
        g_loss = F.binary_cross_entropy_with_logits(g_out, torch.ones_like(g_out))
        return g_loss, {"g_loss": g_loss.detach(), "d_loss": d_loss.detach(),
                        "d_real": torch.sigmoid(d_real.detach()).mean(), "d_fake": torch.sigmoid(d_fake.detach()).mean()}

    @torch.no_grad()
    def generate(self, gen, z: torch.Tensor, labels: torch.Tensor | None) -> torch.Tensor:
        was = gen.training
        gen.eval()
        outs = []
        for i in range(0, len(z), 500):
            lab = labels[i:i + 500].to(self.rt.device) if labels is not None else None
            outs.append(gen(z[i:i + 500].to(self.rt.device), lab).float().cpu())
        gen.train(was)
        return torch.cat(outs)

    def evaluate(self, gen) -> dict[str, float]:
        from ..report import save_image_grid_png

        samples = self.generate(gen, self.fixed_z, self.fixed_labels)
        epoch = len(self.progress) + 1
        save_image_grid_png(samples, self.run_dir / "samples" / f"epoch_{epoch:03d}.png", ncols=8,
                            scale=2 if max(samples.shape[-2:]) < 64 else 1)
        self.progress.append((samples[:8] * 255).round().to(torch.uint8))
        return self.quality(gen) if self.judge is not None else {}

    def quality(self, gen, reference: np.ndarray | None = None) -> dict[str, float]:
        """fd (vs training-image features), recognisable fraction, and class agreement if conditional."""
        g = torch.Generator().manual_seed(7)
        n = self.opts.fd_samples
        z = torch.randn(n, self.opts.latent_dim, generator=g)
        labels = self._labels(n, g)
        feats, probs = self.judge(self.generate(gen, z, labels))
        conf, pred = probs.max(1)
        out = {"fd": frechet_distance(feats, self.ref_feats if reference is None else reference),
               "recognisable": (conf > CONFIDENT).float().mean().item()}
        if labels is not None:
            out["label_agreement"] = (pred == labels.cpu()).float().mean().item()
        return out

    def state_dict(self) -> dict:
        return {"disc": self.disc.state_dict(), "d_opt": self.d_opt.state_dict(), "progress": list(self.progress)}

    def load_state_dict(self, state: dict) -> None:
        self.disc.load_state_dict(state["disc"])
        self.d_opt.load_state_dict(state["d_opt"])
        self.progress = list(state.get("progress", []))

    def checkpoint_meta(self) -> dict:
        return {"task": TASK, "model_name": "dcgan-g", "model_kwargs": self.g_kwargs, "d_kwargs": self.d_kwargs,
                "classes": list(self.ds.classes) if self.ds.classes else None, "preprocess": self.ds.spec.to_dict(),
                "options": asdict(self.opts)}


# ----------------------------------------------------------------------------- training

def _build(opts: GANOptions, cfg: TrainConfig):
    opts.validate()
    ds = load_images(opts.data, data_dir=opts.data_dir, download=opts.download, image_size=opts.image_size, seed=cfg.seed)
    if opts.conditional and (not ds.classes or ds.train.labels is None):
        raise DataError(f"{opts.data}: --conditional needs labelled images (one sub-folder per class)")
    c, h, w = ds.train.shape
    ncls = ds.num_classes if opts.conditional else 0
    g_kwargs = {"in_channels": c, "image_size": [h, w], "latent_dim": opts.latent_dim, "width": opts.width,
                "num_classes": ncls}
    d_kwargs = {"in_channels": c, "image_size": [h, w], "width": opts.width, "num_classes": ncls}
    return ds, g_kwargs, d_kwargs


def _judge(opts: GANOptions, ds: Dataset, cfg: TrainConfig, run_dir: Path, rt: Runtime) -> FeatureJudge | None:
    """The classifier whose features define the Frechet distance (trained here when 'auto')."""
    if opts.fd_classifier == "none":
        return None
    weights = opts.fd_classifier
    if weights == "auto":
        if not ds.classes or len(ds.classes) < 2:
            print(f"{opts.data}: no class labels, so no classifier to measure a Frechet distance with", file=sys.stderr)
            return None
        target = run_dir / "fd_classifier"
        if not (target / "weights" / "best.pt").exists():
            from . import classify
            print(f"training the feature classifier for the Frechet distance into {target}", file=sys.stderr)
            classify.train(opts.data, model="cnn", out=target, data_dir=opts.data_dir, download=opts.download,
                           image_size=opts.image_size, epochs=3, seed=cfg.seed, device=cfg.device,
                           progress=cfg.progress, label_smoothing=0.0)   # smoothing caps confidence near 0.9
        weights = str(target)
    elif not Path(weights).exists():
        raise UsageError(f"--fd-classifier {weights}: no such file or folder")
    return FeatureJudge(weights, ds.train.shape, rt.device)


def train(data: str = "digits", *, model: str = "dcgan", out: str | Path | None = None,
          resume: str | Path | None = None, **options) -> Run:
    """Train a DCGAN and write a run folder (per-epoch sample grids, progress strip, FD curve, report)."""
    if resume is not None:
        run_dir = Path(resume)
        state, opts, cfg = resume_checkpoint(run_dir, TASK, GANOptions, options.get("progress", True))
        ds, g_kwargs, d_kwargs = _build(opts, cfg)
        return _train_and_report(run_dir, ds, opts, cfg, state["model_kwargs"], state["d_kwargs"], state)
    options = with_recipe(TASK, {"monitor": "fd", "mode": "min", **options})
    opts, cfg = split_options(options, GANOptions, data=str(data), model=model)
    ds, g_kwargs, d_kwargs = _build(opts, cfg)
    run_dir = new_run_dir(TASK, run_name(opts.data, opts.model + ("-cond" if opts.conditional else "")), out)
    return _train_and_report(run_dir, ds, opts, cfg, g_kwargs, d_kwargs, None)


def _train_and_report(run_dir: Path, ds: Dataset, opts: GANOptions, cfg, g_kwargs, d_kwargs, resume_state) -> Run:
    rt = select_runtime(cfg.device, cfg.precision)
    judge = _judge(opts, ds, cfg, run_dir, rt)
    torch.manual_seed(cfg.seed)
    gen = create_model("dcgan-g", **g_kwargs)
    disc = create_model("dcgan-d", **d_kwargs)
    task = GANTask(ds, gen, disc, opts, cfg, rt, g_kwargs, d_kwargs, run_dir, judge)
    config = {"task": TASK, **asdict(opts), "train": asdict(cfg), "runtime": rt.describe(), "g_kwargs": g_kwargs,
              "d_kwargs": d_kwargs, "preprocess": ds.spec.to_dict(),
              "splits": split_sizes(ds)}
    result = train_run(TASK, run_dir, task, cfg, config, resume_state)
    results = base_results(result, rt)
    results.update(_final_report(run_dir, task, ds, opts, result.history))
    finish_run(run_dir, f"lensforge gan: {opts.data} / {opts.model}{' (conditional)' if opts.conditional else ''}",
               results, config, [("Samples from the selected weights", "samples.png"),
                                 ("Fixed-noise progress: one row per epoch (top = epoch 1)", "progress.png")],
               result.history)
    return Run(run_dir, results, result.history)


def _final_report(run_dir: Path, task: GANTask, ds: Dataset, opts: GANOptions, history: list[dict]) -> dict:
    from ..report import image_grid

    gen = task.model
    labels = task.fixed_labels
    image_grid(task.generate(gen, task.fixed_z, labels), run_dir / "samples.png", ncols=8)
    if task.progress:
        image_grid(torch.cat(task.progress), run_dir / "progress.png", ncols=8)
    out: dict = {"samples_image_size": list(ds.train.shape), "diff_augment": task.augment}
    if task.judge is None:
        out["fd"] = "not measured (no labelled data or --fd-classifier none)"
        return out
    judge = task.judge
    out["fd_classifier"] = judge.source
    out["fd_features"] = "penultimate layer of the lensforge classifier above, trained on the same dataset"
    out["fd_samples"] = opts.fd_samples
    out["fd_per_epoch"] = [round(float(r["fd"]), 3) for r in history if "fd" in r]
    q = task.quality(gen)
    out.update({"fd_vs_train": q["fd"], "recognisable_fraction": q["recognisable"],
                "recognisable_threshold": CONFIDENT})
    if "label_agreement" in q:
        out["label_agreement"] = q["label_agreement"]
    if ds.test is not None:
        test_feats, test_probs = judge(real_images(ds.test, opts.fd_samples, seed=2))
        out["fd_vs_test"] = task.quality(gen, reference=test_feats)["fd"]
        # the floor: real held-out images against real training images, same sample size
        out["fd_real_test_vs_train"] = frechet_distance(test_feats, task.ref_feats)
        out["real_test_recognisable_fraction"] = (test_probs.max(1).values > CONFIDENT).float().mean().item()
    return out


# ----------------------------------------------------------------------------- loaded models

class GANGenerator:
    """A trained generator: `sample(n, labels)` gives images in [0, 1]."""

    def __init__(self, weights: str | Path, device: str = "auto"):
        self.meta, self.model, self.rt = load_generative(weights, TASK, device)
        self.classes = self.meta.get("classes")
        self.conditional = bool(self.meta["model_kwargs"].get("num_classes"))

    @torch.no_grad()
    def sample(self, n: int, labels: list[int] | torch.Tensor | None = None, seed: int = 0) -> torch.Tensor:
        if n < 1:
            raise UsageError("--n must be >= 1")
        g = torch.Generator().manual_seed(seed)
        z = torch.randn(n, self.model.latent_dim, generator=g)
        if self.conditional:
            k = self.model.num_classes
            labels = torch.arange(n) % k if labels is None else torch.as_tensor(labels).long()
            if len(labels) == 1:
                labels = labels.expand(n)
            if len(labels) != n or labels.min() < 0 or labels.max() >= k:
                raise UsageError(f"labels must be {n} class indices in [0, {k - 1}]")
            y = labels
        elif labels is not None:
            raise UsageError("this generator is not conditional: it takes no --label")
        else:
            y = None
        outs = []
        for i in range(0, n, 500):
            lab = y[i:i + 500].to(self.rt.device) if y is not None else None
            outs.append(self.model(z[i:i + 500].to(self.rt.device), lab).float().cpu())
        return torch.cat(outs)

    def class_index(self, name: str) -> int:
        if not self.classes or name not in self.classes:
            raise UsageError(f"--label {name}: not one of this model's classes ({', '.join(self.classes or [])})")
        return self.classes.index(name)


def load(weights: str | Path, device: str = "auto") -> GANGenerator:
    return GANGenerator(weights, device)
