import io

import numpy as np
import pytest
from PIL import Image, ImageDraw

from lensforge.data.preprocess import PreprocessSpec, load_and_prepare, prepare

DIGIT = PreprocessSpec((28, 28), 1, "digit")


def paper_photo(draw_fn, size=(300, 200), paper=235, ink=25, noise=6.0, seed=0):
    """A "photo" of a pen drawing: textured light paper, dark ink, saved and reloaded as JPEG."""
    img = Image.new("L", size, paper)
    draw_fn(ImageDraw.Draw(img), ink)
    pixels = np.asarray(img, dtype=np.float64)
    pixels = pixels + np.random.default_rng(seed).normal(0, noise, pixels.shape)
    buf = io.BytesIO()
    Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8)).save(buf, "JPEG", quality=85)
    return buf.getvalue()


def draw_one(draw, ink):
    draw.line([(150, 40), (150, 170)], fill=ink, width=16)
    draw.line([(150, 40), (120, 70)], fill=ink, width=14)


def draw_ring(draw, ink):
    draw.ellipse([60, 30, 140, 160], outline=ink, width=14)  # 81 wide, 131 high


def centre_of_mass(plane):
    plane = plane.astype(np.float64)
    ys, xs = np.indices(plane.shape)
    return (plane * ys).sum() / plane.sum(), (plane * xs).sum() / plane.sum()


def ink_box(plane, threshold=0):
    rows = np.flatnonzero((plane > threshold).any(axis=1))
    cols = np.flatnonzero((plane > threshold).any(axis=0))
    return rows[-1] - rows[0] + 1, cols[-1] - cols[0] + 1


def mnist_like_seven():
    """A digit already in MNIST form: anti-aliased, 20 px box, centred by mass in 28x28."""
    big = Image.new("L", (80, 80), 0)
    ImageDraw.Draw(big).line([(8, 10), (72, 10), (30, 74)], fill=255, width=11, joint="curve")
    glyph = np.asarray(big.crop(big.getbbox()).resize((20, 20), Image.Resampling.LANCZOS))
    cy, cx = centre_of_mass(glyph)
    top, left = int(np.floor(14 - cy + 0.5)), int(np.floor(14 - cx + 0.5))
    canvas = np.zeros((28, 28), np.uint8)
    canvas[top : top + 20, left : left + 20] = glyph
    return canvas


# --------------------------------------------------------------------------- spec


def test_spec_round_trips_through_plain_dict():
    spec = PreprocessSpec((32, 24), 3, "resize")
    d = spec.to_dict()
    assert d == {"size": [32, 24], "channels": 3, "style": "resize"}
    assert PreprocessSpec.from_dict(d) == spec
    assert PreprocessSpec.from_dict({"size": (28, 28), "channels": 1}).style == "resize"


def test_spec_survives_weights_only_torch_load():
    torch = pytest.importorskip("torch")
    buf = io.BytesIO()
    torch.save({"preprocess": DIGIT.to_dict()}, buf)
    buf.seek(0)
    assert PreprocessSpec.from_dict(torch.load(buf, weights_only=True)["preprocess"]) == DIGIT


@pytest.mark.parametrize(
    "bad",
    [
        None,
        [28, 28],
        {"size": [28, 28]},
        {"channels": 1},
        {"size": [28], "channels": 1},
        {"size": "28x28", "channels": 1},
        {"size": [28, 0], "channels": 1},
        {"size": [28.0, 28], "channels": 1},
        {"size": [28, 10**6], "channels": 1},
        {"size": [28, 28], "channels": 2},
        {"size": [28, 28], "channels": True},
        {"size": [28, 28], "channels": 1, "style": "fancy"},
        {"size": [28, 28], "channels": 1, "style": 3},
        {"size": [28, 28], "channels": 1, "mean": [0.5]},
    ],
)
def test_from_dict_rejects_garbage(bad):
    with pytest.raises(ValueError):
        PreprocessSpec.from_dict(bad)


# --------------------------------------------------------------------------- resize style


def test_resize_shapes_and_channels():
    rgb = np.random.default_rng(0).integers(0, 256, (100, 60, 3), dtype=np.uint8)
    out = prepare(rgb, PreprocessSpec((32, 32), 3))
    assert out.dtype == np.uint8 and out.shape == (3, 32, 32) and out.flags.c_contiguous

    grey = prepare(rgb, PreprocessSpec((10, 20), 1))
    assert grey.shape == (1, 10, 20)

    flat = np.full((5, 7), 90, np.uint8)
    out = prepare(flat, PreprocessSpec((8, 8), 3))
    assert out.shape == (3, 8, 8) and (out == 90).all()


