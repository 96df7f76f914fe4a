"""Digits in users' photos: the digit augmentations, the photo renderer of bench/digit_photos.py,
and the fixes to the digit preprocessing that its renders showed were needed."""
from __future__ import annotations

import importlib.util
import io
import sys
from dataclasses import fields
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image, ImageDraw

from lensforge.data import Augment, load_dataset
from lensforge.data import augment as A
from lensforge.data.loader import Batches
from lensforge.data.preprocess import PreprocessSpec, load_and_prepare
from lensforge.data.sets import TensorSet

from conftest import write_idx_dataset

ROOT = Path(__file__).resolve().parents[1]
DIGIT = PreprocessSpec((28, 28), 1, "digit")
DIGIT_OPS = dict(stroke=0.5, scale=0.15, rotate=15.0, blur=0.5)


def gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def bar_batch(n: int = 8) -> torch.Tensor:
    """uint8 batch of 3 px wide vertical bars with a foot: an 'L', bright on black like MNIST."""
    x = torch.zeros(n, 1, 28, 28, dtype=torch.uint8)
    x[:, :, 5:22, 9:12] = 255
    x[:, :, 19:22, 9:19] = 255
    return x


def ink_area(x: torch.Tensor) -> torch.Tensor:
    return (x.float() > 127).flatten(1).sum(1).float()


# ----------------------------------------------------------------------------- augmentation ops

def test_digit_ops_keep_shape_dtype_and_range():
    x = bar_batch(16)
    y = A.augment_batch(x, translate=2, **DIGIT_OPS, generator=gen())
    assert y.shape == x.shape and y.dtype == torch.uint8
    assert not torch.equal(y, x)
    f = A.augment_batch(x.float() / 255, translate=2, **DIGIT_OPS, generator=gen())
    assert f.dtype == torch.float32 and f.min() >= 0 and f.max() <= 1.0 + 1e-6


def test_digit_ops_are_deterministic_for_a_seed():
    x = bar_batch(16)
    a = A.augment_batch(x, translate=2, **DIGIT_OPS, generator=gen(5))
    b = A.augment_batch(x, translate=2, **DIGIT_OPS, generator=gen(5))
    c = A.augment_batch(x, translate=2, **DIGIT_OPS, generator=gen(6))
    assert torch.equal(a, b) and not torch.equal(a, c)


def test_ops_that_are_off_draw_nothing():
    """Datasets without the digit ops (fashion-mnist, cifar10) keep exactly their old streams."""
    x = bar_batch(16)
    assert torch.equal(A.augment_batch(x, translate=2, generator=gen(3)), A.random_translate(x, 2, gen(3)))


def test_dilation_thickens_and_erosion_thins_the_stroke():
    x = bar_batch(1)
    assert torch.equal(A.dilate(x), torch.nn.functional.max_pool2d(x.float(), 3, stride=1, padding=1))
    assert ink_area(A.dilate(x)) > 1.5 * ink_area(x)
    assert 0 < ink_area(A.erode(x)) < 0.6 * ink_area(x)
    y = A.random_stroke(bar_batch(64), 1.0, gen())
    area = ink_area(y)
    assert (area > ink_area(x)).sum() >= 16 and (area < ink_area(x)).sum() >= 16  # both ways, about half each
    assert torch.equal(A.random_stroke(bar_batch(4), 0.0, gen()), bar_batch(4))


def test_rotation_turns_an_asymmetric_pattern():
    x = bar_batch(1)
    turned = A.affine(x, torch.tensor([1.0]), torch.tensor([90.0]))
    assert torch.equal(turned, torch.rot90(x, 1, (2, 3)))   # counter-clockwise as displayed
    assert not torch.equal(turned, torch.rot90(x, -1, (2, 3)))
    small = A.affine(x, torch.tensor([0.5]), torch.tensor([0.0]))
    assert ink_area(small) < 0.4 * ink_area(x)


def test_random_affine_stays_within_its_ranges():
    x = bar_batch(64)
    y = A.random_affine(x, 0.15, 15.0, gen())
    ratio = ink_area(y) / ink_area(x)
    assert ratio.min() > 0.6 and ratio.max() < 1.6   # zoom 0.85-1.15 changes area by 0.72-1.32
    assert torch.equal(A.random_affine(x, 0.0, 0.0, gen()), x)


def test_blur_keeps_ink_and_softens_edges():
    x = bar_batch(2).float()
    y = A.gaussian_blur(x, torch.tensor([0.0, 1.0]))
    assert torch.allclose(y[0], x[0])
    assert abs(y[1].sum() - x[1].sum()) < 0.01 * x[1].sum()
    assert ((y[1] > 0) & (y[1] < 255)).sum() > 2 * ((x[1] > 0) & (x[1] < 255)).sum()


