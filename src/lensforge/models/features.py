"""Pretrained ImageNet feature extractors for perceptual and style losses, without torchvision.

Style transfer needs a network whose layers already respond to edges, textures and parts; an
untrained one gives noise. The layouts below reproduce torchvision's `features` modules exactly, so
a torchvision state_dict (VGG16, VGG19, SqueezeNet 1.1) or a Caffe-converted SqueezeNet loads key
for key. Weights are read with `torch.load(weights_only=True)` and checked against the layout
before use: a wrong file is refused with one line, not half-loaded.

Default weights: $LENSFORGE_FEATURE_WEIGHTS, else torchvision's SqueezeNet 1.1 file, downloaded
once from its official URL into ~/.cache/lensforge/weights and checked against the sha256 prefix
in its name (as datasets are: data/download.py); offline, one line says where to put it.

Input conventions differ by origin and matter a lot (wrong ones give blotchy styles):
 - "caffe": BGR, 0-255, mean (104.0, 116.7, 122.7) subtracted. Caffe-converted SqueezeNet files
   (such as the squeezenet1_1-features-caffe.pth the project's figures were measured with).
 - "torchvision": RGB in [0,1] normalised by ImageNet mean/std. torchvision's own checkpoints.
"""
from __future__ import annotations

import hashlib
import os
import re
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn as nn

from ..errors import CheckpointError, DataError

CONVENTIONS = ("caffe", "torchvision")
#: The weights used when neither --features nor the variable names a file (specs/stylize.py shows both in --help).
DEFAULT_FEATURES = "squeezenet1_1"
FEATURES_ENV = "LENSFORGE_FEATURE_WEIGHTS"
_CAFFE_MEAN_BGR = (104.0, 116.7, 122.7)
_IMAGENET_MEAN = (0.485, 0.456, 0.406)
_IMAGENET_STD = (0.229, 0.224, 0.225)

#: torchvision's published files; the hex in the name is the sha256 prefix torchvision checks.
KNOWN_URLS = {
    "vgg16": "https://download.pytorch.org/models/vgg16-397923af.pth",
    "vgg19": "https://download.pytorch.org/models/vgg19-dcbb9e9d.pth",
    "squeezenet1_1": "https://download.pytorch.org/models/squeezenet1_1-b8a52dc0.pth",
}

_VGG_CFG = {
    "vgg16": [64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512, "M"],
    "vgg19": [64, 64, "M", 128, 128, "M", 256, 256, 256, 256, "M", 512, 512, 512, 512, "M", 512, 512, 512, 512, "M"],
}


class Fire(nn.Module):
    """SqueezeNet's module: 1x1 squeeze, then parallel 1x1 and 3x3 expands, concatenated."""

    def __init__(self, cin: int, squeeze: int, e1: int, e3: int):
        super().__init__()
        self.squeeze = nn.Conv2d(cin, squeeze, 1)
        self.expand1x1 = nn.Conv2d(squeeze, e1, 1)
        self.expand3x3 = nn.Conv2d(squeeze, e3, 3, padding=1)

    def forward(self, x):
        x = torch.relu(self.squeeze(x))
        return torch.cat([torch.relu(self.expand1x1(x)), torch.relu(self.expand3x3(x))], 1)


def _squeezenet11_layers() -> nn.Sequential:
    pool = lambda: nn.MaxPool2d(3, 2, ceil_mode=True)  # noqa: E731
    return nn.Sequential(nn.Conv2d(3, 64, 3, stride=2), nn.ReLU(inplace=True), pool(),
                         Fire(64, 16, 64, 64), Fire(128, 16, 64, 64), pool(),
                         Fire(128, 32, 128, 128), Fire(256, 32, 128, 128), pool(),
                         Fire(256, 48, 192, 192), Fire(384, 48, 192, 192), Fire(384, 64, 256, 256),
                         Fire(512, 64, 256, 256))


def _vgg_layers(cfg: list) -> nn.Sequential:
    layers, cin = [], 3
    for v in cfg:
        if v == "M":
            layers.append(nn.MaxPool2d(2, 2))
        else:
            layers += [nn.Conv2d(cin, v, 3, padding=1), nn.ReLU(inplace=True)]
            cin = v
    return nn.Sequential(*layers)


@dataclass(frozen=True)
class LayerChoice:
    """Which `features` indices Gatys' losses read: several shallow-to-deep for style, one for content."""

    style: tuple[int, ...]
    content: int


