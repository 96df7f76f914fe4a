"""Default training recipes per task, in one torch-free module so that the CLI (which builds
its --help without importing torch) and each task's Python `train()` start from the same values.
A user's options override these key by key."""
from __future__ import annotations

RECIPES: dict[str, dict] = {
    # bench/NOTES.md: a higher peak LR and a weight EMA reach 0.93 on Fashion-MNIST epochs sooner.
    "classify": {"epochs": 15, "batch_size": 256, "lr": 5e-3, "ema": 0.999},
    # No weight decay for the generative models: it fights reconstruction and likelihood.
    "autoencode": {"epochs": 10, "batch_size": 128, "lr": 2e-3, "weight_decay": 0.0, "monitor": "val_mse", "mode": "min"},
    "vae": {"epochs": 10, "batch_size": 128, "lr": 2e-3, "weight_decay": 0.0, "monitor": "val_neg_elbo", "mode": "min"},
    # A constant rate, 3x the DCGAN paper's 2e-4 for both players (docs/generative.md, 28 MNIST epochs, bf16, 2-core
    # AMX Xeon): 2e-4 -> 0.776 recognisable, 4e-4 -> 0.797, 6e-4 -> 0.809 (FD 158.6 / 123.8 / 109.6); a linear
    # decay to 0 did worse at 2e-4 (0.72 vs 0.77 at epoch 25) and at 6e-4 (0.78 vs 0.81 at epoch 24).
    # fd: Frechet distance to training images (no validation split). EMA of G's weights: samples and best.pt use
    # the average. 28 MNIST epochs fit the 15-minute budget of issue 17 on that CPU: 571 s at 20-23 s per epoch.
    "gan": {"epochs": 28, "batch_size": 64, "lr": 6e-4, "weight_decay": 0.0, "schedule": "constant", "warmup": 0.0,
            "ema": 0.999, "monitor": "fd", "mode": "min"},
    "colorize": {"epochs": 8, "batch_size": 64, "lr": 2e-3, "monitor": "val_loss", "mode": "min"},
    "stylize": {"epochs": 4, "batch_size": 8, "lr": 3e-3, "monitor": "val_loss", "mode": "min"},
    # Sized for ISBI-2012's budget of 15 minutes on the 2-core CPU: an epoch (25 steps of 4 crops of 256 px,
    # U-Net width 16 depth 4) takes 28 s there, so 30 epochs train in about 14 minutes.
    "segment": {"epochs": 30, "batch_size": 4, "lr": 3e-3, "weight_decay": 1e-4, "monitor": "val_miou", "mode": "max"},
    # AdamW 2e-3 with a short warm-up and cosine decay, batch 16, EMA 0.998 over ~20 steps/epoch on BCCD,
    # gradient clipping against early CIoU spikes. Timed on BCCD (292 train+val images, model n at the default
    # 320 px): 11.4 img/s on the idle 2-core Zen 3 in fp32 (6.4 at 416), so 90 epochs (~1,640 steps) fit in
    # about 40 minutes; more steps at 320 px beat fewer at 416 for a from-scratch detector on 292 images.
    "detect": {"epochs": 90, "batch_size": 16, "lr": 2e-3, "weight_decay": 5e-4, "schedule": "cosine", "warmup": 0.05,
               "ema": 0.998, "clip_grad": 10.0, "monitor": "val_map50", "mode": "max"},
    # An "epoch" is --steps batches from each identity; monitored on held-out faces' reconstruction.
    "faceswap": {"epochs": 20, "batch_size": 16, "lr": 5e-4, "weight_decay": 0.0, "schedule": "cosine", "warmup": 0.02,
                 "monitor": "val_l1", "mode": "min"},
}


# A network's own recipe inside its task's, for the options the caller did not set. classify's
# "whitenet" (models/whitenet.py) is the default for 32x32 colour images (CIFAR-10), after airbench.
# Its SGD form (airbench94 in lensforge's mean-loss terms: airbench's lr 11.5 and decay 0.0153 per
# 1024 images of a summed loss, divided by 1024 (1 + 1/(1 - momentum)), are lr 1.5 and weight decay
# 1.33e-3 for the mean loss over a batch of 1024) reached, on the JPEG CIFAR-10 here (2-core AMX
# Xeon, bf16, bench/results/cifar10_*.md): width 64, 10 epochs 0.903, 20 epochs 0.9118, 36 epochs
# 0.9149 in 28.8 min; width 96, 22 epochs 0.9180 in 35.0 min. Muon for the kernels (airbench94_muon,
# engine/muon.py) reaches in 10 epochs what SGD reached in 20 (width 64: 0.9098 against 0.903, 8.0
# min), so the time goes into width instead: stages of 96, 384, 384 channels, 20 epochs, 0.9190
# (0.9085 plain) in 35.3 min (cifar10_muon_w96_20ep.md). Its rates at batch 1024 (airbench94_muon
# trains at 2000, 27% dearer per image here): the SGD part's lr and per-step decay halved (0.87,
# 2.3e-3), Muon's lr over sqrt(2) (0.17), no warm-up (a linear decay from the first step). Width 96
# fits the training set to 0.999, so an 8 px cutout regularises it: painted black (as before issue
# 17's last session) it cost the tests' 120-image three-colour folder its learning (3 epochs: 0.54
# test accuracy, 1.0 on the training images: the square's edges, amplified by the whitening layer,
# were what the net learned) and on CIFAR-10 gave 0.9196; painted with the batch's channel means
# (data/augment.cutout) the folder learns again and CIFAR-10 reaches 0.9199 (0.9122 plain) in 32.2
# min (cifar10_muon_w96_20ep_cutout8mean.md); 22 epochs gave 0.9188 (0.9129 plain) in 37.9 min, so
# 20 stay. Cutout lifts the plain accuracy 0.4 points but shrinks what test-time augmentation adds
# (+0.6-0.8 points against +1.05 without). The 2 px training shifts mirror the uncovered border
# (data/augment.random_translate "reflect", what airbench's crops and the flip+shift test views do)
# instead of padding it black: 0.9218 (0.9137 plain) in 34.3 min
# (cifar10_muon_w96_20ep_cutout8mean_reflect.md). Label smoothing 0.2, flips alternating by epoch,
# flip+shift test-time augmentation, no EMA.
MODEL_RECIPES: dict[str, dict[str, dict]] = {
    "classify": {
        "whitenet": {"width": 96, "epochs": 20, "batch_size": 1024, "optimizer": "muon", "lr": 0.87, "muon_lr": 0.17,
                     "momentum": 0.85, "weight_decay": 2.3e-3, "schedule": "onecycle", "warmup": 0.0, "ema": 0.0,
                     "label_smoothing": 0.2, "translate": 2, "flip": True, "cutout": 8,
                     "alternating_flip": True, "tta": "flip+shift"},
    },
}


def with_recipe(task: str, options: dict) -> dict:
    """The task's recipe overlaid with the caller's options."""
    return {**RECIPES[task], **options}
