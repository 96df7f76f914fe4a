"""Which graphs each task exports, with what inputs, outputs and metadata.

A checkpoint is rebuilt from (model_name, model_kwargs) with `tasks.common.restore_model`, as for
every .pt load; each task then names one to three *parts* (a graph each):

| task       | part(s)                 | inputs -> outputs                                               |
|------------|-------------------------|-----------------------------------------------------------------|
| classify   | classifier              | images (N,C,H,W) [0,1] -> logits (N,K); TTA (flip, shift) inside when on |
| autoencode | encoder, decoder        | images -> codes (N,D); codes -> images [0,1]                    |
| vae        | encoder, decoder        | images -> mu, logvar (N,D); codes -> images (mean, [0,1])       |
| gan        | generator               | z (N,D) [, labels (N,) int64] -> images [0,1]                   |
| colorize   | colorizer               | lightness (N,1,H,W) L/50-1 -> logits over ab bins (N,Q,H,W)     |
| stylize    | stylizer                | images (N,3,H,W) [0,1] -> images [0,1], any H, W                |
| segment    | segmenter               | images (N,C,H,W) [0,1] -> logits (N,K,H,W), H, W multiples of 2^d |
| detect     | detector                | images (N,3,S,S) letterboxed [0,1] -> raw head p3, p4, p5       |
| faceswap   | encoder, decoder-a, -b  | faces (N,3,S,S) aligned crops [0,1] -> codes (N,4w,S/8,S/8);    |
|            |                         | codes -> faces (N,3,S,S) [0,1], masks (N,1,S,S) [0,1]           |

Images are float32 in [0, 1], NCHW, prepared exactly as in training (the preprocessing spec is in
the metadata). Fully convolutional graphs (colorize, stylize) take any H and W; the others the
size they were trained at. The batch axis is 1 unless exported with `--dynamic-batch`.
Detect's box decoding (DFL expectation, anchors) and class-aware NMS run in the runtime wrapper,
the same code as for the .pt (detect/nms.py): NMS is data-dependent control flow that the
TorchScript exporter cannot trace faithfully. Segment's tiling, flip TTA and softmax stay outside the graph (tasks/segment_ops.predict_probs runs
them around the graph exactly as around the network). Faceswap keeps its shared encoder and the two
identity decoders as three graphs, as in the network (a2b = encoder then decoder-b, b2a = encoder then
decoder-a): the encoder, ~2/3 of the weights (17.4 of 25.2 MB at 64 px, width 32, latent 256), is stored
once (one graph per direction would hold it twice: 42.6 MB), and a deployment that swaps one way
needs only the encoder and one decoder. Detection, alignment (the 5-point template is metadata),
colour matching and blending stay outside, in tasks.faceswap's FrameConverter, the same code as for
the .pt. Colorize's decoding (annealed mean over the ab bins, with a temperature the user may change at
apply time) stays outside the graph: the bins, class weights and chosen decoding are metadata.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable

import torch
from torch import nn

from ..errors import CheckpointError, UsageError

#: Tasks `lensforge export` knows.
TASKS = ("classify", "autoencode", "vae", "gan", "colorize", "stylize", "segment", "detect", "faceswap")


@dataclass
class Part:
    """One graph to export: the module, an example input (traced), names and the spatial axes that
    stay free. `role` is the metadata's `part`."""

    role: str
    module: nn.Module
    example: tuple[torch.Tensor, ...]
    inputs: list[str]
    outputs: list[str]
    spatial: bool = False          # H, W of the first input (and of image outputs) are dynamic
    image_outputs: tuple[str, ...] = ()


@dataclass
class Plan:
    """All parts of one task's export plus the metadata shared by them."""

    task: str
    parts: list[Part]
    meta: dict[str, Any] = field(default_factory=dict)


# ----------------------------------------------------------------------------- wrappers

class Call(nn.Module):
    """A module exposing one method of another as its forward (encoder, decoder halves)."""

    def __init__(self, model: nn.Module, fn: Callable):
        super().__init__()
        self.model, self.fn = model, fn

    def forward(self, *args):
        return self.fn(self.model, *args)


# ----------------------------------------------------------------------------- per task