#: Layer picks: VGG follows Gatys (relu1_1..relu5_1, content relu4_2); SqueezeNet takes the first
#: ReLU and the Fire outputs at each of its four scales, content at the 1/8-scale Fire5 output.
LAYERS = {
    "squeezenet1_1": LayerChoice(style=(1, 4, 7, 10, 12), content=7),
    "vgg16": LayerChoice(style=(1, 6, 11, 18, 25), content=20),
    "vgg19": LayerChoice(style=(1, 6, 11, 20, 29), content=22),
}


#: Peak bytes per input pixel of a forward + backward pass through the loss layers (fp32, batch 1),
#: measured as the growth of peak RSS on the CPU (SqueezeNet at 1024 px, VGG at 512 px).
TRAIN_BYTES_PER_PIXEL = {"squeezenet1_1": 930, "vgg16": 3200, "vgg19": 3270}


class FeatureNet(nn.Module):
    """Frozen ImageNet `features` stack that returns the activations at chosen indices.

    Takes RGB in [0,1] and applies its own input convention, so callers never deal with BGR or
    Caffe means. Layers past the deepest requested index are dropped to save time.
    """

    def __init__(self, arch: str, features: nn.Sequential, convention: str):
        super().__init__()
        if convention not in CONVENTIONS:
            raise ValueError(f"convention must be one of {CONVENTIONS}")
        self.arch, self.convention, self.features = arch, convention, features
        self.layers = LAYERS[arch]
        self.train_bytes_per_pixel = TRAIN_BYTES_PER_PIXEL[arch]
        if convention == "caffe":
            mean = torch.tensor(_CAFFE_MEAN_BGR[::-1]).view(1, 3, 1, 1) / 255  # as RGB in [0,1] units
            self.register_buffer("mean", mean)
            self.register_buffer("scale", torch.full((1, 3, 1, 1), 255.0))
        else:
            self.register_buffer("mean", torch.tensor(_IMAGENET_MEAN).view(1, 3, 1, 1))
            self.register_buffer("scale", 1 / torch.tensor(_IMAGENET_STD).view(1, 3, 1, 1))
        self.requires_grad_(False)
        self.eval()

    def normalise(self, rgb: torch.Tensor) -> torch.Tensor:
        x = (rgb - self.mean) * self.scale
        return x.flip(1) if self.convention == "caffe" else x

    def forward(self, rgb: torch.Tensor, indices: tuple[int, ...]) -> dict[int, torch.Tensor]:
        x, out, last = self.normalise(rgb), {}, max(indices)
        for i, layer in enumerate(self.features):
            x = layer(x)
            if i in indices:
                out[i] = x
            if i >= last:
                break
        return out

    def train(self, mode: bool = True):  # frozen: BatchNorm-free, but keep eval semantics anyway
        return super().train(False)


def detect_arch(state: dict) -> str:
    """Name the architecture from a state_dict's keys and shapes, or '' if it is none we know."""
    if "features.3.squeeze.weight" in state and "features.12.expand3x3.weight" in state:
        return "squeezenet1_1"
    convs = [k for k in state if re.fullmatch(r"features\.\d+\.weight", k) and getattr(state[k], "dim", lambda: 0)() == 4]
    return {13: "vgg16", 16: "vgg19"}.get(len(convs), "")


def _read_state(path: Path) -> dict:
    if not path.is_file():
        raise CheckpointError(f"{path}: no such weights file")
    from ..engine.checkpoint import load_weights_only

    state = load_weights_only(path, "weights file")
    if isinstance(state, dict) and isinstance(state.get("state_dict"), dict):
        state = state["state_dict"]
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise CheckpointError(f"{path}: not a state_dict of tensors")
    return {k.removeprefix("module."): v for k, v in state.items()}


