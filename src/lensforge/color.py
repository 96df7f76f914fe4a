"""sRGB <-> CIE Lab (D65) in torch, and the image-quality measures colourisation is judged by.

Lab separates lightness from chroma, which is what lets a colouriser keep the user's own
full-resolution lightness and only predict (and upsample) the two chroma channels. The conversion
runs in float32 with autocast disabled: under bf16 autocast the cube roots and the 1e-3-sized
linear segment of sRGB would lose several Lab units, more than the colouriser's own error.
"""
from __future__ import annotations

import contextlib

import torch
import torch.nn.functional as F

# sRGB primaries -> XYZ (D65), rows X, Y, Z; and the D65 white point used to normalise XYZ.
_RGB2XYZ = ((0.412453, 0.357580, 0.180423), (0.212671, 0.715160, 0.072169), (0.019334, 0.119193, 0.950227))
_WHITE = (0.950456, 1.0, 1.088754)
_EPS = (6 / 29) ** 3
_KAPPA = 1 / (3 * (6 / 29) ** 2)


def _no_autocast(x: torch.Tensor):
    return torch.autocast(x.device.type, enabled=False) if x.device.type in ("cpu", "cuda") else contextlib.nullcontext()


def _mix(x: torch.Tensor, m) -> torch.Tensor:
    """3x3 colour matrix applied per pixel with plain elementwise ops (no matmul for autocast to grab)."""
    c0, c1, c2 = x[:, 0], x[:, 1], x[:, 2]
    return torch.stack([m[i][0] * c0 + m[i][1] * c1 + m[i][2] * c2 for i in range(3)], dim=1)


def _inverse(m) -> tuple:
    inv = torch.linalg.inv(torch.tensor(m, dtype=torch.float64))
    return tuple(tuple(float(v) for v in row) for row in inv)


_XYZ2RGB = _inverse(_RGB2XYZ)


def rgb_to_lab(rgb: torch.Tensor) -> torch.Tensor:
    """(B,3,H,W) sRGB in [0,1] -> (B,3,H,W) Lab with L in [0,100] and a, b roughly in [-110, 110]."""
    with _no_autocast(rgb):
        rgb = rgb.float().clamp(0, 1)
        lin = torch.where(rgb > 0.04045, ((rgb + 0.055) / 1.055) ** 2.4, rgb / 12.92)
        xyz = _mix(lin, _RGB2XYZ)
        xyz = xyz / torch.tensor(_WHITE, device=rgb.device).view(1, 3, 1, 1)
        f = torch.where(xyz > _EPS, xyz.clamp_min(_EPS) ** (1 / 3), xyz * _KAPPA + 4 / 29)
        L = 116 * f[:, 1] - 16
        a = 500 * (f[:, 0] - f[:, 1])
        b = 200 * (f[:, 1] - f[:, 2])
        return torch.stack([L, a, b], dim=1)


def lab_to_rgb(lab: torch.Tensor, clamp: bool = True) -> torch.Tensor:
    """Inverse of rgb_to_lab; out-of-gamut colours are clipped to [0,1] unless clamp=False."""
    with _no_autocast(lab):
        lab = lab.float()
        fy = (lab[:, 0] + 16) / 116
        fx = fy + lab[:, 1] / 500
        fz = fy - lab[:, 2] / 200
        f = torch.stack([fx, fy, fz], dim=1)
        xyz = torch.where(f > 6 / 29, f ** 3, (f - 4 / 29) / _KAPPA)
        xyz = xyz * torch.tensor(_WHITE, device=lab.device).view(1, 3, 1, 1)
        lin = _mix(xyz, _XYZ2RGB)
        rgb = torch.where(lin > 0.0031308, 1.055 * lin.clamp_min(0.0031308) ** (1 / 2.4) - 0.055, 12.92 * lin)
        return rgb.clamp(0, 1) if clamp else rgb


# ----------------------------------------------------------------------------- quality measures

