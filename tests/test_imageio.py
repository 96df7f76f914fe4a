import io
import struct
import zlib

import numpy as np
import pytest
from PIL import Image, ImageFile

from lensforge.data import imageio
from lensforge.data.imageio import IMAGE_EXTENSIONS, MAX_PIXELS, image_size, read_image
from lensforge.errors import DataError

# Any PIL warning reaching the caller is a failure: users must see DataErrors or nothing.
pytestmark = pytest.mark.filterwarnings("error")


def save(img, path, **kwargs):
    img.save(path, **kwargs)
    return path


def noise_rgb(h, w, seed=0):
    return np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)


def assert_one_line_error(exc_info, path, *fragments):
    msg = str(exc_info.value)
    assert "\n" not in msg
    assert msg.startswith(f"{path}: ")
    for fragment in fragments:
        assert fragment in msg


def png_header_only(width, height):
    """A PNG claiming a huge size, built by hand so no huge image is ever allocated."""
    def chunk(kind, data):
        body = kind + data
        return struct.pack(">I", len(data)) + body + struct.pack(">I", zlib.crc32(body))

    ihdr = struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0)  # 1-bit greyscale
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IEND", b"")


# --------------------------------------------------------------------------- good images


def test_plain_rgb_png_round_trips_exactly(tmp_path):
    pixels = noise_rgb(7, 5)
    path = save(Image.fromarray(pixels), tmp_path / "a.png")
    out = read_image(path)
    assert out.dtype == np.uint8 and out.shape == (7, 5, 3) and out.flags.writeable
    np.testing.assert_array_equal(out, pixels)
    assert read_image(path, "L").shape == (7, 5)


def test_exif_orientation_6_is_rotated_upright(tmp_path):
    pixels = np.zeros((20, 40, 3), np.uint8)  # stored landscape: 40 wide, 20 high
    pixels[:8, :8] = (255, 0, 0)  # red marker at the stored top-left
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90 degrees clockwise to display"
    path = save(Image.fromarray(pixels), tmp_path / "phone.jpg", exif=exif.tobytes(), quality=95)

    out = read_image(path)
    assert out.shape == (40, 20, 3)  # displayed portrait
    assert out[2, -3, 0] > 200 and out[2, -3, 1] < 60  # marker now top-right
    assert out[2, 2, 0] < 60
    assert image_size(path) == (20, 40, "RGB")


def test_cmyk_jpeg_becomes_rgb(tmp_path):
    path = save(Image.new("CMYK", (16, 16), (0, 255, 255, 0)), tmp_path / "print.jpg", quality=95)
    out = read_image(path)
    assert out.shape == (16, 16, 3)
    r, g, b = out[8, 8].astype(int)
    assert r > 200 and g < 60 and b < 60


def test_palette_png_with_transparency_shows_white(tmp_path):
    img = Image.new("P", (8, 4), 0)
    img.putpalette([0, 0, 255, 0, 0, 0] + [0] * 762)  # index 0 blue (transparent), 1 black
    img.paste(1, (4, 0, 8, 4))
    path = save(img, tmp_path / "logo.png", transparency=0)

    out = read_image(path)
    assert (out[:, :4] == 255).all()
    assert (out[:, 4:] == 0).all()
    assert (read_image(path, "L")[:, :4] == 255).all()


def test_palette_png_with_partial_alpha_is_composited(tmp_path):
    img = Image.new("P", (4, 4), 0)
    img.putpalette([0, 0, 0] * 256)
    path = save(img, tmp_path / "half.png", transparency=bytes([128]))
    out = read_image(path, "L")
    assert 120 <= out[0, 0] <= 135  # black at 50% over white