def test_resize_is_identity_at_native_size():
    rgb = np.random.default_rng(1).integers(0, 256, (32, 32, 3), dtype=np.uint8)
    np.testing.assert_array_equal(prepare(rgb, PreprocessSpec((32, 32), 3)), rgb.transpose(2, 0, 1))
    expected = np.asarray(Image.fromarray(rgb).convert("L"))
    np.testing.assert_array_equal(prepare(rgb, PreprocessSpec((32, 32), 1))[0], expected)


@pytest.mark.parametrize("bad", [np.zeros((4, 4), np.float32), np.zeros((4, 4, 4), np.uint8),
                                 np.zeros((0, 4), np.uint8), np.zeros(4, np.uint8)])
def test_prepare_rejects_unexpected_arrays(bad):
    with pytest.raises(ValueError):
        prepare(bad, PreprocessSpec((8, 8), 1))


# --------------------------------------------------------------------------- digit style


@pytest.mark.parametrize("drawing", [draw_one, draw_ring])
def test_photo_of_dark_digit_becomes_mnist_like(drawing):
    out = load_and_prepare(paper_photo(drawing), DIGIT, name="digit.jpg")
    assert out.shape == (1, 28, 28) and out.dtype == np.uint8
    plane = out[0]
    frame = np.concatenate([plane[:3].ravel(), plane[-3:].ravel(), plane[:, :3].ravel(),
                            plane[:, -3:].ravel()])
    assert frame.max() == 0  # paper became black
    assert plane.max() >= 250  # ink became white
    cy, cx = centre_of_mass(plane)
    assert abs(cy - 14) <= 1 and abs(cx - 14) <= 1
    assert max(ink_box(plane)) in (19, 20, 21)


def test_digit_keeps_aspect_ratio():
    plane = load_and_prepare(paper_photo(draw_ring), DIGIT)[0]
    height, width = ink_box(plane)
    assert height == 20 and 11 <= width <= 14  # 81 / 131 * 20 = 12.4


def test_mnist_form_input_is_nearly_unchanged():
    digit = mnist_like_seven()
    out = prepare(digit, DIGIT)[0]
    corr = np.corrcoef(digit.ravel().astype(float), out.ravel().astype(float))[0, 1]
    assert corr > 0.99
    assert np.abs(out.astype(int) - digit).max() <= 10


def test_thin_pen_strokes_stay_visible():
    def thin_seven(draw, ink):
        draw.line([(200, 100), (400, 100), (260, 460)], fill=ink, width=3)

    plane = load_and_prepare(paper_photo(thin_seven, size=(600, 560), noise=3), DIGIT)[0]
    assert plane.max() >= 250
    assert (plane >= 128).sum() >= 40  # strokes at least ~2 px wide, not a faint hairline


def test_dim_photo_still_inverted():
    data = paper_photo(draw_one, paper=110, ink=15, noise=3)
    plane = load_and_prepare(data, DIGIT)[0]
    assert plane[0].max() == 0 and plane.max() >= 250


def test_dark_background_light_ink_not_inverted():
    data = paper_photo(draw_one, paper=30, ink=220, noise=4)
    plane = load_and_prepare(data, DIGIT)[0]
    assert plane[0].max() == 0 and plane.max() >= 250


@pytest.mark.parametrize("image", [np.full((50, 40), 255, np.uint8), np.zeros((28, 28), np.uint8),
                                   np.full((60, 60, 3), 128, np.uint8)])
def test_blank_image_gives_black_canvas(image):
    np.testing.assert_array_equal(prepare(image, DIGIT), np.zeros((1, 28, 28), np.uint8))


def test_blank_textured_paper_gives_black_canvas():
    out = load_and_prepare(paper_photo(lambda draw, ink: None, noise=8), DIGIT)
    assert out.max() == 0


def test_digit_other_sizes_and_channels():
    spec = PreprocessSpec((56, 42), 3, "digit")
    out = load_and_prepare(paper_photo(draw_one), spec)
    assert out.shape == (3, 56, 42)
    np.testing.assert_array_equal(out[0], out[2])
    assert max(ink_box(out[0])) in (39, 40, 41)  # 20/28 of 56
    cy, cx = centre_of_mass(out[0])
    assert abs(cy - 28) <= 1 and abs(cx - 21) <= 1