def psnr(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Per-image PSNR in dB for (B,C,H,W) images in [0,1]; identical images are capped at 100 dB."""
    mse = (pred.float() - target.float()).pow(2).flatten(1).mean(1)
    return (10 * torch.log10(1.0 / mse.clamp_min(1e-10))).clamp(max=100.0)


def _gauss_window(size: int = 11, sigma: float = 1.5, device=None) -> torch.Tensor:
    x = torch.arange(size, dtype=torch.float32, device=device) - (size - 1) / 2
    g = torch.exp(-x ** 2 / (2 * sigma ** 2))
    return g / g.sum()


def ssim(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Per-image SSIM (Wang et al. 2004: 11x11 Gaussian, sigma 1.5), averaged over channels.

    The window shrinks for images smaller than 11 px so 8x8 thumbnails still get a score; the
    computation is 'valid' (no padding), matching scikit-image's gaussian_weights=True variant.
    """
    # fp32 even inside a bf16 autocast region (a training loss): autocast would run the blurs in
    # bf16, and the variances below subtract nearly equal numbers; in bf16 they came out negative,
    # the denominator crossed zero and faceswap's loss went to -inf on an AMX CPU.
    with torch.autocast(pred.device.type, enabled=False):
        return _ssim_fp32(pred.float(), target.float())


def _ssim_fp32(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    c = pred.shape[1]
    size = min(11, pred.shape[-1], pred.shape[-2])
    size -= (size + 1) % 2
    g = _gauss_window(size, 1.5, pred.device)
    wx = g.view(1, 1, 1, -1).repeat(c, 1, 1, 1)
    wy = g.view(1, 1, -1, 1).repeat(c, 1, 1, 1)

    def blur(t):
        return F.conv2d(F.conv2d(t, wx, groups=c), wy, groups=c)

    c1, c2 = 0.01 ** 2, 0.03 ** 2
    mu_x, mu_y = blur(pred), blur(target)
    sxx = blur(pred * pred) - mu_x ** 2
    syy = blur(target * target) - mu_y ** 2
    sxy = blur(pred * target) - mu_x * mu_y
    s = ((2 * mu_x * mu_y + c1) * (2 * sxy + c2)) / ((mu_x ** 2 + mu_y ** 2 + c1) * (sxx + syy + c2))
    return s.flatten(1).mean(1)


def colourfulness(rgb: torch.Tensor) -> torch.Tensor:
    """Hasler & Suesstrunk (2003) colourfulness per image, on the 0-255 scale of the paper.

    0 for a grey image; about 40-60 for typical photos. Used to catch the colouriser's classic
    failure, sepia-grey outputs that score a good PSNR.
    """
    x = rgb.float() * 255
    rg = x[:, 0] - x[:, 1]
    yb = 0.5 * (x[:, 0] + x[:, 1]) - x[:, 2]
    std = torch.sqrt(rg.flatten(1).var(1, unbiased=False) + yb.flatten(1).var(1, unbiased=False))
    mean = torch.sqrt(rg.flatten(1).mean(1) ** 2 + yb.flatten(1).mean(1) ** 2)
    return std + 0.3 * mean


#: How far apart R, G and B may be, anywhere in an image, for it to count as a greyscale photo:
#: 2 levels of 255 covers 8-bit rounding and the chroma noise of a grey photo saved as colour JPEG.
GREYSCALE_TOLERANCE = 2.5 / 255


def is_greyscale(rgb: torch.Tensor) -> torch.Tensor:
    """(B,3,H,W) in [0,1] -> (B,) bool: True where the image has no colour (R, G, B equal to within
    GREYSCALE_TOLERANCE in every pixel). CIFAR-10 holds such photos: 120 of its 10,000 test images,
    113 of them exactly R = G = B."""
    x = rgb.float()
    return (x.amax(1) - x.amin(1)).flatten(1).amax(1) <= GREYSCALE_TOLERANCE