def test_16bit_png_with_small_range_is_stretched(tmp_path):
    ramp = np.tile(np.linspace(1000, 1200, 32).astype(np.uint16), (4, 1))
    img = Image.fromarray(ramp)
    assert img.mode.startswith("I;16")
    path = save(img, tmp_path / "sensor.png")

    out = read_image(path, "L")
    assert out.min() == 0 and out.max() == 255
    assert (np.diff(out[0].astype(int)) >= 0).all()
    assert read_image(path).shape == (4, 32, 3)
    assert image_size(path)[2].startswith("I")


def test_float_tiff_is_stretched(tmp_path):
    values = np.linspace(-0.5, 0.25, 16, dtype=np.float32).reshape(4, 4)
    path = save(Image.fromarray(values), tmp_path / "depth.tiff")
    out = read_image(path, "L")
    assert out[0, 0] == 0 and out[-1, -1] == 255


def test_rgba_alpha_is_composited_over_white(tmp_path):
    pixels = np.array([[[0, 0, 0, 0], [0, 0, 0, 255], [255, 0, 0, 128]]], np.uint8)
    path = save(Image.fromarray(pixels, "RGBA"), tmp_path / "icon.png")
    out = read_image(path).astype(int)
    np.testing.assert_array_equal(out[0, 0], [255, 255, 255])
    np.testing.assert_array_equal(out[0, 1], [0, 0, 0])
    assert out[0, 2, 0] == 255 and 120 <= out[0, 2, 1] <= 135


def test_la_alpha_is_composited_over_white(tmp_path):
    img = Image.new("LA", (2, 1))
    img.putpixel((0, 0), (0, 0))
    img.putpixel((1, 0), (0, 255))
    path = save(img, tmp_path / "la.png")
    np.testing.assert_array_equal(read_image(path, "L"), [[255, 0]])


def test_one_bit_image(tmp_path):
    img = Image.new("1", (4, 2), 0)
    img.putpixel((3, 1), 1)
    out = read_image(save(img, tmp_path / "bw.png"), "L")
    assert out[1, 3] == 255 and out[0, 0] == 0


@pytest.mark.parametrize("suffix,kwargs", [(".gif", {"duration": 100, "loop": 0}), (".png", {}),
                                           (".tiff", {})])
def test_animations_and_multipage_give_first_frame(tmp_path, suffix, kwargs):
    frames = [Image.new("RGB", (6, 6), colour) for colour in ((255, 0, 0), (0, 255, 0))]
    path = tmp_path / f"anim{suffix}"
    frames[0].save(path, save_all=True, append_images=frames[1:], **kwargs)
    with Image.open(path) as check:
        assert getattr(check, "n_frames", 1) == 2
    out = read_image(path)
    assert out.shape == (6, 6, 3)
    np.testing.assert_array_equal(out[3, 3], [255, 0, 0])


def test_grey_to_rgb_replicates(tmp_path):
    grey = np.arange(12, dtype=np.uint8).reshape(3, 4) * 20
    out = read_image(save(Image.fromarray(grey), tmp_path / "g.pgm"))
    for c in range(3):
        np.testing.assert_array_equal(out[:, :, c], grey)


def test_bytes_input_uses_name_in_errors(tmp_path):
    buf = io.BytesIO()
    Image.fromarray(noise_rgb(3, 3)).save(buf, "PNG")
    assert read_image(buf.getvalue()).shape == (3, 3, 3)
    assert read_image(bytearray(buf.getvalue()), "L").shape == (3, 3)
    with pytest.raises(DataError) as exc_info:
        read_image(b"hello", name="train.zip:cats/1.png")
    assert_one_line_error(exc_info, "train.zip:cats/1.png", "corrupt image file")


def test_image_size_reads_header(tmp_path):
    path = save(Image.new("P", (13, 7)), tmp_path / "p.png")
    assert image_size(path) == (13, 7, "P")
    assert image_size(path.read_bytes(), name="x") == (13, 7, "P")


def test_extensions():
    assert {".jpg", ".jpeg", ".png", ".webp", ".pbm", ".tif"} <= IMAGE_EXTENSIONS
    assert all(ext == ext.lower() and ext.startswith(".") for ext in IMAGE_EXTENSIONS)
    assert ".txt" not in IMAGE_EXTENSIONS


