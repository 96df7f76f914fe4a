"""Single-stage anchor-free detectors (YOLOv8 family) in plain torch: `det-n`, `det-s`, `det-m`, `det-sq`.

Layout: a CSP backbone (conv stem, C2f stages, SPPF) giving features at strides 8/16/32, a PAN
feature pyramid (top-down then bottom-up, C2f blocks), and a decoupled head per level: one 2x conv3x3
branch predicting box side distances as distributions over `reg_max` bins (DFL), one predicting
class logits. `det-sq` swaps the backbone for SqueezeNet 1.1's features (strides 8 and 16, plus one
strided conv for 32), which can start from the ImageNet weights in ../shared/weights.

Models take RGB floats in [0, 1] and normalise themselves, like the classifiers. `forward` returns
per-level raw maps (B, 4*reg_max + nc, H, W); `lensforge.detect.decode` turns them into boxes.
"""
from __future__ import annotations

import math
import os

import torch
from torch import nn

from . import register

#: width, depth multipliers of the YOLOv8 scales; channels are (64, 128, 256, 512, 1024) * width, capped.
SCALES = {"n": (0.25, 0.34, 1024), "s": (0.5, 0.34, 1024), "m": (0.75, 0.67, 768)}
STRIDES = (8, 16, 32)


class Conv(nn.Module):
    def __init__(self, cin, cout, k=1, s=1):
        super().__init__()
        self.conv = nn.Conv2d(cin, cout, k, s, k // 2, bias=False)
        self.bn = nn.BatchNorm2d(cout, eps=1e-3, momentum=0.03)
        self.act = nn.SiLU(inplace=True)

    def forward(self, x):
        return self.act(self.bn(self.conv(x)))


class Bottleneck(nn.Module):
    def __init__(self, c, shortcut=True):
        super().__init__()
        self.cv1, self.cv2, self.add = Conv(c, c, 3), Conv(c, c, 3), shortcut

    def forward(self, x):
        y = self.cv2(self.cv1(x))
        return x + y if self.add else y


class C2f(nn.Module):
    """CSP block: split, run n bottlenecks on one half keeping every intermediate, concat, fuse."""

    def __init__(self, cin, cout, n=1, shortcut=True):
        super().__init__()
        self.c = cout // 2
        self.cv1 = Conv(cin, 2 * self.c, 1)
        self.cv2 = Conv((2 + n) * self.c, cout, 1)
        self.m = nn.ModuleList(Bottleneck(self.c, shortcut) for _ in range(n))

    def forward(self, x):
        y = list(self.cv1(x).chunk(2, 1))
        for m in self.m:
            y.append(m(y[-1]))
        return self.cv2(torch.cat(y, 1))


class SPPF(nn.Module):
    def __init__(self, cin, cout, k=5):
        super().__init__()
        self.cv1, self.cv2 = Conv(cin, cin // 2, 1), Conv(cin // 2 * 4, cout, 1)
        self.pool = nn.MaxPool2d(k, 1, k // 2)

    def forward(self, x):
        x = self.cv1(x)
        a = self.pool(x)
        b = self.pool(a)
        return self.cv2(torch.cat([x, a, b, self.pool(b)], 1))


class CSPBackbone(nn.Module):
    def __init__(self, width: float, depth: float, max_c: int):
        super().__init__()
        c = [max(16, int(round(min(v, max_c) * width / 8)) * 8) for v in (64, 128, 256, 512, 1024)]
        n = lambda k: max(1, round(k * depth))  # noqa: E731
        self.stem = nn.Sequential(Conv(3, c[0], 3, 2), Conv(c[0], c[1], 3, 2), C2f(c[1], c[1], n(3)))
        self.p3 = nn.Sequential(Conv(c[1], c[2], 3, 2), C2f(c[2], c[2], n(6)))
        self.p4 = nn.Sequential(Conv(c[2], c[3], 3, 2), C2f(c[3], c[3], n(6)))
        self.p5 = nn.Sequential(Conv(c[3], c[4], 3, 2), C2f(c[4], c[4], n(3)), SPPF(c[4], c[4]))
        self.channels = (c[2], c[3], c[4])
        self.mean = (0.0, 0.0, 0.0)
        self.std = (1.0, 1.0, 1.0)

    def forward(self, x):
        p3 = self.p3(self.stem(x))
        p4 = self.p4(p3)
        return p3, p4, self.p5(p4)


class SqueezeBackbone(nn.Module):
    """SqueezeNet 1.1 features (ReLU, no BN) at strides 8 and 16, one Conv+C2f stage for stride 32.

    The ImageNet file is the Caffe conversion, so inputs are mapped to BGR 0-255 minus the Caffe
    mean inside the model (the normalisation below is applied in RGB order; the first conv's input
    channels are flipped once at load time so no per-batch flip is needed).
    """

    def __init__(self, weights: str | os.PathLike | None = None):
        super().__init__()
        from .features import _squeezenet11_layers, load_feature_net

        feats = _squeezenet11_layers()
        if weights:
            net = load_feature_net(weights)
            feats.load_state_dict(net.features.state_dict())
            with torch.no_grad():  # Caffe weights expect BGR: flip the first conv's input channels once
                feats[0].weight.copy_(feats[0].weight.flip(1))
        self.to8, self.to16 = feats[:8], feats[8:]
        # 1x1 projections to det-n's pyramid widths: the raw 256/512 channels would make the neck
        # and head ~7x det-n's FLOPs (59 vs 8.7 GFLOPs at 640, measured) for no gain on small data
        self.lat3, self.lat4 = Conv(256, 64, 1), Conv(512, 128, 1)
        self.p5 = nn.Sequential(Conv(512, 256, 3, 2), C2f(256, 256, 1), SPPF(256, 256))
        self.channels = (64, 128, 256)
        # x*255 - mean == (x - mean/255) / (1/255)
        self.mean = (122.7 / 255, 116.7 / 255, 104.0 / 255)
        self.std = (1 / 255, 1 / 255, 1 / 255)

    def forward(self, x):
        f3 = self.to8(x)
        f4 = self.to16(f3)
        return self.lat3(f3), self.lat4(f4), self.p5(f4)


class PAN(nn.Module):
    def __init__(self, ch: tuple[int, int, int], depth: float):
        super().__init__()
        c3, c4, c5 = ch
        n = max(1, round(3 * depth))
        self.up = nn.Upsample(scale_factor=2, mode="nearest")
        self.td4 = C2f(c5 + c4, c4, n, shortcut=False)
        self.td3 = C2f(c4 + c3, c3, n, shortcut=False)
        self.down3 = Conv(c3, c3, 3, 2)
        self.bu4 = C2f(c3 + c4, c4, n, shortcut=False)
        self.down4 = Conv(c4, c4, 3, 2)
        self.bu5 = C2f(c4 + c5, c5, n, shortcut=False)

    def forward(self, feats):
        p3, p4, p5 = feats
        t4 = self.td4(torch.cat([_up_to(p5, p4), p4], 1))
        o3 = self.td3(torch.cat([_up_to(t4, p3), p3], 1))
        o4 = self.bu4(torch.cat([_down_to(self.down3(o3), t4), t4], 1))
        o5 = self.bu5(torch.cat([_down_to(self.down4(o4), p5), p5], 1))
        return o3, o4, o5


def _up_to(x, ref):
    return nn.functional.interpolate(x, size=ref.shape[-2:], mode="nearest")


def _down_to(x, ref):
    # odd feature sizes (SqueezeNet's ceil-mode pools) can leave one extra row/column: crop it
    return x[..., : ref.shape[-2], : ref.shape[-1]]


class Head(nn.Module):
    """Decoupled head: per level a box branch (4 * reg_max DFL logits) and a class branch."""

    def __init__(self, nc: int, ch: tuple[int, ...], reg_max: int = 16):
        super().__init__()
        self.nc, self.reg_max = nc, reg_max
        c2, c3 = max(16, ch[0] // 4, reg_max * 4), max(ch[0], min(nc, 100))
        self.box = nn.ModuleList(nn.Sequential(Conv(c, c2, 3), Conv(c2, c2, 3), nn.Conv2d(c2, 4 * reg_max, 1)) for c in ch)
        self.cls = nn.ModuleList(nn.Sequential(Conv(c, c3, 3), Conv(c3, c3, 3), nn.Conv2d(c3, nc, 1)) for c in ch)

    def init_bias(self, strides, image_size=640):
        for b, c, s in zip(self.box, self.cls, strides):
            nn.init.constant_(b[-1].bias, 1.0)
            # prior: about 5 objects per image spread over (image/stride)^2 cells, so early training
            # is not swamped by the BCE of thousands of confident background cells
            nn.init.constant_(c[-1].bias, math.log(5 / self.nc / (image_size / s) ** 2))

    def forward(self, feats):
        return [torch.cat([b(x), c(x)], 1) for x, b, c in zip(feats, self.box, self.cls)]


class Detector(nn.Module):
    def __init__(self, num_classes: int = 80, scale: str = "n", backbone: str = "csp",
                 backbone_weights: str | None = None, reg_max: int = 16):
        super().__init__()
        if backbone == "squeezenet":
            self.backbone = SqueezeBackbone(backbone_weights)
            depth = 0.34
        else:
            width, depth, max_c = SCALES[scale]
            self.backbone = CSPBackbone(width, depth, max_c)
        self.neck = PAN(self.backbone.channels, depth)
        self.head = Head(num_classes, self.backbone.channels, reg_max)
        self.head.init_bias(STRIDES)
        self.register_buffer("mean", torch.tensor(self.backbone.mean).view(1, 3, 1, 1))
        self.register_buffer("std", torch.tensor(self.backbone.std).view(1, 3, 1, 1))
        self.nc, self.reg_max, self.strides = num_classes, reg_max, STRIDES

    def forward(self, x):
        x = (x - self.mean) / self.std
        return self.head(self.neck(self.backbone(x)))


def _make(scale, backbone="csp"):
    def build(num_classes: int = 80, backbone_weights: str | None = None, reg_max: int = 16):
        return Detector(num_classes, scale, backbone, backbone_weights, reg_max)
    return build


register("det-n")(_make("n"))
register("det-s")(_make("s"))
register("det-m")(_make("m"))
register("det-sq")(_make("n", "squeezenet"))
