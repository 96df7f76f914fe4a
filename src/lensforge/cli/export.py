"""Handler of `lensforge export` (options: lensforge.specs.export)."""
from __future__ import annotations


def export_(values: dict) -> int:
    from ..export import export
    from ..options import make
    from ..specs.export import ExportOptions

    o = make(ExportOptions, values)
    res = export(o.weights, o.format, o.out, dynamic_batch=o.dynamic_batch, opset=o.opset, quantize=o.quantize,
                 check=o.check)
    for role, path in res.files.items():
        line = f"{res.task} {role}: {path}"
        if role in res.parity:
            line += f"  max |onnxruntime - torch| = {res.parity[role]:.2e}"
        print(line)
    if res.parity_inputs:
        print(f"parity measured on {res.parity_inputs}")
    q = res.quantization
    if q:
        print(f"int8: test accuracy {q['fp32_accuracy']:.4f} -> {q['int8_accuracy']:.4f} "
              f"({100 * q['accuracy_change']:+.2f} points, {q['predictions_changed']} of {q['test_images']} "
              f"predictions changed), {q['fp32_bytes'] / 1e6:.2f} -> {q['int8_bytes'] / 1e6:.2f} MB")
    return 0