def test_bad_mode_is_a_programming_error(tmp_path):
    with pytest.raises(ValueError):
        read_image(save(Image.new("RGB", (2, 2)), tmp_path / "a.png"), "RGBA")


# --------------------------------------------------------------------------- bad files


def test_truncated_jpeg(tmp_path):
    buf = io.BytesIO()
    Image.fromarray(noise_rgb(64, 64)).save(buf, "JPEG", quality=90)
    data = buf.getvalue()
    path = tmp_path / "photo.jpg"
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(DataError) as exc_info:
        read_image(path)
    assert_one_line_error(exc_info, path, "truncated or corrupt image file")
    with pytest.raises(DataError, match="truncated or corrupt"):
        read_image(data[: len(data) // 2], name="photo.jpg")
    assert ImageFile.LOAD_TRUNCATED_IMAGES is False


def test_truncated_png(tmp_path):
    buf = io.BytesIO()
    Image.fromarray(noise_rgb(64, 64)).save(buf, "PNG")
    path = tmp_path / "cut.png"
    path.write_bytes(buf.getvalue()[:3000])
    with pytest.raises(DataError) as exc_info:
        read_image(path)
    assert_one_line_error(exc_info, path, "truncated or corrupt image file")


def test_empty_file(tmp_path):
    path = tmp_path / "empty.png"
    path.write_bytes(b"")
    for call in (read_image, image_size):
        with pytest.raises(DataError) as exc_info:
            call(path)
        assert str(exc_info.value) == f"{path}: empty file"
    with pytest.raises(DataError, match="empty file"):
        read_image(b"", name="empty.png")


def test_text_file(tmp_path):
    path = tmp_path / "notes.txt"
    path.write_text("shopping list\n- eggs\n")
    with pytest.raises(DataError) as exc_info:
        read_image(path)
    assert_one_line_error(exc_info, path, "not an image file")


def test_image_extension_with_garbage_inside(tmp_path):
    path = tmp_path / "download.jpg"
    path.write_bytes(b"<html><body>404 Not Found</body></html>")
    with pytest.raises(DataError) as exc_info:
        read_image(path)
    assert_one_line_error(exc_info, path, "corrupt image file")


def test_missing_file_and_directory(tmp_path):
    with pytest.raises(DataError) as exc_info:
        read_image(tmp_path / "nope.jpg")
    assert_one_line_error(exc_info, tmp_path / "nope.jpg", "no such file")
    with pytest.raises(DataError) as exc_info:
        image_size(tmp_path)
    assert_one_line_error(exc_info, tmp_path, "directory")


def test_hand_made_bomb_header_is_refused_before_decoding(tmp_path):
    path = tmp_path / "huge.png"
    path.write_bytes(png_header_only(100_000, 100_000))
    for call in (read_image, image_size):
        with pytest.raises(DataError) as exc_info:
            call(path)
        assert_one_line_error(exc_info, path, "decompression bomb", str(MAX_PIXELS))


def test_bomb_just_over_our_limit_names_its_size(tmp_path):
    path = tmp_path / "big.png"
    path.write_bytes(png_header_only(10_000, 9_000))  # 90 M pixels: over the limit, under 2x
    with pytest.raises(DataError) as exc_info:
        image_size(path)
    assert_one_line_error(exc_info, path, "10000x9000 pixels", "decompression bomb")


def test_pixel_limit_is_checked_from_header(tmp_path, monkeypatch):
    path = save(Image.new("RGB", (16, 16)), tmp_path / "small.png")
    monkeypatch.setattr(imageio, "MAX_PIXELS", 100)
    with pytest.raises(DataError) as exc_info:
        read_image(path)
    assert_one_line_error(exc_info, path, "16x16 pixels, limit 100", "decompression bomb")