def load_feature_net(path: str | os.PathLike, convention: str | None = None) -> FeatureNet:
    """Build the matching network for a weights file (VGG16/19 or SqueezeNet 1.1 features).

    `convention` None: "torchvision" for VGG and for torchvision's own files (named as published,
    e.g. squeezenet1_1-b8a52dc0.pth), "caffe" for any other SqueezeNet file (Caffe conversions).
    """
    path = Path(path)
    state = _read_state(path)
    arch = detect_arch(state)
    if not arch:
        raise CheckpointError(f"{path}: not VGG16/VGG19/SqueezeNet 1.1 ImageNet weights "
                              f"(keys like {', '.join(list(state)[:3]) or 'none'})")
    features = _squeezenet11_layers() if arch == "squeezenet1_1" else _vgg_layers(_VGG_CFG[arch])
    wanted = {k.removeprefix("features."): v for k, v in state.items() if k.startswith("features.")}
    try:
        features.load_state_dict(wanted, strict=True)
    except RuntimeError as e:
        raise CheckpointError(f"{path}: looks like {arch} but does not fit its layout "
                              f"({str(e).splitlines()[1].strip()[:160] if len(str(e).splitlines()) > 1 else e})") from None
    if convention is None:
        torchvision_file = path.name in {u.rsplit("/", 1)[1] for u in KNOWN_URLS.values()}
        convention = "caffe" if arch == "squeezenet1_1" and not torchvision_file else "torchvision"
    if convention not in CONVENTIONS:
        raise CheckpointError(f"unknown input convention '{convention}' (caffe or torchvision)")
    return FeatureNet(arch, features, convention)


def weights_cache() -> Path:
    """~/.cache/lensforge/weights (under $XDG_CACHE_HOME when that is absolute)."""
    cache = os.environ.get("XDG_CACHE_HOME", "")
    base = Path(cache) if os.path.isabs(cache) else Path.home() / ".cache"
    return base / "lensforge" / "weights"


def _offline(fname: str, url: str, dest: Path, reason: str) -> DataError:
    return DataError(f"{fname}: {reason}; download {url} and save it as {dest}, or pass --features FILE "
                     f"(or set {FEATURES_ENV}=FILE) with SqueezeNet 1.1 / VGG16 / VGG19 ImageNet weights")


def fetch_known_weights(name: str, dest_dir: str | os.PathLike, *, download: bool = True, progress: bool = True) -> Path:
    """Path to torchvision's `name` weights in dest_dir, downloaded and sha256-checked if absent.

    torchvision names its files `<arch>-<first 8 hex of sha256>.pth`; the same prefix check is
    done here so a truncated or substituted file never gets the final name.
    """
    from ..data import download as dl

    if name not in KNOWN_URLS:
        raise DataError(f"unknown weights '{name}' (known: {', '.join(KNOWN_URLS)}; or give a file path)")
    url = KNOWN_URLS[name]
    fname = url.rsplit("/", 1)[1]
    expected = fname.rsplit("-", 1)[1].split(".")[0]
    dest = Path(dest_dir) / fname
    if dest.exists():
        return dest
    if not download:
        raise _offline(fname, url, dest, "not downloaded yet and downloads are off (--no-download)")
    part = dest.with_name(fname + ".part")
    try:
        dest.parent.mkdir(parents=True, exist_ok=True)
        dl._download(url, part, fname, 60, progress)  # resumable, shared with dataset downloads
    except Exception as e:  # noqa: BLE001 -- any network failure becomes the same one-line message
        raise _offline(fname, url, dest, f"download failed ({dl._reason(e)})") from None
    h = hashlib.sha256()
    with open(part, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    if not h.hexdigest().startswith(expected):
        part.unlink()
        raise DataError(f"{fname}: checksum mismatch (sha256 {h.hexdigest()[:8]}, expected {expected}...) from {url}")
    os.replace(part, dest)
    return dest


def default_features() -> str:
    """$LENSFORGE_FEATURE_WEIGHTS (read when called), else torchvision's SqueezeNet 1.1."""
    return os.environ.get(FEATURES_ENV) or DEFAULT_FEATURES


def resolve_weights(spec: str | None, *, cache_dir: str | os.PathLike | None = None, download: bool = True) -> Path:
    """The weights file for `spec`: a path as given, or a known name (squeezenet1_1, vgg16, vgg19)
    fetched into the cache; None means default_features()."""
    spec = spec or default_features()
    p = Path(spec).expanduser()
    if p.exists() or spec not in KNOWN_URLS:
        return p
    return fetch_known_weights(spec, Path(cache_dir) if cache_dir else weights_cache(), download=download)


def gram(f: torch.Tensor) -> torch.Tensor:
    """Gram matrix of (B,C,H,W) features normalised by C*H*W, in float32 (bf16 sums lose the style)."""
    b, c, h, w = f.shape
    with torch.autocast(f.device.type, enabled=False):
        f = f.float().reshape(b, c, h * w)
        return f @ f.transpose(1, 2) / (c * h * w)
