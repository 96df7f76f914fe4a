"""whitenet (the 32x32 colour default) and what it brought: whitening filters, parameter groups,
alternating flips, flip+shift test-time augmentation, --model auto with the network's recipe."""
from __future__ import annotations

import pytest
import torch

from conftest import write_image_folder


def test_whitening_filters_decorrelate_the_training_patches():
    from lensforge.models import create_model

    g = torch.Generator().manual_seed(0)
    base = torch.rand(400, 3, 16, 16, generator=g)
    images = (base + torch.roll(base, 1, dims=-1) + 0.5 * base[:, :1]) / 2.5   # correlated pixels and channels
    net = create_model("whitenet", in_channels=3, num_classes=10, image_size=[16, 16])
    net.fit_to_data(images)
    with torch.no_grad():
        out = net.whiten(net.norm(images)) - net.whiten.bias.view(1, -1, 1, 1)
    half = out[:, :12].permute(1, 0, 2, 3).reshape(12, -1)
    cov = half @ half.T / half.shape[1]
    # each output channel has unit variance (up to eps on the weakest), and they are uncorrelated
    assert torch.allclose(cov.diagonal()[:8], torch.ones(8), atol=0.02)
    off = cov - torch.diag(cov.diagonal())
    assert off.abs().max() < 0.02
    # the second half are the negatives (GELU keeps both signs)
    assert torch.allclose(net.whiten.weight[12:], -net.whiten.weight[:12])
    assert not net.whiten.weight.requires_grad
    # a uint8 sample (what the loaders hold) gives the filters of the same images as [0, 1] floats
    as_bytes = (images.clamp(0, 1) * 255).round().to(torch.uint8)
    other = create_model("whitenet", in_channels=3, num_classes=10, image_size=[16, 16])
    other.fit_to_data(as_bytes)
    net.fit_to_data(as_bytes.float() / 255)
    assert torch.allclose(other.whiten.weight, net.whiten.weight, atol=1e-4)


def test_parameter_groups_run_bn_biases_faster_with_the_same_decay_per_step():
    from lensforge.engine.config import TrainConfig
    from lensforge.engine.trainer import build_optimizer
    from lensforge.models import create_model
    from lensforge.models.whitenet import BN_BIAS_LR_SCALE

    net = create_model("whitenet", in_channels=3, num_classes=4, image_size=[32, 32], width=8)
    opt = build_optimizer(net, TrainConfig(optimizer="sgd", lr=0.5, weight_decay=1e-3))
    fast = [g for g in opt.param_groups if g["lr_scale"] == BN_BIAS_LR_SCALE]
    slow = [g for g in opt.param_groups if g["lr_scale"] == 1.0]
    assert len(fast) == len(slow) == 1
    assert fast[0]["weight_decay"] == pytest.approx(1e-3 / BN_BIAS_LR_SCALE) and slow[0]["weight_decay"] == 1e-3
    grouped = {id(p) for g in opt.param_groups for p in g["params"]}
    trainable = {id(p) for p in net.parameters() if p.requires_grad}
    assert grouped == trainable and id(net.whiten.weight) not in grouped
    assert all(p.dim() == 1 for p in fast[0]["params"])   # only the norms' biases


def test_alternating_flips_mirror_each_image_every_other_epoch():
    from lensforge.data.catalog import Augment
    from lensforge.data.loader import Batches
    from lensforge.data.sets import TensorSet

    x = torch.randint(0, 256, (40, 3, 8, 8), dtype=torch.uint8)
    batches = Batches(TensorSet(x, torch.zeros(40, dtype=torch.long)), 10, augment=Augment(flip=True, alternating_flip=True))
    views = [torch.cat([b for b, _ in batches.epoch(e)]) for e in range(4)]
    mirrored = [(v - x.float() / 255).abs().flatten(1).amax(1) > 0 for v in views]
    assert 10 < int(mirrored[0].sum()) < 30                       # a seeded half, not all or none
    assert torch.equal(mirrored[1], ~mirrored[0]) and torch.equal(mirrored[2], mirrored[0])
    assert torch.equal(views[1], torch.where(mirrored[0][:, None, None, None], x.float() / 255, x.float().flip(-1) / 255))
    assert torch.equal(views[3], views[1])


