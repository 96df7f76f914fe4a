"""DCGAN (optionally class-conditional): train, sample, and measure sample quality as a number.

`--spectral-norm` switches to the discriminator and loss the field settled on after DCGAN (SNGAN,
Miyato et al. 2018; BigGAN): spectral normalisation on every D layer instead of batch norm, the
hinge loss, and D stepping at twice G's learning rate (a two time-scale update rule, Heusel et al.
2017). It stays opt-in until bench/generative.py's gan_mnist_sn has shown it beats the DCGAN
recipe at equal time; the conditional DCGAN reached 0.876 recognisable in 8 MNIST epochs
(bench/results/generative.json). EMA of G is the engine's --ema: every per-epoch measurement,
best.pt and sampling use the averaged generator.

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

A distance measured with a judge that cannot tell the classes apart means nothing, so the judge
is checked on labelled real images before training (`judge_check`): one not clearly better than
chance is dropped with a warning, results.json and the report say why, and no `fd` is reported.
"""
from __future__ import annotations

import math
import sys
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from ..data.augment import augment_batch
from ..engine.checkpoint import load_checkpoint
from ..errors import DataError, UsageError
from ..models import create_model
from ..specs.gan import GANOptions
from .generative_common import GenerativeTask, load_generative, save_grid
from .apply import accepts_onnx
from .lifecycle import Run, run

TASK = "gan"
CONFIDENT = 0.9     # a sample counts as recognisable when the classifier's top probability exceeds this
AUGMENT_BELOW = 10_000   # "auto" DiffAugment for training sets smaller than this
# The auto judge's epochs on large data: 3 MNIST epochs (about 700 steps at batch 256) gave 0.98+
# test accuracy. Below AUGMENT_BELOW images the classify recipe decides (it adapts to small data).
JUDGE_EPOCHS_LARGE = 3
# D's learning rate as a multiple of --lr when D is spectrally normalised and --d-lr is not given:
# a 1-Lipschitz D learns slower per step than a batch-norm one, and TTUR lets it keep up with G
# without the n_dis > 1 extra D steps that SNGAN used (each costs a forward/backward on this CPU).
SN_D_LR_FACTOR = 2.0
# The recipe's lr (6e-4, lensforge.recipes) was measured on MNIST's 60,000 images. On ORL's 320 faces (DiffAugment,
# 150 epochs, batch 32) it gave a held-out FD of 3736 against 2566 at DCGAN's 2e-4, so a training set under
# AUGMENT_BELOW images keeps 2e-4 unless --lr is given (bench/results/generative.json, docs/generative.md).
SMALL_DATA_LR = 2e-4
PROGRESS_ROWS = 16  # progress.png shows at most this many epochs (evenly spaced, first and last included)


def cpu_has_amx_bf16(cpuinfo: str | None = None) -> bool:
    """Does this CPU report AMX-BF16 (Sapphire Rapids and later Xeons)? `cpuinfo` is /proc/cpuinfo's
    text (read when None). The engine's own test (oneDNN "bf16 supported", or avx512_bf16) also says
    yes on CPUs that emulate bf16, where it made the DCGAN generator 3x slower (58 vs 184 ms/step,
    docs/generative.md), so the GAN asks for the matrix unit it was measured fast on."""
    if cpuinfo is None:
        try:
            cpuinfo = Path("/proc/cpuinfo").read_text()
        except OSError:
            return False
    return any(line.startswith("flags") and "amx_bf16" in line.split() for line in cpuinfo.splitlines())


def hinge_d_loss(real_logits: torch.Tensor, fake_logits: torch.Tensor) -> torch.Tensor:
    """D's hinge loss: mean(relu(1 - D(x))) + mean(relu(1 + D(G(z)))). Real logits above 1 and fake
    ones below -1 cost nothing, so D stops pushing samples it already separates with a margin."""
    return F.relu(1 - real_logits).mean() + F.relu(1 + fake_logits).mean()


def hinge_g_loss(fake_logits: torch.Tensor) -> torch.Tensor:
    """G's side of the hinge game: raise D's logit on generated images, -mean(D(G(z)))."""
    return -fake_logits.mean()


