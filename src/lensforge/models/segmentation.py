"""Segmentation networks and losses.

`unet` (the encoder-decoder with skip connections and batch norm, depth/width options) is the
lead's `models/unet.py`, built with out_channels = number of classes. This module adds `deeplab`:
DeepLabv3+-style, an ImageNet-pretrainable SqueezeNet 1.1 encoder whose last stage is made atrous
(output stride 8 instead of 16, so thin structures survive), an ASPP head (parallel dilated 3x3
convolutions at several rates plus image pooling) and a light decoder that merges 1/4-scale
encoder features before upsampling to the input size.
"""
from __future__ import annotations

import os

import torch
import torch.nn as nn
import torch.nn.functional as F

from . import register
from .features import _CAFFE_MEAN_BGR, _squeezenet11_layers, load_feature_net

#: Fire modules (features indices) after the third pooling, dilated when output stride is 8
_LATE_FIRES = (9, 10, 11, 12)
_LATE_POOL = 8
_LOW_LEVEL = 4        # Fire4 output: 128 channels at 1/4 scale


def _conv_bn(cin: int, cout: int, k: int = 3, dilation: int = 1) -> nn.Sequential:
    pad = dilation * (k // 2)
    return nn.Sequential(nn.Conv2d(cin, cout, k, padding=pad, dilation=dilation, bias=False),
                         nn.BatchNorm2d(cout), nn.ReLU(inplace=True))


class ASPP(nn.Module):
    """Atrous spatial pyramid pooling: a 1x1 branch, one dilated 3x3 branch per rate, and global
    pooling (image-level context), concatenated and projected."""

    def __init__(self, cin: int, cout: int, rates: tuple[int, ...]):
        super().__init__()
        self.branches = nn.ModuleList([_conv_bn(cin, cout, 1)] + [_conv_bn(cin, cout, 3, r) for r in rates])
        self.pool = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Conv2d(cin, cout, 1, bias=False), nn.ReLU(inplace=True))
        self.project = nn.Sequential(_conv_bn(cout * (len(rates) + 2), cout, 1), nn.Dropout2d(0.1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        outs = [b(x) for b in self.branches]
        outs.append(self.pool(x).expand(-1, -1, x.shape[2], x.shape[3]))
        return self.project(torch.cat(outs, 1))


class DeepLab(nn.Module):
    """Takes images in [0,1] (grey or RGB) and returns per-pixel class logits at the input size.

    The encoder always sees the Caffe SqueezeNet input convention (BGR, 0-255, mean subtracted),
    whether it starts from ImageNet weights (`load_encoder`) or from scratch, so a checkpoint never
    depends on where its encoder came from.
    """

    def __init__(self, in_channels: int = 3, num_classes: int = 2, rates: tuple[int, ...] = (3, 6, 9),
                 width: int = 128, output_stride: int = 8):
        super().__init__()
        if output_stride not in (8, 16):
            raise ValueError("DeepLab output stride must be 8 or 16")
        self.in_channels, self.num_classes = in_channels, num_classes
        self.features = _squeezenet11_layers()
        if output_stride == 8:
            self.features[_LATE_POOL] = nn.Identity()   # keeps the index layout of the pretrained weights
            for i in _LATE_FIRES:
                conv = self.features[i].expand3x3
                conv.dilation, conv.padding = (2, 2), (2, 2)
        self.aspp = ASPP(512, width, tuple(rates))
        self.low = _conv_bn(128, 32, 1)
        self.decoder = nn.Sequential(_conv_bn(width + 32, width), _conv_bn(width, width))
        self.head = nn.Conv2d(width, num_classes, 1)
        self.register_buffer("mean", torch.tensor(_CAFFE_MEAN_BGR).view(1, 3, 1, 1), persistent=False)

    multiple = 16   # tiles are padded to this; any size works, outputs are resized to the input

    def load_encoder(self, path: str | os.PathLike) -> None:
        """ImageNet SqueezeNet 1.1 features (the Caffe file in ../shared/weights, or torchvision's);
        a wrong file is refused with one line by `load_feature_net`."""
        net = load_feature_net(path)
        state = {k: v for k, v in net.features.state_dict().items()}
        self.features.load_state_dict(state, strict=True)   # pools/Identity hold no parameters

    def _normalise(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[1] == 1:
            x = x.expand(-1, 3, -1, -1)
        return x.flip(1) * 255.0 - self.mean.to(x.dtype)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        size = x.shape[-2:]
        f = self._normalise(x)
        low = None
        for i, layer in enumerate(self.features):
            f = layer(f)
            if i == _LOW_LEVEL:
                low = f
        f = self.aspp(f)
        low = self.low(low)
        f = F.interpolate(f, size=low.shape[-2:], mode="bilinear", align_corners=False)
        f = self.decoder(torch.cat([f, low], 1))
        return F.interpolate(self.head(f), size=size, mode="bilinear", align_corners=False)


@register("deeplab")
def deeplab(in_channels: int = 3, num_classes: int = 2, rates=(3, 6, 9), width: int = 128,
            output_stride: int = 8) -> DeepLab:
    return DeepLab(in_channels, num_classes, tuple(rates), width, output_stride)


# ----------------------------------------------------------------------------- losses


def soft_dice_loss(logits: torch.Tensor, target: torch.Tensor, eps: float = 1.0) -> torch.Tensor:
    """1 - mean over classes of the soft Dice coefficient, pooled over the whole batch (a per-image
    Dice is noisy for crops in which a class is absent)."""
    k = logits.shape[1]
    prob = logits.float().softmax(1)
    onehot = F.one_hot(target, k).permute(0, 3, 1, 2).float()
    inter = (prob * onehot).sum((0, 2, 3))
    total = prob.sum((0, 2, 3)) + onehot.sum((0, 2, 3))
    return 1 - ((2 * inter + eps) / (total + eps)).mean()


def segmentation_loss(logits: torch.Tensor, target: torch.Tensor, *, class_weights: torch.Tensor | None = None,
                      pixel_weights: torch.Tensor | None = None, dice: float = 1.0) -> tuple[torch.Tensor, dict]:
    """Cross-entropy (optionally class- and pixel-weighted, e.g. the U-Net border map) + dice * soft Dice.

    CE fixes every pixel; Dice counts each class equally however few pixels it has, so a rare class is
    not traded away for background accuracy. Computed in float32 (bf16 softmax sums drift)."""
    logits = logits.float()
    ce = F.cross_entropy(logits, target, weight=class_weights.to(logits.device) if class_weights is not None else None,
                         reduction="none")
    if pixel_weights is not None:
        ce = ce * pixel_weights
    if class_weights is not None:
        norm = class_weights.to(logits.device)[target]
        norm = norm * pixel_weights if pixel_weights is not None else norm
        ce = ce.sum() / norm.sum().clamp_min(1e-6)
    elif pixel_weights is not None:
        ce = ce.sum() / pixel_weights.sum().clamp_min(1e-6)
    else:
        ce = ce.mean()
    logs = {"ce": ce.detach()}
    loss = ce
    if dice > 0:
        d = soft_dice_loss(logits, target)
        logs["dice_loss"] = d.detach()
        loss = loss + dice * d
    logs["loss"] = loss.detach()
    return loss, logs
