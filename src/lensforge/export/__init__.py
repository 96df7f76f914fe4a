"""Export trained weights for deployment: ONNX graphs with lensforge metadata, run by onnxruntime.

    res = lensforge.export.export("runs/classify/digits-cnn", out="digits.onnx", dynamic_batch=True)
    print(res.files, res.parity)                # {part: max abs difference vs PyTorch on real inputs}
    clf = lensforge.classify.load("digits.onnx")  # onnxruntime-backed, same predict() and outputs

What each task exports, and the graph's inputs and outputs: `graphs.py`. Metadata: `metadata.py`.
Loaded models over onnxruntime: `runtime.py`. int8: `quantize.py`. Guide: docs/deploy.md.

The graphs are written by PyTorch's TorchScript-based exporter (`torch.onnx.export(dynamo=False)`):
the torch.export-based one needs the onnxscript package, which this project does not depend on.
"""
from __future__ import annotations

import io
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import torch

from ..errors import UsageError
from ..fileio import write_bytes
from .graphs import TASKS, Part, Plan, plan_for
from .metadata import to_props

__all__ = ["ExportResult", "TASKS", "export", "export_bytes", "load", "parity"]


@dataclass
class ExportResult:
    task: str
    files: dict[str, Path]                                   # part -> file written
    parity: dict[str, float] = field(default_factory=dict)   # part -> max |onnxruntime - torch|
    parity_inputs: str = ""                                  # what the parity was measured on
    quantization: dict | None = None                         # int8: accuracies before/after


def _resolve(weights: str | Path) -> Path:
    p = Path(weights)
    if p.is_dir():
        for c in (p / "weights" / "best.pt", p / "best.pt"):
            if c.is_file():
                return c
    return p


def output_paths(plan: Plan, weights: str | Path, out: str | Path | None) -> dict[str, Path]:
    """FILE for the first part, FILE's stem + '-<part>.onnx' beside it for a second one."""
    main = Path(out) if out else _resolve(weights).with_suffix(".onnx")
    if main.suffix.lower() != ".onnx":
        raise UsageError(f"--out {main}: an ONNX file name must end in .onnx")
    paths = {plan.parts[0].role: main}
    for part in plan.parts[1:]:
        paths[part.role] = main.with_name(f"{main.stem}-{part.role}.onnx")
    return paths


def _axes(part: Part, dynamic_batch: bool) -> dict:
    axes: dict[str, dict[int, str]] = {}
    for i, name in enumerate(part.inputs):
        a = {0: "batch"} if dynamic_batch else {}
        if part.spatial and i == 0:
            a.update({2: "height", 3: "width"})
        if a:
            axes[name] = a
    for name in part.outputs:
        a = {0: "batch"} if dynamic_batch else {}
        if part.spatial and name in part.image_outputs:
            a.update({2: "height", 3: "width"})
        if a:
            axes[name] = a
    return axes


def export_bytes(part: Part, opset: int = 17, dynamic_batch: bool = False, meta: dict | None = None) -> bytes:
    """One part as a serialized, checked ONNX model with `meta` in its metadata_props."""
    import onnx

    buf = io.BytesIO()
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")   # the TorchScript exporter's deprecation notice and tracer warnings
        torch.onnx.export(part.module, part.example, buf, dynamo=False, input_names=part.inputs,
                          output_names=part.outputs, dynamic_axes=_axes(part, dynamic_batch) or None,
                          opset_version=opset, do_constant_folding=True)
    model = onnx.load_from_string(buf.getvalue())
    for key, value in to_props(meta or {}).items():
        entry = model.metadata_props.add()
        entry.key, entry.value = key, value
    model.producer_name = "lensforge"
    onnx.checker.check_model(model)
    return model.SerializeToString()


def set_meta(model_bytes: bytes, updates: dict) -> bytes:
    """The same model with lensforge metadata entries added or replaced."""
    import onnx

    model = onnx.load_from_string(model_bytes)
    props = to_props(updates)
    props.pop("lensforge.format"), props.pop("lensforge.version")
    keep = [(p.key, p.value) for p in model.metadata_props if p.key not in props]
    del model.metadata_props[:]
    for key, value in keep + list(props.items()):
        entry = model.metadata_props.add()
        entry.key, entry.value = key, value
    return model.SerializeToString()


def _max_diff(a, b) -> float:
    a = tuple(a) if isinstance(a, (tuple, list)) else (a,)
    b = tuple(b) if isinstance(b, (tuple, list)) else (b,)
    return max(float((x.float() - y.float()).abs().max()) for x, y in zip(a, b))