def bce_d_loss(real_logits: torch.Tensor, fake_logits: torch.Tensor) -> torch.Tensor:
    """DCGAN's D loss: binary cross-entropy with real = 1, generated = 0."""
    return F.binary_cross_entropy_with_logits(real_logits, torch.ones_like(real_logits)) + \
        F.binary_cross_entropy_with_logits(fake_logits, torch.zeros_like(fake_logits))


def bce_g_loss(fake_logits: torch.Tensor) -> torch.Tensor:
    """The non-saturating generator loss: -log D(G(z))."""
    return F.binary_cross_entropy_with_logits(fake_logits, torch.ones_like(fake_logits))


LOSSES = {"hinge": (hinge_d_loss, hinge_g_loss), "bce": (bce_d_loss, bce_g_loss)}


def resolve_loss(loss: str, spectral_norm: bool) -> str:
    """--loss auto: hinge with a spectral-norm D, bce with a batch-norm one (DCGAN)."""
    return loss if loss != "auto" else ("hinge" if spectral_norm else "bce")


def diff_augment(x: torch.Tensor) -> torch.Tensor:
    """DiffAugment (Zhao et al., 2020): random translation by 1/8 of the side and a cutout of half
    of it, applied to everything D sees, real and generated, in both players' steps. The ops are
    differentiable, so G still gets gradients through them; D can no longer memorise a few hundred
    training images, which otherwise ends a small-data GAN within a few epochs (D wins, G's
    gradients vanish)."""
    side = min(x.shape[-2:])
    return augment_batch(x, translate=max(1, side // 8), cutout_size=side // 2)


# ----------------------------------------------------------------------------- Frechet distance

def frechet_distance(f1: np.ndarray, f2: np.ndarray) -> float:
    """Frechet distance between Gaussians fitted to two feature sets (rows = samples):
    |mu1 - mu2|^2 + Tr(S1 + S2 - 2 (S1 S2)^1/2).

    Tr (S1 S2)^1/2 is the sum of the square roots of the eigenvalues of S1^1/2 S2 S1^1/2 (similar to
    S1 S2, and symmetric PSD), so two symmetric eigendecompositions replace a general matrix square
    root: same value to 1e-8 relative, 3-5x faster (256 features: 0.07 s vs 0.27 s), and no complex
    parts or singular-matrix fallbacks when there are fewer samples than features.
    """
    f1, f2 = np.asarray(f1, np.float64), np.asarray(f2, np.float64)
    mu1, mu2 = f1.mean(0), f2.mean(0)
    s1, s2 = np.cov(f1, rowvar=False), np.cov(f2, rowvar=False)
    w, v = np.linalg.eigh(s1)
    root1 = (v * np.sqrt(np.clip(w, 0, None))) @ v.T
    lam = np.linalg.eigvalsh(root1 @ s2 @ root1)
    return float(((mu1 - mu2) ** 2).sum() + np.trace(s1) + np.trace(s2) - 2 * np.sqrt(np.clip(lam, 0, None)).sum())


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


def judge_check(correct: int, n: int, num_classes: int) -> dict:
    """Is a judge clearly better than chance on n labelled real images? It must beat chance (1/K) by
    three binomial standard errors and by a quarter of the way from chance to perfect (0.325 for
    10 classes), so neither luck on a few images nor a barely-trained net passes."""
    chance = 1 / num_classes
    need = chance + max(3 * math.sqrt(chance * (1 - chance) / n), 0.25 * (1 - chance))
    acc = correct / n
    return {"fd_judge_accuracy": acc, "fd_judge_images": n, "fd_judge_chance": chance, "fd_judge_needed": need,
            "fd_judge_ok": acc >= need}


# ----------------------------------------------------------------------------- task

class GANTask(GenerativeTask):
    """G is the engine's model; D and its optimiser live here (stepped inside training_step and
    saved through state_dict), so resume, EMA, checkpoints and metrics.csv work as for every task."""

    name, Options = TASK, GANOptions
    # G's Adam betas: DCGAN's (0.5, 0.999), which D has always used (Radford et al. found beta1 = 0.9
    # made training oscillate); G had the engine's (0.9, 0.99). Checkpoints store their optimiser's
    # betas, so a run started before this resumes with the betas it was started with.
    adam_betas = (0.5, 0.999)
    # --precision auto on a CPU: bf16 autocast + channels_last where the CPU has AMX-BF16, where one
    # GAN step (G and D, batch 64, 28x28) took 21.6 ms vs 30.9 in fp32 at width 32 and 44 vs 72 at
    # width 64 (2-core Xeon, measured under the CPU lock); in the whole loop (data, EMA, per-epoch FD) a
    # median MNIST epoch took 26 s vs 29 s, 20 s more for the first (oneDNN set-up), and 150 ORL epochs at
    # 64 px 113 s vs 149 s (bench/results/generative.json). fp32 elsewhere, as for autoencode and vae.
    cpu_auto_precision = "bf16" if cpu_has_amx_bf16() else "fp32"

    def setup(self) -> None:
        super().setup()
        opts = self.opts
        c, h, w = self.ds.train.shape
        # On resume D is rebuilt from the checkpoint's d_kwargs; one written before spectral_norm existed
        # has no such key and gets the batch-norm D it was trained with (the constructor's default), and
        # --loss auto then resolves to bce as that run used.
        self.d_kwargs = (self.resume_state["d_kwargs"] if self.resume_state is not None else
                         {"in_channels": c, "image_size": [h, w], "width": opts.width,
                          "num_classes": self.model_kwargs["num_classes"], "arch": opts.d_arch,
                          "spectral_norm": opts.spectral_norm or opts.d_arch == "resnet"})
        self.d_arch = self.d_kwargs.get("arch", "dcgan")     # absent in checkpoints from before --d-arch
        self.spectral_norm = bool(self.d_kwargs.get("spectral_norm", False))
        self.loss = resolve_loss(opts.loss, self.spectral_norm)
        if self.resume_state is None and "lr" not in self.given and len(self.ds.train) < AUGMENT_BELOW:
            self.cfg.lr = min(self.cfg.lr, SMALL_DATA_LR)
            self.choices.append(f"lr {self.cfg.lr:g} for a training set under {AUGMENT_BELOW:,} images")
        self.d_lr = opts.d_lr or (SN_D_LR_FACTOR * self.cfg.lr if self.spectral_norm else self.cfg.lr)
        g = torch.Generator().manual_seed(self.cfg.seed + 99)
        self.fixed_z = torch.randn(64, opts.latent_dim, generator=g)
        self.fixed_labels = (torch.arange(64) % self.ds.num_classes) if opts.conditional else None
        self.progress: list[torch.Tensor] = []          # one uint8 row of fixed-noise samples per epoch
        self.augment = opts.augment == "on" or (opts.augment == "auto" and len(self.ds.train) < AUGMENT_BELOW)
        self.judge, self.ref_feats, self.judge_notes = None, None, {}
        if opts.fd_classifier not in ("auto", "none") and not Path(opts.fd_classifier).exists():
            raise UsageError(f"--fd-classifier {opts.fd_classifier}: no such file or folder")

    def network(self, channels: int, size: list[int]) -> tuple[str, dict]:
        o, ds = self.opts, self.ds
        if o.conditional and (not ds.classes or ds.train.labels is None):
            raise DataError(f"{o.data}: --conditional needs labelled images (one sub-folder per class)")
        return "dcgan-g", {"in_channels": channels, "image_size": size, "latent_dim": o.latent_dim, "width": o.width,
                           "num_classes": ds.num_classes if o.conditional else 0}

    def build_model(self) -> torch.nn.Module:
        gen = super().build_model()                  # G first, then D: the same initial weights as ever
        self.disc = create_model("dcgan-d", **self.d_kwargs).to(self.rt.device)
        self.d_opt = torch.optim.Adam(self.disc.parameters(), lr=self.d_lr, betas=(0.5, 0.999))
        return gen

    def scheduled_optimizers(self) -> list:
        """D's optimiser follows --schedule at its own peak rate (the engine steps G's)."""
        return [(self.d_opt, self.d_lr)]

    def has_validation(self) -> bool:
        return False        # fd is measured against training images: nothing is held out

    def run_name(self) -> str:
        return super().run_name() + ("-cond" if self.opts.conditional else "")

    def title(self) -> str:
        return f"lensforge gan: {self.opts.data} / {self.opts.model}{' (conditional)' if self.opts.conditional else ''}"

    def summary(self) -> str:
        d = ("residual spectral-norm D" if self.d_arch == "resnet" else
             "spectral-norm D" if self.spectral_norm else "batch-norm D")
        return f"gan: {d}, {self.loss} loss, D lr {self.d_lr:g} / G lr {self.cfg.lr:g}"

    def extra_meta(self) -> dict:
        return {**super().extra_meta(), "d_kwargs": self.d_kwargs}

    def config_extra(self) -> dict:
        return {**super().config_extra(), "d_kwargs": self.d_kwargs, "diff_augment": self.augment,
                "gan_loss": self.loss, "d_lr_used": self.d_lr}   # d_lr itself is the option as given

    def start(self, run_dir: Path) -> None:
        """Find (or train, for 'auto') the judge, check it on labelled real images, fit the reference."""
        super().start(run_dir)
        judge = self._judge(run_dir)
        if judge is None:
            return
        self.judge_notes = self._check(judge)
        if self.judge_notes.get("fd_judge_ok") is False:
            n = self.judge_notes
            warning = (f"the Frechet-distance judge {judge.source} is not clearly better than chance: accuracy "
                       f"{n['fd_judge_accuracy']:.3f} on {n['fd_judge_images']} real images, chance "
                       f"{n['fd_judge_chance']:.3f}, needed {n['fd_judge_needed']:.3f}; fd is not measured")
            self.judge_notes["fd_warning"] = warning
            print(f"warning: {warning}", file=sys.stderr)
            return
        self.judge = judge
        self.ref_feats, _ = judge(real_images(self.ds.train, self.opts.fd_samples, seed=1))

    def _judge(self, run_dir: Path) -> FeatureJudge | None:
        """The classifier whose features define the Frechet distance (trained here when 'auto')."""
        opts, ds, cfg = self.opts, self.ds, self.cfg
        if opts.fd_classifier == "none":
            return None
        weights = opts.fd_classifier
        if weights == "auto":
            if not ds.classes or len(ds.classes) < 2:
                print(f"{opts.data}: no class labels, so no classifier to measure a Frechet distance with",
                      file=sys.stderr)
                return None
            target = run_dir / "fd_classifier"
            if not (target / "weights" / "best.pt").exists():
                from . import classify
                print(f"training the feature classifier for the Frechet distance into {target}", file=sys.stderr)
                large = {"epochs": JUDGE_EPOCHS_LARGE} if len(ds.train) >= AUGMENT_BELOW else {}
                classify.train(opts.data, model="cnn", out=target, data_dir=opts.data_dir, download=opts.download,
                               image_size=opts.image_size, seed=cfg.seed, device=cfg.device, progress=cfg.progress,
                               label_smoothing=0.0, **large)   # smoothing caps confidence near 0.9
            weights = str(target)
        return FeatureJudge(weights, ds.train.shape, self.rt.device)

    def _check(self, judge: FeatureJudge) -> dict:
        """judge_check on real labelled images: the test split, else training images (optimistic)."""
        ds = self.ds
        split, where = (ds.test, "test") if ds.test is not None and ds.test.labels is not None else (ds.train, "train")
        if not ds.classes or split.labels is None or sorted(judge.classes) != sorted(ds.classes):
            return {"fd_judge_check": "not possible: the data's labels are not the judge's classes"}
        idx = torch.randperm(len(split), generator=torch.Generator().manual_seed(3))[:self.opts.fd_samples]
        x, y = split.take(idx.sort().values)
        _, probs = judge(x.float() / 255)
        mapping = torch.tensor([ds.classes.index(c) for c in judge.classes])
        correct = int((mapping[probs.argmax(1)] == y.cpu()).sum())
        return {**judge_check(correct, len(y), len(ds.classes)), "fd_judge_split": where}

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
        d_loss_fn, g_loss_fn = LOSSES[self.loss]
        d_real, d_fake = self.disc(aug(x), y), self.disc(aug(fake.detach()), y)
        d_loss = d_loss_fn(d_real, d_fake)
        d_loss.backward()
        self.d_opt.step()
        # generator loss; the engine backpropagates and steps G. The gradients it leaves on D's
        # parameters are discarded by the zero_grad above on the next step.
        g_out = self.disc(aug(fake), y)
        g_loss = g_loss_fn(g_out)
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
        samples = self.generate(gen, self.fixed_z, self.fixed_labels)
        epoch = len(self.progress) + 1
        save_grid(samples, self.run_dir / "samples" / f"epoch_{epoch:03d}.png", ncols=8)
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

    def final_results(self, run_dir: Path, fit) -> dict:
        from ..report import image_grid

        ds, opts, gen = self.ds, self.opts, self.model
        save_grid(self.generate(gen, self.fixed_z, self.fixed_labels), run_dir / "samples.png", ncols=8)
        self.figures.append(("Samples from the selected weights", "samples.png"))
        if self.progress:
            epochs = progress_epochs(len(self.progress))
            # one titled strip per epoch shown: a matplotlib axes per strip, not per sample
            image_grid(torch.stack([strip(self.progress[e - 1]) for e in epochs]), run_dir / "progress.png", ncols=1,
                       titles=[f"epoch {e}" for e in epochs], scale=2)
            self.figures.append(("Fixed-noise progress: the same noise at each epoch shown", "progress.png"))
        out: dict = {"samples_image_size": list(ds.train.shape), "diff_augment": self.augment, "gan_loss": self.loss,
                     "d_spectral_norm": self.spectral_norm, "d_arch": self.d_arch, "d_lr": self.d_lr, **self.judge_notes}
        if self.judge is None:
            out["fd"] = ("not measured: " + self.judge_notes["fd_warning"] if "fd_warning" in self.judge_notes else
                         "not measured (no labelled data or --fd-classifier none)")
            return out
        judge = self.judge
        out["fd_classifier"] = judge.source
        out["fd_features"] = "penultimate layer of the lensforge classifier above, trained on the same dataset"
        out["fd_samples"] = opts.fd_samples
        out["fd_per_epoch"] = [round(float(r["fd"]), 3) for r in fit.history if "fd" in r]
        out["recognisable_per_epoch"] = [round(float(r["recognisable"]), 4) for r in fit.history if "recognisable" in r]
        q = self.quality(gen)
        out.update({"fd_vs_train": q["fd"], "recognisable_fraction": q["recognisable"],
                    "recognisable_threshold": CONFIDENT})
        if "label_agreement" in q:
            out["label_agreement"] = q["label_agreement"]
        if ds.test is not None:
            test_feats, test_probs = judge(real_images(ds.test, opts.fd_samples, seed=2))
            out["fd_vs_test"] = self.quality(gen, reference=test_feats)["fd"]
            # the floor: real held-out images against real training images, same sample size
            out["fd_real_test_vs_train"] = frechet_distance(test_feats, self.ref_feats)
            out["real_test_recognisable_fraction"] = (test_probs.max(1).values > CONFIDENT).float().mean().item()
        return out


def strip(images: torch.Tensor, gap: int = 2) -> torch.Tensor:
    """(N, C, H, W) uint8 images side by side as one (C, H, N*W + gaps) image, mid-grey gaps."""
    n, c, h, w = images.shape
    out = torch.full((c, h, n * w + (n - 1) * gap), 128, dtype=images.dtype)
    for i, img in enumerate(images):
        out[:, :, i * (w + gap):i * (w + gap) + w] = img
    return out


def progress_epochs(n: int, rows: int = PROGRESS_ROWS) -> list[int]:
    """The epochs (1-based) progress.png shows: all of them up to `rows`, else evenly spaced ones
    from the first to the last."""
    if n <= rows:
        return list(range(1, n + 1))
    return sorted({round(1 + i * (n - 1) / (rows - 1)) for i in range(rows)})


def train(data: str | None = None, *, out: str | Path | None = None, resume: str | Path | None = None,
          **options) -> Run:
    """Train a DCGAN and write a run folder (per-epoch sample grids, progress strip, FD curve, report).

    `options` are any GANOptions or TrainConfig fields; defaults are the gan recipe (lensforge.recipes).
    """
    return run(GANTask, data, out=out, resume=resume, **options)


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


@accepts_onnx(TASK)
def load(weights: str | Path, device: str = "auto") -> GANGenerator:
    return GANGenerator(weights, device)