def _common(ckpt: dict) -> dict:
    """Metadata every part carries: what the network is and how it was trained."""
    cfg = ckpt.get("config", {}) or {}
    return {"task": ckpt["task"], "model_name": ckpt["model_name"], "model_kwargs": ckpt["model_kwargs"],
            "options": ckpt.get("options", {}), "config": {"seed": cfg.get("seed", 0)},
            "classes": ckpt.get("classes"), "preprocess": ckpt.get("preprocess")}


def _image_example(ckpt: dict) -> torch.Tensor:
    p = ckpt["preprocess"]
    return torch.rand(1, int(p["channels"]), int(p["size"][0]), int(p["size"][1]), generator=torch.Generator().manual_seed(0))


def plan_for(ckpt: dict, model: nn.Module) -> Plan:
    """The export plan of a loaded checkpoint whose network `model` is restored (eval mode)."""
    task = ckpt.get("task")
    builders = {"classify": _classify, "autoencode": _autoencode, "vae": _vae, "gan": _gan,
                "colorize": _colorize, "stylize": _stylize, "segment": _segment,
                "detect": _detect, "faceswap": _faceswap}
    if task not in builders:
        raise UsageError(f"export: task {task!r} has no ONNX export (supported: {', '.join(TASKS)})")
    try:
        return builders[task](ckpt, model)
    except KeyError as e:
        raise CheckpointError(f"export: the {task} checkpoint lacks {e}; was it written by this lensforge?") from None


def _classify(ckpt: dict, model: nn.Module) -> Plan:
    from ..models.classifiers import TestTimeAugment
    from ..tasks.classify import tta_mode

    tta = tta_mode(ckpt)
    net = TestTimeAugment(model, tta) if tta != "none" else model
    meta = {**_common(ckpt), "tta": f"{tta}, inside the graph" if tta != "none" else "none"}
    return Plan("classify", [Part("classifier", net.eval(), (_image_example(ckpt),), ["images"], ["logits"])], meta)


def _ae_encode(m, x):
    return m.encode(x)


def _ae_decode(m, z):
    return m.decode(z).float().clamp(0, 1)


def _autoencode(ckpt: dict, model: nn.Module) -> Plan:
    x = _image_example(ckpt)
    z = torch.zeros(1, model.latent_dim)
    parts = [Part("encoder", Call(model, _ae_encode).eval(), (x,), ["images"], ["codes"]),
             Part("decoder", Call(model, _ae_decode).eval(), (z,), ["codes"], ["images"], image_outputs=("images",))]
    return Plan("autoencode", parts, {**_common(ckpt), "latent_dim": model.latent_dim})


def _vae_encode(m, x):
    return m.encode(x)


def _vae_decode(m, z):
    return m.mean_image(m.decode(z))


def _vae(ckpt: dict, model: nn.Module) -> Plan:
    x = _image_example(ckpt)
    z = torch.zeros(1, model.latent_dim)
    parts = [Part("encoder", Call(model, _vae_encode).eval(), (x,), ["images"], ["mu", "logvar"]),
             Part("decoder", Call(model, _vae_decode).eval(), (z,), ["codes"], ["images"], image_outputs=("images",))]
    return Plan("vae", parts, {**_common(ckpt), "latent_dim": model.latent_dim})


def _gan(ckpt: dict, model: nn.Module) -> Plan:
    z = torch.zeros(1, model.latent_dim)
    if model.num_classes:
        part = Part("generator", model.eval(), (z, torch.zeros(1, dtype=torch.long)), ["z", "labels"], ["images"],
                    image_outputs=("images",))
    else:
        part = Part("generator", model.eval(), (z,), ["z"], ["images"], image_outputs=("images",))
    return Plan("gan", [part], {**_common(ckpt), "latent_dim": model.latent_dim, "num_classes": model.num_classes})


