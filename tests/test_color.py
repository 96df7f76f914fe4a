"""Lab conversion and the image measures colourisation is judged by."""
import numpy as np
import pytest
import torch

from lensforge.color import colourfulness, is_greyscale, lab_to_rgb, psnr, rgb_to_lab, ssim


def test_lab_round_trip_is_exact_to_a_fraction_of_a_grey_level():
    rgb = torch.rand(4, 3, 17, 23, generator=torch.Generator().manual_seed(0))
    back = lab_to_rgb(rgb_to_lab(rgb))
    assert (back - rgb).abs().max() < 1e-4


def test_lab_round_trip_survives_bf16_autocast():
    rgb = torch.rand(2, 3, 8, 8, generator=torch.Generator().manual_seed(1))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        lab = rgb_to_lab(rgb)
        back = lab_to_rgb(lab)
    assert lab.dtype == torch.float32
    assert (back - rgb).abs().max() < 1e-4


def test_ssim_is_computed_in_fp32_inside_bf16_autocast():
    """As a training loss (faceswap) SSIM runs inside autocast: bf16 blurs gave negative variances
    and an infinite loss; it must equal the fp32 value."""
    g = torch.Generator().manual_seed(3)
    target = torch.nn.functional.avg_pool2d(torch.rand(4, 3, 40, 40, generator=g), 5, 1)   # smooth, like faces
    pred = (target + 0.01 * torch.randn(target.shape, generator=g)).clamp(0, 1)
    plain = ssim(pred, target)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        mixed = ssim(pred, target)
    assert mixed.dtype == torch.float32 and torch.allclose(mixed, plain, atol=1e-6)


def test_lab_matches_scikit_image_and_reference_points():
    skcolor = pytest.importorskip("skimage.color")
    rgb = np.random.default_rng(2).random((9, 11, 3))
    ours = rgb_to_lab(torch.from_numpy(rgb).permute(2, 0, 1)[None].float())[0].permute(1, 2, 0).numpy()
    assert np.abs(ours - skcolor.rgb2lab(rgb)).max() < 0.05
    white = rgb_to_lab(torch.ones(1, 3, 1, 1)).flatten()
    assert torch.allclose(white, torch.tensor([100.0, 0.0, 0.0]), atol=0.02)
    red = rgb_to_lab(torch.tensor([1.0, 0, 0]).view(1, 3, 1, 1)).flatten()
    assert torch.allclose(red, torch.tensor([53.24, 80.09, 67.20]), atol=0.1)


def test_out_of_gamut_lab_is_clipped_unless_asked():
    lab = torch.tensor([50.0, 120.0, -120.0]).view(1, 3, 1, 1)
    assert lab_to_rgb(lab).min() >= 0 and lab_to_rgb(lab).max() <= 1
    assert lab_to_rgb(lab, clamp=False).min() < 0


def test_psnr_ssim_and_colourfulness_behave():
    g = torch.Generator().manual_seed(3)
    x = torch.rand(2, 3, 32, 32, generator=g)
    noisy = (x + 0.05 * torch.randn(x.shape, generator=g)).clamp(0, 1)
    assert psnr(x, x).min() == 100
    assert 20 < float(psnr(noisy, x).mean()) < 30
    assert torch.allclose(ssim(x, x), torch.ones(2), atol=1e-5)
    heavy = (x + 0.3 * torch.randn(x.shape, generator=g)).clamp(0, 1)
    assert 1 > float(ssim(noisy, x).mean()) > float(ssim(heavy, x).mean())
    assert float(ssim(heavy, x).mean()) < 0.8
    grey = x.mean(1, keepdim=True).repeat(1, 3, 1, 1)
    assert torch.allclose(colourfulness(grey), torch.zeros(2), atol=1e-3)
    assert (colourfulness(x) > 10).all()


def test_greyscale_means_no_channel_apart_by_more_than_two_levels():
    g = torch.Generator().manual_seed(4)
    grey = torch.randint(0, 256, (3, 1, 8, 8), generator=g).repeat(1, 3, 1, 1)
    jpeg_like = grey.clone()
    jpeg_like[1, 2] = (jpeg_like[1, 2] + 2).clamp(max=255)     # a grey photo's 2-level chroma noise
    one_pixel = grey.clone()
    one_pixel[2, 0, 4, 4] = (one_pixel[2, 0, 4, 4] + 10) % 256  # one coloured pixel is colour
    batch = torch.cat([grey, jpeg_like[1:2], one_pixel[2:3]]).float() / 255
    assert is_greyscale(batch).tolist() == [True, True, True, True, False]


def test_ssim_agrees_with_scikit_image():
    metrics = pytest.importorskip("skimage.metrics")
    rng = np.random.default_rng(4)
    a = rng.random((24, 24))
    b = np.clip(a + 0.1 * rng.standard_normal(a.shape), 0, 1)
    ref = metrics.structural_similarity(a, b, data_range=1.0, gaussian_weights=True, sigma=1.5,
                                        use_sample_covariance=False)
    ours = float(ssim(torch.tensor(b)[None, None].float(), torch.tensor(a)[None, None].float()))
    assert abs(ours - ref) < 0.02
