"""Face swap autoencoder: one shared encoder, one decoder per identity (faceswap's "original"
model, after the deepfakes/DeepFaceLab method, sized for a CPU).

The encoder sees faces of both people, so its code has to describe what they share - pose,
expression, lighting - while each decoder learns to draw one person from that code. Encoding a
face of A and decoding with B's decoder therefore draws B with A's pose and expression.

Layout for image_size S (a multiple of 16) and width w: four 5x5 stride-2 convolutions
(w, 2w, 4w, 8w channels) down to S/16, a dense bottleneck of `latent` units, back out to
8w x S/16 x S/16 and one pixel-shuffle upscale to 4w x S/8: that is the shared part. Each
decoder upscales three times (4w, 2w, w) to S and ends in two 5x5 heads: RGB (sigmoid) and a
face mask (sigmoid) that learns the landmark-derived mask, so convert can blend with the
network's own idea of where the face is.

At S=64, w=32, latent=256: 6.3 M parameters (2.1 M in the bottleneck, 1.0 M per decoder),
~0.27 GMAC per face through the encoder and one decoder.
"""
from __future__ import annotations

import torch
import torch.nn as nn

from . import register

__all__ = ["FaceSwapNet", "faceswap_original"]


def _down(cin: int, cout: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, 5, stride=2, padding=2), nn.LeakyReLU(0.1, inplace=True))


class _Up(nn.Sequential):
    """3x3 convolution to 4x the channels, then pixel shuffle: a learned 2x upscale without the
    checkerboard of transposed convolutions."""

    def __init__(self, cin: int, cout: int):
        super().__init__(nn.Conv2d(cin, cout * 4, 3, padding=1), nn.LeakyReLU(0.1, inplace=True),
                         nn.PixelShuffle(2))


class Encoder(nn.Module):
    def __init__(self, image_size: int, width: int, latent: int):
        super().__init__()
        self.side = image_size // 16
        self.top = width * 8
        self.convs = nn.Sequential(_down(3, width), _down(width, width * 2), _down(width * 2, width * 4),
                                   _down(width * 4, width * 8))
        flat = self.top * self.side * self.side
        self.bottleneck = nn.Sequential(nn.Flatten(), nn.Linear(flat, latent), nn.Linear(latent, flat))
        self.up = _Up(self.top, width * 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        z = self.bottleneck(self.convs(x))
        return self.up(z.view(-1, self.top, self.side, self.side))


class Decoder(nn.Module):
    def __init__(self, width: int):
        super().__init__()
        self.ups = nn.Sequential(_Up(width * 4, width * 4), _Up(width * 4, width * 2), _Up(width * 2, width))
        self.rgb = nn.Conv2d(width, 3, 5, padding=2)
        self.mask = nn.Conv2d(width, 1, 5, padding=2)

    def forward(self, code: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        h = self.ups(code)
        return torch.sigmoid(self.rgb(h)), torch.sigmoid(self.mask(h))


class FaceSwapNet(nn.Module):
    """`forward(x, identity)`: faces (B,3,S,S) in [0,1] drawn as identity "a" or "b": (rgb, mask)."""

    def __init__(self, image_size: int = 64, width: int = 32, latent: int = 256):
        super().__init__()
        if image_size < 16 or image_size % 16:
            raise ValueError(f"face swap image size must be a multiple of 16, not {image_size}")
        if width < 1 or latent < 1:
            raise ValueError("width and latent must be positive")
        self.image_size = image_size
        self.encoder = Encoder(image_size, width, latent)
        self.decoders = nn.ModuleDict({"a": Decoder(width), "b": Decoder(width)})

    def forward(self, x: torch.Tensor, identity: str = "a") -> tuple[torch.Tensor, torch.Tensor]:
        return self.decoders[identity](self.encoder(x))

    def swap(self, x: torch.Tensor, direction: str) -> tuple[torch.Tensor, torch.Tensor]:
        """"a2b": faces of A drawn as B (B's decoder); "b2a" the reverse."""
        if direction not in ("a2b", "b2a"):
            raise ValueError(f"direction must be a2b or b2a, not {direction!r}")
        return self(x, direction[-1])


@register("faceswap-original")
def faceswap_original(image_size: int = 64, width: int = 32, latent: int = 256) -> FaceSwapNet:
    return FaceSwapNet(image_size, width, latent)