def test_flip_shift_tta_is_the_weighted_mean_of_six_views():
    from lensforge.models.classifiers import TestTimeAugment

    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.Flatten(), torch.nn.LazyLinear(5))
    x = torch.rand(2, 3, 8, 8)
    model(x)
    ls = lambda v: model(v).log_softmax(1)  # noqa: E731
    pair = lambda v: (ls(v) + ls(v.flip(-1))) / 2  # noqa: E731
    p = torch.nn.functional.pad(x, (1, 1, 1, 1), mode="reflect")
    expected = pair(x) / 2 + pair(p[..., :8, :8]) / 4 + pair(p[..., 2:, 2:]) / 4
    assert torch.allclose(TestTimeAugment(model, "flip+shift")(x), expected, atol=1e-6)
    assert torch.allclose(TestTimeAugment(model, "flip")(x), pair(x), atol=1e-6)
    assert torch.equal(TestTimeAugment(model, "none")(x), model(x))
    with pytest.raises(ValueError, match="unknown test-time augmentation"):
        TestTimeAugment(model, "rotate")


def test_auto_picks_whitenet_for_small_colour_images_and_the_caller_wins(tmp_path):
    from lensforge.engine.checkpoint import load_checkpoint
    from lensforge.tasks import classify

    root = write_image_folder(tmp_path / "colours", classes=("r", "g", "b"), n=40, size=(32, 32))
    run = classify.train(str(root), epochs=3, width=16, label_smoothing=0.1, out=tmp_path / "run", progress=False)
    ckpt = load_checkpoint(run.best_weights, task="classify")
    assert ckpt["model_name"] == "whitenet" and ckpt["tta"] == "flip+shift" and ckpt["augment"]["alternating_flip"]
    assert ckpt["augment"]["cutout"] == 8       # painted with the batch's means: black squares broke this folder
    cfg = ckpt["config"]
    assert cfg["optimizer"] == "muon" and cfg["momentum"] == 0.85 and cfg["epochs"] == 3   # recipe, caller's epochs
    assert ckpt["options"]["label_smoothing"] == 0.1 and ckpt["model_kwargs"]["width"] == 16
    # three colour classes from 96 training images: far above chance (1/3)
    assert run.results["test_accuracy"] >= 0.9 and run.results["tta"] == "flip+shift"
    clf = classify.load(run.dir)
    assert clf.tta == "flip+shift" and clf.predict([root / "g" / "0.png"])[0].label == "g"
    # the ONNX graph carries the whitening layer and the six-view TTA, and predicts the same
    from lensforge import export as lfexport

    res = lfexport.export(run.dir, out=tmp_path / "model.onnx")
    assert res.parity["classifier"] <= 1e-4
    ox = classify.load(tmp_path / "model.onnx")
    files = [root / c / f"{i}.png" for c in ("r", "g", "b") for i in range(3)]
    assert [p.label for p in ox.predict(files)] == [p.label for p in clf.predict(files)]


def test_auto_keeps_the_cnn_for_other_shapes_and_blocks_need_a_resnet(tmp_path):
    from lensforge.errors import UsageError
    from lensforge.tasks import classify
    from lensforge.tasks.classify import pick_model

    assert pick_model((1, 28, 28)) == "cnn" and pick_model((3, 64, 64)) == "cnn" and pick_model((3, 32, 32)) == "whitenet"
    root = write_image_folder(tmp_path / "colours", n=8, size=(32, 32))
    with pytest.raises(UsageError, match="--blocks applies to the resnet model only"):
        classify.train(str(root), blocks=2, out=tmp_path / "r")
    assert not (tmp_path / "r").exists()