def _colorize(ckpt: dict, model: nn.Module) -> Plan:
    from ..tasks.colorize import DEFAULT_DECODING

    m = model.multiple
    side = max(m, int(min(ckpt["size"])) // m * m)
    x = torch.rand(1, 1, side, side, generator=torch.Generator().manual_seed(0)) * 2 - 1
    meta = {**_common(ckpt), "bins": ckpt["bins"].float().tolist(), "class_weights": ckpt["class_weights"].float().tolist(),
            "size": list(ckpt["size"]), "temperature": float(ckpt.get("temperature", DEFAULT_DECODING[0])),
            "correction": float(ckpt.get("correction", DEFAULT_DECODING[1])), "multiple": m,
            "input": "lightness L/50 - 1 of the image resized (antialiased) to the work shape"}
    return Plan("colorize", [Part("colorizer", model.eval(), (x,), ["lightness"], ["logits"], spatial=True,
                                  image_outputs=("logits",))], meta)


def _stylize(ckpt: dict, model: nn.Module) -> Plan:
    # Traced on a size that is not a multiple of 4 so the network's reflect padding is part of the graph
    # (at a multiple of 4 the pad is zero-sized and still correct: checked at 40x48 and 61x33).
    x = torch.rand(1, 3, 67, 61, generator=torch.Generator().manual_seed(0))
    style = {k: v for k, v in (ckpt.get("style") or {}).items() if k != "thumbnail"}
    meta = {**_common(ckpt), "style": style}
    return Plan("stylize", [Part("stylizer", model.eval(), (x,), ["images"], ["images_out"], spatial=True,
                                 image_outputs=("images_out",))], meta)


def _segment(ckpt: dict, model: nn.Module) -> Plan:
    m = int(ckpt["multiple"])
    c = int(ckpt["channels"])
    side = max(m, 64 // m * m)
    x = torch.rand(1, c, side, side + m, generator=torch.Generator().manual_seed(0))
    opts = ckpt.get("options", {})
    meta = {**_common(ckpt), "classes": ckpt["classes"], "channels": c, "multiple": m,
            "mask_mode": ckpt.get("mask_mode"), "tile": int(opts.get("tile", 256)),
            "overlap": int(opts.get("overlap", 64)), "tta": bool(opts.get("tta", True))}
    return Plan("segment", [Part("segmenter", model.eval(), (x,), ["images"], ["logits"], spatial=True,
                                 image_outputs=("logits",))], meta)


def _detect(ckpt: dict, model: nn.Module) -> Plan:
    s = int(ckpt["image_size"])
    x = torch.rand(1, 3, s, s, generator=torch.Generator().manual_seed(0))
    outs = [f"p{3 + i}" for i in range(len(model.strides))]
    meta = {**_common(ckpt), "image_size": s, "nc": int(model.nc), "reg_max": int(model.reg_max),
            "strides": [int(v) for v in model.strides], "preprocess": {"letterbox": s, "channels": 3},
            "decoding": "DFL box decoding + class-aware NMS outside the graph (lensforge.detect.nms)"}
    return Plan("detect", [Part("detector", model.eval(), (x,), ["images"], outs)], meta)


#: faceswap: which decoder draws each direction (a2b draws B's face over A's pose and expression).
FACESWAP_DIRECTIONS = {"a2b": "decoder-b", "b2a": "decoder-a"}


def _faceswap(ckpt: dict, model: nn.Module) -> Plan:
    from ..faces.align import template_points

    s, margin = int(ckpt["image_size"]), float(ckpt["face_margin"])
    x = torch.rand(1, 3, s, s, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        code = model.encoder(x)
    parts = [Part("encoder", model.encoder.eval(), (x,), ["faces"], ["codes"])]
    parts += [Part(f"decoder-{who}", model.decoders[who].eval(), (code,), ["codes"], ["faces", "masks"])
              for who in ("a", "b")]
    opts = ckpt.get("options", {})
    meta = {**_common(ckpt), "image_size": s, "face_margin": margin, "directions": FACESWAP_DIRECTIONS,
            "identities": {"a": opts.get("a"), "b": opts.get("b")},
            # What a deployment outside lensforge needs to cut the crops the encoder expects.
            "alignment": {"template": [[round(float(v), 4) for v in p] for p in template_points(s, margin)],
                          "landmarks": ["eye (image left)", "eye (image right)", "nose tip",
                                        "mouth corner (image left)", "mouth corner (image right)"],
                          "transform": "least-squares similarity (rotation, uniform scale, shift) of the 5 "
                                       "detected landmarks onto the template, pixels outside the photo reflected",
                          "crop": [s, s]},
            "outputs_meaning": "faces: the swapped face as an RGB crop in [0,1]; masks: the network's face mask "
                               "in [0,1] (convert --mask learned blends with it)"}
    return Plan("faceswap", parts, meta)
