"""Batched augmentation on whole uint8 batches, on the training device.

One indexing op per transform for the whole batch instead of a Python call per image: this is
what lets a 2-core CPU keep a CNN fed without DataLoader workers.
"""
from __future__ import annotations

import torch


def random_translate(x: torch.Tensor, pad: int, generator: torch.Generator | None = None,
                     fill: str = "zero") -> torch.Tensor:
    """Shift every image by its own random (dy, dx) in [-pad, pad] (a random crop of the padded
    batch). fill "zero" pads with 0 (mid-grey for DiffAugment's [-1, 1] images); "reflect" mirrors
    the border as airbench's training crops and lensforge's flip+shift test views do: on [0, 1] or
    uint8 photos a zero border is a black bar whose edge the whitening layer of models/whitenet.py
    amplifies, and which no test image has. A shift as large as the image has nothing to mirror and
    falls back to zeros."""
    if pad <= 0:
        return x
    if fill not in ("zero", "reflect"):
        raise ValueError(f"unknown translate fill {fill!r} (use zero or reflect)")
    n, c, h, w = x.shape
    mode = "reflect" if fill == "reflect" and pad < min(h, w) else "constant"
    padded = torch.nn.functional.pad(x, (pad, pad, pad, pad), mode=mode)
    dy = torch.randint(0, 2 * pad + 1, (n,), generator=generator, device="cpu").to(x.device)
    dx = torch.randint(0, 2 * pad + 1, (n,), generator=generator, device="cpu").to(x.device)
    rows = (dy[:, None] + torch.arange(h, device=x.device))[:, None, :, None]
    cols = (dx[:, None] + torch.arange(w, device=x.device))[:, None, None, :]
    batch = torch.arange(n, device=x.device)[:, None, None, None]
    chan = torch.arange(c, device=x.device)[None, :, None, None]
    return padded[batch, chan, rows, cols]


