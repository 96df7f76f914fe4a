"""Does a frozen ImageNet network's view of the grey image lift the colouriser? (issue 17 experiment)

The default colouriser (a base-32 U-Net on L) levels off at ~58% of the originals' colourfulness
on CIFAR-10 with PSNR above grey (bench/results/colorize_cifar10_16ep.json), short of the issue's
70%. Colourisation papers that reach vivid, right colours (Larsson et al. 2016, Iizuka et al. 2016)
feed semantic features of a network trained on ImageNet; lensforge has SqueezeNet 1.1's
(models/features.py, 2.9 MB, the file style transfer uses). This script trains the same task, data,
loss, recipe and decoding choice with one change: the grey image, as sRGB upsampled 4x (32 -> 128
px, so SqueezeNet's stride-16 stack keeps a 7x7 map), goes through SqueezeNet's frozen features;
their last map (512 channels), pooled to the U-Net's bottleneck size and projected by a trained
1x1 convolution with batch norm, is added to the bottleneck. Nothing else differs, so the
colourfulness and PSNR against the plain U-Net's run of the same epochs is the measure.

    flock /tmp/lensforge-cpu.lock .venv/bin/python bench/colorize_semantic.py \
        --features ../shared/weights/squeezenet1_1-features-caffe.pth --epochs 8 --name semantic_8ep

Writes the run to bench/out/colorize/NAME and bench/results/colorize_NAME.json.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch
import torch.nn as nn
import torch.nn.functional as F

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from lensforge.errors import LensforgeError  # noqa: E402
from lensforge.fileio import write_json  # noqa: E402
from lensforge.models import register  # noqa: E402
from lensforge.models.features import load_feature_net  # noqa: E402
from lensforge.models.unet import UNet  # noqa: E402
from lensforge.tasks import colorize as C  # noqa: E402
from lensforge.tasks.lifecycle import run  # noqa: E402

DATA = ROOT.parent / "shared" / "datasets" / "cifar10-jpeg.zip"
DEEPEST = 12          # SqueezeNet 1.1's last Fire module: 512 channels, stride 16
UPSAMPLE = 4


class SemanticUNet(UNet):
    """UNet on L whose bottleneck also gets a frozen ImageNet network's features of the grey image."""

    def __init__(self, features: str, out_channels: int, base: int = 32, depth: int = 3):
        super().__init__(1, out_channels, base, depth)
        self.semantic = load_feature_net(features)
        self.project = nn.Sequential(nn.Conv2d(512, base * 2 ** depth, 1, bias=False),
                                     nn.BatchNorm2d(base * 2 ** depth), nn.ReLU(inplace=True))

    def context(self, x: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
        with torch.no_grad():
            L = (x.float() + 1) * 50                                     # C.l_input undone
            grey = F.interpolate(C._grey(L), scale_factor=UPSAMPLE, mode="bilinear", align_corners=False)
            f = self.semantic(grey, (DEEPEST,))[DEEPEST]
        return self.project(F.adaptive_avg_pool2d(f, size))

    def bottleneck(self, x: torch.Tensor, inputs: torch.Tensor) -> torch.Tensor:
        return x + self.context(inputs, x.shape[-2:])


register("unet_semantic")(SemanticUNet)


class SemanticColorizeTask(C.ColorizeTask):
    features = ""

    def setup(self) -> None:
        super().setup()
        self.model_name = "unet_semantic"
        self.model_kwargs = {"features": self.features, "out_channels": len(self.bins), "base": self.opts.base,
                             "depth": self.opts.depth}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--features", required=True, help="SqueezeNet 1.1 features weights file")
    ap.add_argument("--name", default="semantic_8ep")
    ap.add_argument("--epochs", type=int, default=8)
    ap.add_argument("--eval-images", type=int, default=0)
    ap.add_argument("--data", default=str(DATA))
    a = ap.parse_args()
    SemanticColorizeTask.features = str(Path(a.features).resolve())
    load_feature_net(SemanticColorizeTask.features)   # a wrong file is refused before the data is decoded
    out = ROOT / "bench" / "out" / "colorize" / a.name
    t0 = time.time()
    r = run(SemanticColorizeTask, a.data, out=out, epochs=a.epochs, eval_images=a.eval_images, progress=False)
    res = {k: v for k, v in r.results.items() if not k.endswith("_sweep")}
    res.update({"command": f"python bench/colorize_semantic.py --features {a.features} --epochs {a.epochs} "
                           f"--name {a.name}",
                "wall_seconds": round(time.time() - t0, 1), "run": str(out.relative_to(ROOT))})
    write_json(ROOT / "bench" / "results" / f"colorize_{a.name}.json", res)
    print({k: res[k] for k in ("test_psnr", "test_grey_psnr", "test_colourfulness_ratio", "temperature", "correction")
           if k in res})
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except LensforgeError as e:       # a wrong weights file, unreadable data: one line, exit 1
        sys.exit(f"colorize_semantic: {e}")
