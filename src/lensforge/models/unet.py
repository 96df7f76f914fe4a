"""U-Net (Ronneberger et al. 2015): an encoder-decoder whose skip connections carry full-resolution
detail past the bottleneck, so per-pixel outputs (chroma, masks) line up with edges in the input.

Written task-neutral (in_channels -> out_channels per pixel) so colourisation and segmentation share
it; inputs must have sides divisible by 2**depth (see `UNet.multiple`).
"""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from . import register


def _block(cin: int, cout: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True),
                         nn.Conv2d(cout, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True))


class UNet(nn.Module):
    def __init__(self, in_channels: int = 1, out_channels: int = 2, base: int = 32, depth: int = 3):
        super().__init__()
        if depth < 1 or base < 1:
            raise ValueError("U-Net depth and base width must be >= 1")
        widths = [base * 2 ** i for i in range(depth + 1)]
        self.depth = depth
        self.down = nn.ModuleList([_block(in_channels, widths[0])] +
                                  [_block(widths[i], widths[i + 1]) for i in range(depth)])
        self.up = nn.ModuleList([nn.ConvTranspose2d(widths[i + 1], widths[i], 2, stride=2) for i in reversed(range(depth))])
        self.merge = nn.ModuleList([_block(widths[i] * 2, widths[i]) for i in reversed(range(depth))])
        self.head = nn.Conv2d(widths[0], out_channels, 1)

    @property
    def multiple(self) -> int:
        """Input height and width must be multiples of this."""
        return 2 ** self.depth

    def bottleneck(self, x: torch.Tensor, inputs: torch.Tensor) -> torch.Tensor:
        """The deepest features on their way to the decoder, given the network's input too: as they
        are here; a variant that brings in other context (bench/colorize_semantic.py) overrides it."""
        return x

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        skips, inputs = [], x
        for i, block in enumerate(self.down):
            x = block(x if i == 0 else F.max_pool2d(x, 2))
            skips.append(x)
        skips.pop()
        x = self.bottleneck(x, inputs)
        for up, merge in zip(self.up, self.merge):
            x = merge(torch.cat([up(x), skips.pop()], dim=1))
        return self.head(x)


@register("unet")
def unet(in_channels: int = 1, out_channels: int = 2, base: int = 32, depth: int = 3) -> UNet:
    return UNet(in_channels, out_channels, base, depth)
