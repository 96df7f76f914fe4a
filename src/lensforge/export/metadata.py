"""What an exported lensforge ONNX file says about itself.

Everything a loaded model needs besides the graph (task, which part of the model the graph is,
the preprocessing spec, class names, the network's name and arguments, task-specific decoding
such as colorize's ab bins) is stored as ONNX `metadata_props`: plain string keys holding JSON
values. A deployment reads them with any ONNX runtime (`session.get_modelmeta().custom_metadata_map`
in onnxruntime), and `lensforge TASK predict --weights model.onnx` rebuilds exactly the
preprocessing the .pt path uses from them. No pickle anywhere: metadata is JSON text.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Mapping

FORMAT = "lensforge-onnx"
VERSION = 1
PREFIX = "lensforge."

#: Keys every lensforge ONNX file carries (besides the format marker and version).
REQUIRED = ("task", "part", "inputs", "outputs")


def to_props(meta: Mapping[str, Any]) -> dict[str, str]:
    """Metadata dict -> ONNX metadata_props (`lensforge.<key>` -> JSON text)."""
    props = {PREFIX + "format": FORMAT, PREFIX + "version": str(VERSION)}
    for key, value in meta.items():
        props[PREFIX + key] = json.dumps(value, separators=(",", ":"), sort_keys=False)
    return props


def from_props(path: str | Path, props: Mapping[str, str]) -> dict[str, Any]:
    """ONNX metadata_props -> metadata dict; a file without our marker is one clear error."""
    from ..errors import CheckpointError

    if props.get(PREFIX + "format") != FORMAT:
        raise CheckpointError(f"{path}: not a lensforge ONNX export (no '{FORMAT}' metadata); "
                              "export it with `lensforge export --weights RUN --format onnx`")
    try:
        version = int(props.get(PREFIX + "version", "0"))
    except ValueError:
        raise CheckpointError(f"{path}: unreadable lensforge ONNX metadata (version)") from None
    if version > VERSION:
        raise CheckpointError(f"{path}: written by a newer lensforge (ONNX export v{version}); upgrade lensforge")
    meta: dict[str, Any] = {}
    for key, text in props.items():
        if not key.startswith(PREFIX) or key in (PREFIX + "format", PREFIX + "version"):
            continue
        try:
            meta[key[len(PREFIX):]] = json.loads(text)
        except json.JSONDecodeError:
            raise CheckpointError(f"{path}: unreadable lensforge ONNX metadata ({key})") from None
    missing = [k for k in REQUIRED if k not in meta]
    if missing:
        raise CheckpointError(f"{path}: lensforge ONNX metadata lacks {', '.join(missing)}")
    return meta