def random_flip(x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
    """Mirror a random half of the batch left-right."""
    mask = torch.rand(x.shape[0], generator=generator, device="cpu").to(x.device) < 0.5
    return torch.where(mask[:, None, None, None], x.flip(-1), x)


def cutout(x: torch.Tensor, size: int, generator: torch.Generator | None = None, fill: str = "zero") -> torch.Tensor:
    """Paint one random size x size square per image, rows and columns cy - size//2 up to (not
    including) cy - size//2 + size around a uniform centre, clipped where it overhangs the border.
    (Until issue 17 an even size zeroed a (size + 1)-pixel square.)

    fill "zero" paints 0 (mid-grey for DiffAugment's [-1, 1] images); "mean" paints each channel's
    mean over the batch, which is what cutout on normalised images (DeVries & Taylor; airbench)
    paints. On [0, 1] or uint8 images a zero square is black: its edges are the strongest features
    the whitening layer of models/whitenet.py sees, and on the tests' 120-image folder a black 8 px
    square took 3 epochs of training from 1.0 to 0.54 test accuracy while the mean fill kept 1.0."""
    if size <= 0:
        return x
    if fill not in ("zero", "mean"):
        raise ValueError(f"unknown cutout fill {fill!r} (use zero or mean)")
    n, _, h, w = x.shape
    cy = torch.randint(0, h, (n,), generator=generator, device="cpu").to(x.device)
    cx = torch.randint(0, w, (n,), generator=generator, device="cpu").to(x.device)
    ys = torch.arange(h, device=x.device)[None, :, None]
    xs = torch.arange(w, device=x.device)[None, None, :]
    dy = ys - cy[:, None, None] + size // 2
    dx = xs - cx[:, None, None] + size // 2
    inside = ((dy >= 0) & (dy < size) & (dx >= 0) & (dx < size))[:, None]
    if fill == "zero":
        return x.masked_fill(inside, 0)
    mean = x.float().mean((0, 2, 3), keepdim=True)
    return torch.where(inside, mean.round().to(x.dtype) if not x.is_floating_point() else mean.to(x.dtype), x)


def augment_batch(x: torch.Tensor, *, translate: int = 0, flip: bool = False, cutout_size: int = 0,
                  cutout_fill: str = "zero", translate_fill: str = "zero", stroke: float = 0.0, scale: float = 0.0,
                  rotate: float = 0.0, blur: float = 0.0, generator: torch.Generator | None = None) -> torch.Tensor:
    """All of a batch's augmentation in a fixed order; an op that is off draws no random numbers,
    so settings without the digit ops replay exactly the streams they always did."""
    x = random_stroke(x, stroke, generator)
    x = random_affine(x, scale, rotate, generator)
    x = random_translate(x, translate, generator, translate_fill)
    if flip:
        x = random_flip(x, generator)
    x = random_blur(x, blur, generator=generator)
    return cutout(x, cutout_size, generator, cutout_fill)


# --------------------------------------------------------------------------- digit robustness
# Photographed handwriting reaches an MNIST model (after data/preprocess.py's "digit" step) with a
# different pen width, a slightly wrong size, a tilt and some blur; these ops show the model those
# variations during training. They work in float on the whole batch and hand back the input dtype.


def _uniform(n: int, low: float, high: float, generator: torch.Generator | None) -> torch.Tensor:
    return low + (high - low) * torch.rand(n, generator=generator, device="cpu")


def _as_float(x: torch.Tensor) -> torch.Tensor:
    return x if x.is_floating_point() else x.float()


def _like(y: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """Back to the input's dtype (uint8 batches stay uint8: the loader divides by 255 later)."""
    if x.is_floating_point():
        return y.to(x.dtype)
    return y.round_().clamp_(0, 255).to(x.dtype)


def _shifted(f: torch.Tensor, fill: float) -> tuple[torch.Tensor, ...]:
    """The image and its four one-pixel shifts (up, down, left, right), borders filled."""
    p = torch.nn.functional.pad(f, (1, 1, 1, 1), value=fill)
    h, w = f.shape[-2:]
    return f, p[..., :h, 1:w + 1], p[..., 2:, 1:w + 1], p[..., 1:h + 1, :w], p[..., 1:h + 1, 2:]


def dilate(x: torch.Tensor) -> torch.Tensor:
    """Grey-level dilation with a 3x3 square (a row max, then a column max: 4 elementwise maxima,
    3x faster than max_pool2d on 1-channel 28x28 batches): strokes grow one pixel each side."""
    f = _as_float(x)
    p = torch.nn.functional.pad(f, (1, 1, 1, 1))
    h, w = f.shape[-2:]
    rows = torch.maximum(torch.maximum(p[..., :, :w], p[..., :, 1:w + 1]), p[..., :, 2:])
    return torch.maximum(torch.maximum(rows[..., :h, :], rows[..., 1:h + 1, :]), rows[..., 2:, :])


def erode(x: torch.Tensor) -> torch.Tensor:
    """Grey-level erosion with a 3x3 cross (plus-shaped), gentler than the square: MNIST's strokes
    are only 2-3 px wide, and the square's erosion wipes out their thinner parts."""
    return torch.stack(_shifted(_as_float(x), float("inf"))).amin(0)


def random_stroke(x: torch.Tensor, prob: float, generator: torch.Generator | None = None) -> torch.Tensor:
    """Change the pen width of a random `prob` share of the batch: half of those thicker (dilated),
    half thinner (eroded), each by a random strength in [0.5, 1] (a blend towards the full
    3x3 result). Full strength alone is too coarse for 28 px digits: it doubles MNIST's ink area
    (dilation) or cuts it to a third (erosion), measured on 2,000 training images."""
    if prob <= 0:
        return x
    n = x.shape[0]
    u = torch.rand(n, generator=generator, device="cpu")
    strength = _uniform(n, 0.5, 1.0, generator)
    thick, thin = torch.nonzero(u < prob / 2).flatten(), torch.nonzero((u >= prob / 2) & (u < prob)).flatten()
    if len(thick) + len(thin) == 0:
        return x
    y = _as_float(x).clone()
    for idx, op in ((thick, dilate), (thin, erode)):
        if len(idx):
            idx_d = idx.to(x.device)
            t = strength[idx].to(x.device, y.dtype)[:, None, None, None]
            part = y[idx_d]
            y[idx_d] = part + t * (op(part) - part)
    return _like(y, x)


def affine(x: torch.Tensor, scale: torch.Tensor, degrees: torch.Tensor) -> torch.Tensor:
    """Zoom each image by scale[i] and turn it by degrees[i] (counter-clockwise as displayed)
    about its centre, in one batched grid_sample; what comes in from outside is black."""
    n = x.shape[0]
    rad = degrees.to(torch.float32) * (torch.pi / 180)
    cos, sin = torch.cos(rad) / scale, torch.sin(rad) / scale
    # affine_grid maps each output (x, y) to the input point it samples, with y pointing down on
    # screen; this matrix turns the content counter-clockwise as displayed (torch.rot90 at 90).
    theta = torch.zeros(n, 2, 3)
    theta[:, 0, 0], theta[:, 0, 1] = cos, -sin
    theta[:, 1, 0], theta[:, 1, 1] = sin, cos
    f = _as_float(x)
    grid = torch.nn.functional.affine_grid(theta.to(x.device, f.dtype), list(f.shape), align_corners=False)
    y = torch.nn.functional.grid_sample(f, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
    return _like(y, x)


def random_affine(x: torch.Tensor, scale: float, degrees: float,
                  generator: torch.Generator | None = None) -> torch.Tensor:
    """Random zoom, uniform in [1 - scale, 1 + scale] (detect's --scale means the same), and
    rotation, uniform in +-degrees."""
    if scale <= 0 and degrees <= 0:
        return x
    n = x.shape[0]
    zoom = _uniform(n, 1 - scale, 1 + scale, generator)
    angle = _uniform(n, -degrees, degrees, generator)
    return affine(x, zoom, angle)


def gaussian_blur(x: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
    """Blur image i with its own sigma[i] (0 = unchanged): one separable grouped convolution."""
    n, c, h, w = x.shape
    radius = max(1, int(torch.ceil(3 * sigma.max()).item()))
    taps = torch.arange(-radius, radius + 1, dtype=torch.float32)
    s = sigma.to(torch.float32).clamp_min(1e-3)[:, None]
    kernel = torch.exp(-0.5 * (taps[None] / s) ** 2)
    kernel = (kernel / kernel.sum(1, keepdim=True)).repeat_interleave(c, 0).to(x.device)
    f = _as_float(x).reshape(1, n * c, h, w)
    f = torch.nn.functional.pad(f, (radius, radius, radius, radius), mode="replicate")
    f = torch.nn.functional.conv2d(f, kernel[:, None, None, :].to(f.dtype), groups=n * c)
    f = torch.nn.functional.conv2d(f, kernel[:, None, :, None].to(f.dtype), groups=n * c)
    return _like(f.reshape(n, c, h, w), x)


def random_blur(x: torch.Tensor, prob: float, max_sigma: float = 1.0,
                generator: torch.Generator | None = None) -> torch.Tensor:
    """Gaussian-blur a random `prob` share of the batch, sigma uniform in [0.3, max_sigma] px."""
    if prob <= 0:
        return x
    n = x.shape[0]
    chosen = torch.rand(n, generator=generator, device="cpu") < prob
    sigma = _uniform(n, 0.3, max_sigma, generator)
    idx = torch.nonzero(chosen).flatten()
    if not len(idx):
        return x
    y = x.clone()
    idx_d = idx.to(x.device)
    y[idx_d] = gaussian_blur(x[idx_d], sigma[idx])
    return y
