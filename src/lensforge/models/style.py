"""Feed-forward style network (Johnson et al. 2016, with Ulyanov's instance norm).

One forward pass replaces Gatys' hundreds of optimisation steps. The layout is Johnson's
(stride-2 downsampling, residual blocks at 1/4 resolution, upsampling back), but the default width
is half of his and three residual blocks instead of five, so a 512 px photo stays under half a
second on a 2-core CPU; `base`/`blocks` restore the original size where a GPU is available.
Upsampling is nearest + conv rather than transposed conv, which avoids checkerboard artefacts.
"""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from . import register


class _ConvIN(nn.Sequential):
    def __init__(self, cin: int, cout: int, k: int, stride: int = 1, relu: bool = True):
        layers = [nn.ReflectionPad2d(k // 2), nn.Conv2d(cin, cout, k, stride),
                  nn.InstanceNorm2d(cout, affine=True)]
        if relu:
            layers.append(nn.ReLU(inplace=True))
        super().__init__(*layers)


class _Residual(nn.Module):
    def __init__(self, c: int):
        super().__init__()
        self.body = nn.Sequential(_ConvIN(c, c, 3), _ConvIN(c, c, 3, relu=False))

    def forward(self, x):
        return x + self.body(x)


class _Up(nn.Module):
    def __init__(self, cin: int, cout: int):
        super().__init__()
        self.conv = _ConvIN(cin, cout, 3)

    def forward(self, x):
        return self.conv(F.interpolate(x, scale_factor=2, mode="nearest"))


class TransformerNet(nn.Module):
    """RGB in [0,1] -> stylised RGB in [0,1], any size (sides are padded to a multiple of 4)."""

    def __init__(self, base: int = 16, blocks: int = 3):
        super().__init__()
        c1, c2, c3 = base, base * 2, base * 4
        self.encode = nn.Sequential(_ConvIN(3, c1, 9), _ConvIN(c1, c2, 3, 2), _ConvIN(c2, c3, 3, 2))
        self.res = nn.Sequential(*[_Residual(c3) for _ in range(blocks)])
        self.decode = nn.Sequential(_Up(c3, c2), _Up(c2, c1), nn.ReflectionPad2d(4), nn.Conv2d(c1, 3, 9))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h, w = x.shape[-2:]
        ph, pw = (-h) % 4, (-w) % 4
        if ph or pw:
            x = F.pad(x, (0, pw, 0, ph), mode="reflect")
        y = self.decode(self.res(self.encode(x)))
        # A sigmoid keeps outputs in range without the dead gradients of a hard clamp.
        return torch.sigmoid(y[..., :h, :w])


@register("style-transformer")
def style_transformer(base: int = 16, blocks: int = 3) -> TransformerNet:
    return TransformerNet(base, blocks)
