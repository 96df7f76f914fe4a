"""Training pieces for the face swap autoencoder (torch): augmentation and the loss.

Augmentation follows the faceswap recipe. Both input and target get the same random similarity
(rotation, zoom, shift), mirror and colour jitter; the input alone is also bent by a smooth
random warp. The network therefore never sees the exact target: to draw it, it must learn what
a face of this person looks like rather than copy pixels, which is what makes decoding someone
else's code work at all. Every draw comes from a caller-supplied generator, so training resumes
exactly.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from ..color import ssim

__all__ = ["augment_pair", "faceswap_loss", "WarpSettings"]


class WarpSettings:
    """Augmentation strengths (defaults are faceswap's: +-10 degrees, +-5% zoom and shift,
    warp noise ~2% of the side on a 5x5 grid)."""

    def __init__(self, rotation: float = 10.0, zoom: float = 0.05, shift: float = 0.05, warp: float = 0.04,
                 warp_points: int = 5, flip: bool = True, jitter: float = 0.08):
        self.rotation, self.zoom, self.shift, self.warp = rotation, zoom, shift, warp
        self.warp_points, self.flip, self.jitter = warp_points, flip, jitter


def _uniform(n: int, scale: float, gen: torch.Generator) -> torch.Tensor:
    return (torch.rand(n, generator=gen) * 2 - 1) * scale


def augment_pair(faces: torch.Tensor, masks: torch.Tensor, gen: torch.Generator,
                 s: WarpSettings | None = None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(warped input, undistorted target, target mask) from faces (N,3,S,S) in [0,1] and their
    masks (N,1,S,S). Random numbers are drawn on the CPU generator, then moved to the batch's
    device, so results do not depend on the device."""
    s = s or WarpSettings()
    n, _, h, w = faces.shape
    dev = faces.device
    angle = _uniform(n, math.radians(s.rotation), gen)
    scale = 1 + _uniform(n, s.zoom, gen)
    tx, ty = _uniform(n, s.shift * 2, gen), _uniform(n, s.shift * 2, gen)  # grid units span 2
    mirror = torch.where(torch.rand(n, generator=gen) < 0.5, -1.0, 1.0) if s.flip else torch.ones(n)
    cos, sin = torch.cos(angle) / scale, torch.sin(angle) / scale
    theta = torch.stack([torch.stack([cos * mirror, -sin, tx], 1), torch.stack([sin * mirror, cos, ty], 1)], 1)
    grid = F.affine_grid(theta.to(dev, faces.dtype), (n, 3, h, w), align_corners=False)
    both = torch.cat([faces, masks], 1)
    target_all = F.grid_sample(both, grid, mode="bilinear", padding_mode="reflection", align_corners=False)
    noise = torch.randn(n, 2, s.warp_points, s.warp_points, generator=gen) * s.warp
    field = F.interpolate(noise.to(dev, faces.dtype), size=(h, w), mode="bicubic", align_corners=True)
    warped = F.grid_sample(faces, grid + field.permute(0, 2, 3, 1), mode="bilinear", padding_mode="reflection",
                           align_corners=False)
    target, mask = target_all[:, :3], target_all[:, 3:]
    if s.jitter > 0:
        # brightness, contrast and saturation, the same for input and target
        b = _uniform(n, s.jitter, gen).to(dev).view(n, 1, 1, 1)
        c = (1 + _uniform(n, 2 * s.jitter, gen)).to(dev).view(n, 1, 1, 1)
        sat = (1 + _uniform(n, 2 * s.jitter, gen)).to(dev).view(n, 1, 1, 1)

        def jitter(x):
            grey = x.mean(1, keepdim=True)
            x = grey + (x - grey) * sat
            mean = x.mean((1, 2, 3), keepdim=True)
            return ((x - mean) * c + mean + b).clamp(0, 1)

        target, warped = jitter(target), jitter(warped)
    return warped.clamp(0, 1), target.clamp(0, 1), mask.clamp(0, 1)


def faceswap_loss(pred: torch.Tensor, pred_mask: torch.Tensor, target: torch.Tensor, target_mask: torch.Tensor, *,
                  kind: str = "l1", ssim_weight: float = 1.0, mask_weight: float = 1.0,
                  face_weight: float = 3.0) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Reconstruction loss with the face counted `face_weight` times more than the background
    (faceswap's "penalized mask loss": the face is what gets pasted), plus (1 - SSIM) for
    structure and the mask channel's MSE against the landmark-derived mask."""
    pred, pred_mask = pred.float(), pred_mask.float()
    weight = 1 + (face_weight - 1) * target_mask
    err = (pred - target).abs() if kind == "l1" else (pred - target).pow(2)
    rec = (err * weight).mean() / weight.mean()
    loss = rec
    logs = {"rec": rec.detach()}
    if ssim_weight > 0:
        dssim = 1 - ssim(pred, target).mean()
        loss = loss + ssim_weight * dssim
        logs["dssim"] = dssim.detach()
    if mask_weight > 0:
        m = F.mse_loss(pred_mask, target_mask)
        loss = loss + mask_weight * m
        logs["mask"] = m.detach()
    return loss, logs