def parity(part: Part, graph, inputs: tuple) -> float:
    """max |onnxruntime - torch| over every output element for these inputs (fp32)."""
    with torch.no_grad():
        ref = part.module(*inputs)
    return _max_diff(graph(*inputs), ref)


def export(weights: str | Path, format: str = "onnx", out: str | Path | None = None, *,
           dynamic_batch: bool = False, opset: int = 17, quantize: str | None = None, check: bool = True) -> ExportResult:
    """Export a run's weights (a lensforge .pt or run folder) as ONNX; see the module docstring.

    Nothing is written unless every part exported, passed onnx's checker and (with `check`) ran in
    onnxruntime; files are written atomically.
    """
    from ..engine.checkpoint import load_checkpoint
    from ..options import make
    from ..specs.export import ExportOptions
    from ..tasks.common import restore_model
    from .runtime import OrtModule, open_session
    from .samples import real_inputs

    o = make(ExportOptions, {"weights": str(weights), "format": format, "out": None if out is None else str(out),
                             "dynamic_batch": dynamic_batch, "opset": opset, "quantize": quantize, "check": check})
    ckpt = load_checkpoint(o.weights)
    if ckpt.get("task") not in TASKS:
        raise UsageError(f"{o.weights}: {ckpt.get('task')} checkpoints have no ONNX export yet "
                         f"(supported: {', '.join(TASKS)})")
    if o.quantize and ckpt["task"] != "classify":
        raise UsageError(f"--quantize {o.quantize}: int8 quantisation is offered for classify, not {ckpt['task']}")
    torch.manual_seed(0)
    model = restore_model(ckpt).float().eval()
    plan = plan_for(ckpt, model)
    paths = output_paths(plan, o.weights, o.out)
    parts_meta = {role: p.name for role, p in paths.items()}
    blobs: dict[str, bytes] = {}
    for part in plan.parts:
        meta = {**plan.meta, "part": part.role, "parts": parts_meta, "inputs": part.inputs, "outputs": part.outputs,
                "dynamic_batch": o.dynamic_batch, "dynamic_size": part.spatial, "opset": o.opset,
                "source": str(_resolve(o.weights)), "epoch": ckpt.get("epoch"),
                "value_range": "images float32 NCHW in [0, 1]"}
        blobs[part.role] = export_bytes(part, o.opset, o.dynamic_batch, meta)
    result = ExportResult(plan.task, dict(paths))
    if o.check or o.quantize:
        inputs, result.parity_inputs = real_inputs(plan)
        for part in plan.parts:
            sess, meta = open_session(blobs[part.role], "cpu", name=str(paths[part.role]))
            result.parity[part.role] = parity(part, OrtModule(sess, meta), inputs[part.role])
        for role in blobs:
            blobs[role] = set_meta(blobs[role], {"parity_max_abs_diff": result.parity,
                                                 "parity_inputs": result.parity_inputs})
    if o.quantize == "int8":
        role = plan.parts[0].role
        result.quantization = _quantize(plan, blobs, role)
    for role, data in blobs.items():
        write_bytes(paths[role], data)
    return result


def _quantize(plan: Plan, blobs: dict[str, bytes], role: str) -> dict:
    """Replace the classifier's blob by its int8 version; returns the measured accuracy change."""
    from .quantize import accuracy, calibration_images, quantize_int8
    from .runtime import OrtModule, open_session
    from .samples import run_split

    part = plan.parts[0]
    fp32 = blobs[role]
    sess, meta = open_session(fp32, "cpu")
    calib = calibration_images(plan.meta)
    int8 = quantize_int8(fp32, part.inputs[0], calib, None if meta["dynamic_batch"] else 1)
    test, _ = run_split(plan.meta, "test")
    acc32, p32 = accuracy(OrtModule(sess, meta), test)
    sess8, meta8 = open_session(int8, "cpu")
    acc8, p8 = accuracy(OrtModule(sess8, meta8), test)
    q = {"scheme": "int8 static QDQ, per-channel weights", "calibration_images": len(calib),
         "test_images": len(test), "fp32_accuracy": acc32, "int8_accuracy": acc8,
         "accuracy_change": acc8 - acc32, "predictions_changed": int((p32 != p8).sum()),
         "fp32_bytes": len(fp32), "int8_bytes": len(int8)}
    blobs[role] = set_meta(int8, {"quantization": q})
    return q


def load(path: str | Path, task: str | None = None, device: str = "auto"):
    """The task's loaded model over an exported .onnx (onnxruntime); see runtime.py."""
    from .runtime import load as _load

    return _load(path, task=task, device=device)