# ----------------------------------------------------------------------------- defaults and options

def test_handwriting_sets_train_with_the_digit_ops_by_default(tmp_path):
    """MNIST's default recipe, and the bundled digits set's, include the pen/zoom/rotation/blur ops
    (measured: bench/results/mnist_digit_robustness.md); Fashion-MNIST keeps exactly its old
    augmentation (clothes are not handwriting)."""
    data = tmp_path / "data"
    write_idx_dataset(data / "mnist")
    write_idx_dataset(data / "fashion-mnist")
    for name in ("mnist", "digits"):
        aug = load_dataset(name, data_dir=data, download=False).augment
        assert (aug.translate, aug.flip, aug.cutout) == (2, False, 0), name
        assert min(aug.stroke, aug.scale, aug.rotate, aug.blur) > 0, name
        assert aug.rotate <= 30 and aug.scale <= 0.3, name     # a 6 must not turn into a 9
    assert load_dataset("fashion-mnist", data_dir=data, download=False).augment == Augment(translate=0, flip=True)


def test_resume_keeps_the_augmentation_the_run_started_with(mnist_dir, tmp_path):
    """MNIST's default changed: a run started under the new default resumes with it, and one started
    before (its checkpoint lists no digit ops) resumes without them, so both continue exactly."""
    import shutil

    from lensforge.engine.checkpoint import load_checkpoint, save_checkpoint
    from lensforge.tasks.classify import train

    default = load_dataset("mnist", data_dir=mnist_dir, download=False).augment.to_dict()
    new = train("mnist", data_dir=mnist_dir, model="mlp", epochs=1, batch_size=64, out=tmp_path / "new",
                progress=False, precision="fp32")
    assert load_checkpoint(new.dir / "weights" / "last.pt")["augment"] == default
    old = tmp_path / "old"
    shutil.copytree(new.dir, old)
    last = old / "weights" / "last.pt"
    ckpt = load_checkpoint(last)
    ckpt["augment"] = {"translate": 2, "flip": False, "cutout": 0}      # what lensforge stored before
    for key in ("stroke", "scale", "rotate", "blur"):
        ckpt["options"].pop(key, None)
    save_checkpoint(last, {k: v for k, v in ckpt.items() if k not in ("format", "version")})
    for run, expected in ((new.dir, default), (old, {**default, "stroke": 0.0, "scale": 0.0, "rotate": 0.0,
                                                      "blur": 0.0})):
        resumed = train(resume=run, epochs=2, progress=False)
        assert load_checkpoint(resumed.dir / "weights" / "last.pt")["augment"] == expected, run.name


def test_every_augment_setting_is_an_option_and_reaches_augment_batch():
    from lensforge.specs.classify import ClassifyOptions

    names = {f.name for f in fields(ClassifyOptions)}
    # alternating_flip is a network recipe's setting (whitenet), deliberately not a flag
    assert {f.name for f in fields(Augment)} - {"alternating_flip"} <= names
    A.augment_batch(bar_batch(2), **Augment(**DIGIT_OPS).batch_kwargs(), generator=gen())  # every key accepted


def test_batches_apply_the_digit_ops():
    """The training batches get the rotation, not only translate/flip/cutout."""
    data = TensorSet(bar_batch(32), torch.zeros(32, dtype=torch.long))
    plain = next(iter(Batches(data, 32, augment=Augment())))[0]
    turned = next(iter(Batches(data, 32, augment=Augment(rotate=30.0), seed=1)))[0]
    assert not torch.equal(plain, turned)


@pytest.fixture(scope="module")
def digits_run(tmp_path_factory):
    from lensforge.tasks.classify import train

    out = tmp_path_factory.mktemp("runs") / "digits"
    return train("digits", model="mlp", epochs=1, stroke=0.3, rotate=10.0, blur=0.0, out=out, progress=False)


def test_options_override_the_dataset_defaults(digits_run):
    import yaml

    aug = yaml.safe_load((digits_run.dir / "config.yaml").read_text())["augment"]
    assert aug["rotate"] == 10.0 and aug["blur"] == 0.0 and aug["stroke"] == 0.3 and aug["translate"] == 2