@pytest.mark.parametrize("size", [1, 7, 8, 12])
def test_cutout_zeroes_a_square_of_exactly_the_asked_size(size):
    """`--cutout 8` must zero an 8x8 square (an even size once zeroed size+1, a 9x9 one)."""
    from lensforge.data.augment import cutout
    x = torch.ones(64, 1, 32, 32)
    out = cutout(x, size, torch.Generator().manual_seed(0))
    zero = out[:, 0] == 0
    rows, cols = zero.any(2).sum(1), zero.any(1).sum(1)
    inner = (rows > 0) & (zero.sum((1, 2)) == rows * cols)          # every mask is one rectangle
    assert bool(inner.all())
    # squares whose centre keeps them inside the image are exactly size x size; clipped ones smaller
    assert int(rows.max()) == size and int(cols.max()) == size
    assert bool(((rows <= size) & (cols <= size)).all())
    assert cutout(x, 0) is x


def test_cutout_mean_fill_paints_each_channels_batch_mean():
    """The loader's cutout paints the batch's channel means (a black square on [0, 1] images is an
    edge the whitening layer amplifies); "zero" stays for DiffAugment's [-1, 1] images."""
    from lensforge.data.augment import cutout
    from lensforge.data.catalog import Augment
    g = torch.Generator().manual_seed(1)
    x = torch.stack([torch.full((32, 32), 10), torch.full((32, 32), 200), torch.full((32, 32), 90)], 0)
    x = x[None].repeat(16, 1, 1, 1).to(torch.uint8)
    x[:8, 0] = 30                                             # channel 0's batch mean: 20
    out = cutout(x, 8, torch.Generator().manual_seed(0), fill="mean")
    changed = (out != x).any(1)
    assert out.dtype == torch.uint8 and bool(changed.any())
    painted = out.permute(0, 2, 3, 1)[changed]
    assert painted.unique(dim=0).tolist() == [[20, 200, 90]]
    f = cutout(x.float() / 255, 8, torch.Generator().manual_seed(0), fill="mean")
    assert torch.allclose(f, out.float() / 255, atol=0.5 / 255)   # float and uint8 paint the same square
    assert Augment(cutout=8).batch_kwargs()["cutout_fill"] == "mean"
    with pytest.raises(ValueError, match="unknown cutout fill 'grey'"):
        cutout(x, 8, g, fill="grey")


def test_translate_reflect_fill_mirrors_the_border_and_matches_zero_shifts():
    """The loader's shifts mirror the border (as the flip+shift test views do) instead of padding
    black; the shift drawn is the same either way, only the uncovered strip differs."""
    from lensforge.data.augment import random_translate
    from lensforge.data.catalog import Augment
    x = (torch.arange(64, dtype=torch.uint8) * 3 + 10).view(1, 1, 8, 8).repeat(32, 3, 1, 1)
    zero = random_translate(x, 2, torch.Generator().manual_seed(5), fill="zero")
    refl = random_translate(x, 2, torch.Generator().manual_seed(5), fill="reflect")
    padded = torch.nn.functional.pad(x, (2, 2, 2, 2), mode="reflect")
    for i in range(32):   # each output is some 8x8 window of the mirrored image, at the zero version's offset
        hits = [(dy, dx) for dy in range(5) for dx in range(5)
                if torch.equal(padded[i, :, dy:dy + 8, dx:dx + 8], refl[i])]
        assert hits
        dy, dx = hits[0]
        zp = torch.nn.functional.pad(x[i:i + 1], (2, 2, 2, 2))[0]
        assert torch.equal(zp[:, dy:dy + 8, dx:dx + 8], zero[i])
    assert bool((zero == 0).any()) and not bool((refl == 0).any())   # x has no zero pixel: no black bars
    assert Augment(translate=2).batch_kwargs()["translate_fill"] == "reflect"
    small = torch.ones(2, 1, 3, 3, dtype=torch.uint8)   # a shift as large as the image: nothing to mirror
    assert random_translate(small, 3, torch.Generator().manual_seed(0), fill="reflect").shape == small.shape
    with pytest.raises(ValueError, match="unknown translate fill 'wrap'"):
        random_translate(x, 2, fill="wrap")
