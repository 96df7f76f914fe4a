"""int8 quantisation of an exported classifier with onnxruntime, and what it costs in accuracy.

Static quantisation (QDQ format, per-channel int8 weights, int8 activations whose ranges are
calibrated on the run's own training images) rather than dynamic: dynamic quantisation only
rewrites MatMul/Gemm and leaves a CNN's convolutions, where the time goes, in fp32. The accuracy
change is measured on the run's test split and stored in the file's metadata.
"""
from __future__ import annotations

import tempfile
import warnings
from pathlib import Path

import numpy as np
import torch

from ..errors import LensforgeError, UsageError

CALIBRATION_IMAGES = 256


class _Reader:
    """onnxruntime's CalibrationDataReader protocol over a tensor of images."""

    def __init__(self, name: str, images: torch.Tensor, batch: int | None):
        step = batch or 32
        self.feeds = [{name: images[i:i + step].numpy()} for i in range(0, len(images), step)]
        self.pos = 0

    def get_next(self):
        if self.pos >= len(self.feeds):
            return None
        self.pos += 1
        return self.feeds[self.pos - 1]

    def rewind(self):
        self.pos = 0


def calibration_images(meta: dict, n: int = CALIBRATION_IMAGES) -> torch.Tensor:
    """n training images of the run's data (a seeded random choice), prepared as in training."""
    from .samples import run_split

    try:
        split, _ = run_split(meta, "train")
    except (LensforgeError, OSError) as e:
        raise UsageError(f"--quantize int8 calibrates on the run's training images, which could not be read here: {e}") from None
    idx = torch.randperm(len(split), generator=torch.Generator().manual_seed(0))[:n].sort().values
    x, _ = split.take(idx)
    return x.float() / 255


def quantize_int8(model_bytes: bytes, input_name: str, images: torch.Tensor, batch: int | None) -> bytes:
    """The int8 (QDQ) version of a serialized fp32 ONNX model, calibrated on `images`."""
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static

    reader_cls = type("Reader", (_Reader, CalibrationDataReader), {})
    with tempfile.TemporaryDirectory(prefix="lensforge-quant-") as tmp:
        src, dst = Path(tmp) / "fp32.onnx", Path(tmp) / "int8.onnx"
        src.write_bytes(model_bytes)
        pre = Path(tmp) / "pre.onnx"
        try:  # shape inference + graph optimisation first, as onnxruntime recommends; optional
            from onnxruntime.quantization import quant_pre_process
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                quant_pre_process(str(src), str(pre), skip_symbolic_shape=True)
            src = pre
        except Exception:  # noqa: BLE001 -- the plain model quantises too, only less well fused
            pass
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            quantize_static(str(src), str(dst), reader_cls(input_name, images, batch), quant_format=QuantFormat.QDQ,
                            per_channel=True, weight_type=QuantType.QInt8, activation_type=QuantType.QInt8)
        return dst.read_bytes()


def accuracy(module, split, batch_size: int = 256) -> tuple[float, np.ndarray]:
    """(top-1 accuracy, predictions) of an OrtModule/torch module over a labelled split."""
    preds, labels = [], []
    for start in range(0, len(split), batch_size):
        x, y = split.take(torch.arange(start, min(start + batch_size, len(split))))
        with torch.no_grad():
            logits = module(x.float() / 255)
        preds.append(logits.argmax(1).cpu())
        labels.append(y)
    p, y = torch.cat(preds), torch.cat(labels)
    return float((p == y).float().mean()), p.numpy()