def test_resumed_old_run_keeps_its_augmentation(digits_run):
    """A run started before the digit ops existed resumes with them off, as it was trained."""
    from lensforge.engine.checkpoint import load_checkpoint, save_checkpoint
    from lensforge.tasks.classify import train

    last = digits_run.dir / "weights" / "last.pt"
    ckpt = load_checkpoint(last)
    ckpt["augment"] = {"translate": 2, "flip": False, "cutout": 0}      # what older lensforge stored
    for key in ("stroke", "scale", "rotate", "blur"):
        ckpt["options"].pop(key, None)
    save_checkpoint(last, {k: v for k, v in ckpt.items() if k not in ("format", "version")})
    resumed = train(resume=digits_run.dir, epochs=2, progress=False)
    aug = load_checkpoint(resumed.dir / "weights" / "last.pt")["augment"]
    assert aug == Augment(translate=2).to_dict()       # every digit op off, although digits' default has them
    assert aug["stroke"] == aug["scale"] == aug["rotate"] == aug["blur"] == 0


# ----------------------------------------------------------------------------- photo renderer

@pytest.fixture(scope="module")
def photos():
    spec = importlib.util.spec_from_file_location("digit_photos", ROOT / "bench" / "digit_photos.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module      # dataclasses look their module up while the class is built
    try:
        spec.loader.exec_module(module)
        yield module
    finally:
        sys.modules.pop(spec.name, None)


def test_renderer_is_deterministic(photos):
    a = [(i, y, f, jpg) for i, y, f, jpg in photos.render_set("photo", seed=1, limit=3)]
    b = [(i, y, f, jpg) for i, y, f, jpg in photos.render_set("photo", seed=1, limit=3)]
    c = [(i, y, f, jpg) for i, y, f, jpg in photos.render_set("photo", seed=2, limit=3)]
    assert a == b
    assert [r[3] for r in a] != [r[3] for r in c]


def test_rendered_photo_is_dark_ink_on_light_paper(photos):
    for _, label, f, jpg in photos.render_set("photo", seed=1, limit=4):
        grey = np.asarray(Image.open(io.BytesIO(jpg)).convert("L"), dtype=np.float32)
        assert grey.shape == (f.side, f.side)
        assert np.median(grey) > 100                      # paper, even under the darkest gradient
        assert np.percentile(grey, 0.5) < np.median(grey) - 25   # ink stands out of it
        assert -20 <= f.rotation <= 20 and 0.15 <= f.size <= 0.7


def test_pen_width_sets_the_stroke_width(photos):
    from sklearn.datasets import load_digits

    line = photos.centre_line(load_digits().images[1])
    assert photos.draw_pen(line, 12).sum() > 2.5 * photos.draw_pen(line, 4).sum()


# ----------------------------------------------------------------------------- preprocessing fixes

def lit_photo(draw_fn, fall_off: float, size=(240, 240), paper=245, ink=0.25, seed=0) -> bytes:
    """Dark ink on paper under light that falls off linearly left to right by `fall_off`."""
    img = Image.new("L", size, 255)
    draw_fn(ImageDraw.Draw(img))
    cover = 1 - np.asarray(img, dtype=np.float64) / 255                 # 1 where the pen was
    light = 1 - fall_off * np.linspace(0, 1, size[0])[None, :]
    pixels = paper * light * (1 - cover * (1 - ink))
    pixels += np.random.default_rng(seed).normal(0, 3, pixels.shape)
    buf = io.BytesIO()
    Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8)).save(buf, "JPEG", quality=85)
    return buf.getvalue()


def draw_seven(draw):
    draw.line([(80, 60), (160, 60)], fill=0, width=5)
    draw.line([(160, 60), (110, 190)], fill=0, width=5)


def test_gradient_light_does_not_blank_the_digit():
    """Before the light was flattened, a 45% fall-off left the paper threshold above the ink:
    the model got a black canvas (26 of the first 64 rendered photos did)."""
    out = load_and_prepare(lit_photo(draw_seven, 0.45), DIGIT)[0]
    rows, cols = np.nonzero(out > 64)
    assert out.sum() > 30 * 255
    assert rows.max() - rows.min() >= 18          # the digit's height fills the 20 px box
    top = out[rows.min():rows.min() + 3]          # the bar of the 7 is at the top and wide
    assert np.count_nonzero(top.max(0) > 64) >= 10


def test_gradient_light_on_blank_paper_stays_blank():
    out = load_and_prepare(lit_photo(lambda draw: None, 0.5), DIGIT)[0]
    assert out.max() == 0


def test_even_light_gives_the_same_digit_as_before():
    """On evenly lit paper the flattening changes nothing a model would see."""
    from lensforge.data import preprocess as P

    photo = np.asarray(Image.open(io.BytesIO(lit_photo(draw_seven, 0.0))).convert("L"))
    flat = P._flatten_light(photo.astype(np.float32))
    assert np.abs(flat - photo).mean() < 1.0
