"""`lensforge export --weights RUN --format onnx ...`: options (torch-free).

`export` has one verb, `model`, which is also the default: `lensforge export --weights RUN` is
`lensforge export model --weights RUN`.
"""
from __future__ import annotations

from dataclasses import dataclass

from ..options import TaskCLI, Verb, option
from .common import weights_option

FORMATS = ("onnx",)
#: Lowest opset whose ops every exported graph needs; highest the TorchScript-based exporter writes.
OPSET_LOW, OPSET_HIGH = 13, 20


@dataclass(kw_only=True)
class ExportOptions:
    weights: str = weights_option()
    format: str = option("onnx", "file format", choices=FORMATS)
    out: str | None = option(None, "output file; a multi-part export (encoder/decoder, faceswap's two "
                             "decoders) also writes FILE's stem + -PART.onnx",
                             metavar="FILE", default_help="the weights file with suffix .onnx")
    dynamic_batch: bool = option(False, "let the graph take any batch size (else batch 1)")
    opset: int = option(17, "ONNX opset", low=OPSET_LOW, high=OPSET_HIGH)
    quantize: str | None = option(None, "int8: static int8 quantisation (classify), calibrated on the run's "
                                        "training images; prints the test accuracy before and after",
                                  choices=("int8",))
    check: bool = option(True, "skip comparing onnxruntime with PyTorch on the run's images after export",
                         negative="--no-check")


CLI = TaskCLI("export", "export trained weights for deployment (ONNX, run with onnxruntime)", (
    Verb("model", "export a run's weights as ONNX with the preprocessing and classes in its metadata",
         (ExportOptions,), "lensforge.cli.export:export_"),
), default_verb="model")
