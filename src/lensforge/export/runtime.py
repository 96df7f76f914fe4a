"""onnxruntime-backed loaded models with the same API and outputs as the .pt ones.

`load(path)` opens an exported file (and its sibling part, for encoder/decoder exports), reads the
lensforge metadata and returns the task's own loaded-model class with the network replaced by an
`OrtModule`: the task's preprocessing, batching, decoding and file writing run unchanged, so a
.onnx and a .pt of the same weights cannot drift apart except in the graph's arithmetic (measured
max abs differences: docs/deploy.md).
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..errors import CheckpointError, UsageError
from .metadata import from_props


def _ort():
    try:
        import onnxruntime
    except ImportError:  # pragma: no cover - a dependency of the project
        raise UsageError("running .onnx models needs the onnxruntime package (pip install onnxruntime)") from None
    return onnxruntime


def providers(device: str = "auto") -> list[str]:
    """CUDA where asked for (or auto) and present in this onnxruntime build, else CPU."""
    available = _ort().get_available_providers()
    if device != "cpu" and "CUDAExecutionProvider" in available and torch.cuda.is_available():
        return ["CUDAExecutionProvider", "CPUExecutionProvider"]
    return ["CPUExecutionProvider"]


def open_session(source: str | Path | bytes, device: str = "auto", name: str | None = None):
    """(InferenceSession, lensforge metadata) of a file or serialized model; every problem (missing,
    corrupt, not ours) is one line."""
    ort = _ort()
    label = name or str(source)
    if not isinstance(source, (bytes, bytearray)):
        path = Path(source)
        if not path.is_file():
            raise UsageError(f"{path}: no such weights file")
        if path.stat().st_size == 0:
            raise CheckpointError(f"{path}: not a readable ONNX model (empty file)")
        source = str(path)
    opts = ort.SessionOptions()
    opts.log_severity_level = 3   # onnxruntime's own warnings are not the user's concern
    try:
        sess = ort.InferenceSession(source, sess_options=opts, providers=providers(device))
    except Exception as e:  # onnxruntime raises InvalidProtobuf, Fail, InvalidGraph, ...
        detail = (str(e).splitlines() or [""])[0]
        detail = detail.split("] ", 1)[-1][:160]
        raise CheckpointError(f"{label}: not a readable ONNX model ({type(e).__name__}: {detail})") from None
    return sess, from_props(label, sess.get_modelmeta().custom_metadata_map)


class OrtModule:
    """An onnxruntime session called like the torch module it was exported from: torch tensors in,
    torch tensors (CPU, float32) out, a tuple when the graph has several outputs. A graph exported
    with a fixed batch is fed in chunks of that size (the last one padded and trimmed)."""

    training = False

    def __init__(self, session, meta: dict, path: str = ""):
        self.session, self.meta, self.path = session, meta, path
        self.input_names = [i.name for i in session.get_inputs()]
        self.output_names = [o.name for o in session.get_outputs()]
        first = session.get_inputs()[0].shape[0]
        self.batch = first if isinstance(first, int) and first > 0 else None

    def eval(self):
        return self

    def train(self, mode: bool = True):
        return self

    def to(self, *args, **kwargs):
        return self

    def _run(self, arrays: list[np.ndarray]) -> list[np.ndarray]:
        return self.session.run(self.output_names, dict(zip(self.input_names, arrays)))

    def __call__(self, *tensors):
        arrays = []
        for t in tensors:
            if t is None:
                continue
            a = t.detach().cpu().numpy() if isinstance(t, torch.Tensor) else np.asarray(t)
            arrays.append(np.ascontiguousarray(a.astype(np.int64 if a.dtype.kind in "iu" else np.float32)))
        if len(arrays) != len(self.input_names):
            raise UsageError(f"{self.path}: the graph takes {', '.join(self.input_names)}; got {len(arrays)} input(s)")
        n = len(arrays[0])
        if self.batch is None or n == self.batch:
            outs = self._run(arrays)
        else:
            chunks = []
            for start in range(0, n, self.batch):
                part = [a[start:start + self.batch] for a in arrays]
                short = self.batch - len(part[0])
                if short:
                    part = [np.concatenate([p, np.zeros((short, *p.shape[1:]), p.dtype)]) for p in part]
                got = self._run(part)
                chunks.append([g[:len(g) - short] for g in got])
            outs = [np.concatenate([c[i] for c in chunks]) for i in range(len(self.output_names))]
        tensors_out = [torch.from_numpy(np.ascontiguousarray(o)).float() for o in outs]
        return tensors_out[0] if len(tensors_out) == 1 else tuple(tensors_out)


# ----------------------------------------------------------------------------- files and parts

def _parts(path: Path, meta: dict, device: str) -> dict[str, OrtModule]:
    """Every part of an export, found from any one of its files (encoder/decoder siblings are named
    in each file's metadata)."""
    found: dict[str, OrtModule] = {}
    for role, fname in (meta.get("parts") or {}).items():
        if role == meta["part"]:
            continue
        p = path.with_name(fname)
        if not p.is_file():
            raise UsageError(f"{path}: its {role} part {p.name} should lie next to it; export again or copy both files")
        s, m = open_session(p, device)
        if m.get("task") != meta.get("task") or m.get("part") != role:
            raise CheckpointError(f"{p}: is not the {role} of {path.name} (task {m.get('task')}, part {m.get('part')})")
        found[role] = OrtModule(s, m, str(p))
    return found


def load(weights: str | Path, task: str | None = None, device: str = "auto") -> Any:
    """The task's loaded model over an exported .onnx file (see the module docstring)."""
    path = Path(weights)
    sess, meta = open_session(path, device)
    if task is not None and meta.get("task") != task:
        raise CheckpointError(f"{path}: is a '{meta.get('task')}' ONNX export, not '{task}'")
    main = OrtModule(sess, meta, str(path))
    parts = {meta["part"]: main, **_parts(path, meta, device)}
    loader = {"classify": _classifier, "autoencode": _autoencoder, "vae": _vae, "gan": _gan,
              "colorize": _colorizer, "stylize": _stylizer, "segment": _segmenter,
              "detect": _detector, "faceswap": _faceswapper}.get(meta["task"])
    if loader is None:
        raise CheckpointError(f"{path}: task {meta['task']!r} has no onnxruntime loader in this lensforge")
    return loader(meta, parts)


def _cpu_runtime():
    from ..engine.device import select_runtime

    return select_runtime("cpu", "fp32")


def _classifier(meta: dict, parts: dict):
    from ..data.preprocess import PreprocessSpec
    from ..tasks.classify import Classifier

    class OnnxClassifier(Classifier):
        """tasks.classify.Classifier over onnxruntime (test-time augmentation, when on, is inside the graph)."""

        def __init__(self):
            self.classes = list(meta["classes"])
            self.spec = PreprocessSpec.from_dict(meta["preprocess"])
            self.model_name = meta["model_name"]
            self.meta = meta
            self.rt = _cpu_runtime()
            self.model = parts["classifier"]
            self.tta = "none"

    return OnnxClassifier()


class _AEModel:
    """encode/decode/reconstruct of an autoencoder over its two graphs."""

    def __init__(self, parts: dict, latent_dim: int):
        self.encoder, self.decoder, self.latent_dim = parts["encoder"], parts["decoder"], latent_dim

    def eval(self):
        return self

    def encode(self, x):
        return self.encoder(x)

    def decode(self, z):
        return self.decoder(z)

    def reconstruct(self, x):
        return self.decoder(self.encoder(x))


def _need(parts: dict, *roles: str) -> None:
    missing = [r for r in roles if r not in parts]
    if missing:
        raise CheckpointError(f"ONNX export lacks its {', '.join(missing)} part")


def _autoencoder(meta: dict, parts: dict):
    from ..data.preprocess import PreprocessSpec
    from ..tasks.autoencode import Autoencoder

    _need(parts, "encoder", "decoder")

    class OnnxAutoencoder(Autoencoder):
        def __init__(self):
            self.meta, self.rt = meta, _cpu_runtime()
            self.model = _AEModel(parts, int(meta["latent_dim"]))
            self.spec = PreprocessSpec.from_dict(meta["preprocess"])
            self.noise_sigma = float(meta.get("options", {}).get("denoise", 0.0))

    return OnnxAutoencoder()


class _VAEModel(_AEModel):
    """The VAE API VAEGenerator uses: the decoder graph already returns the mean image."""

    def mean_image(self, out):
        return out


def _vae(meta: dict, parts: dict):
    from ..data.preprocess import PreprocessSpec
    from ..tasks.vae import VAEGenerator

    _need(parts, "encoder", "decoder")
    return VAEGenerator(_VAEModel(parts, int(meta["latent_dim"])), _cpu_runtime(),
                        PreprocessSpec.from_dict(meta["preprocess"]), meta.get("classes"))


class _GenModel:
    def __init__(self, graph: OrtModule, latent_dim: int, num_classes: int):
        self.graph, self.latent_dim, self.num_classes = graph, latent_dim, num_classes

    def eval(self):
        return self

    def __call__(self, z, labels=None):
        return self.graph(z, labels) if self.num_classes else self.graph(z)


def _gan(meta: dict, parts: dict):
    from ..tasks.gan import GANGenerator

    class OnnxGANGenerator(GANGenerator):
        def __init__(self):
            self.meta, self.rt = meta, _cpu_runtime()
            self.classes = meta.get("classes")
            self.model = _GenModel(parts["generator"], int(meta["latent_dim"]), int(meta.get("num_classes") or 0))
            self.conditional = bool(self.model.num_classes)

    return OnnxGANGenerator()


class _Graph:
    """A single-input graph with the attributes the task's loaded-model class reads."""

    def __init__(self, graph: OrtModule, **attrs):
        self.graph = graph
        self.__dict__.update(attrs)

    def eval(self):
        return self

    def to(self, *args, **kwargs):
        return self

    def __call__(self, x):
        return self.graph(x)


def _colorizer(meta: dict, parts: dict):
    from ..tasks.colorize import Colorizer

    class OnnxColorizer(Colorizer):
        def __init__(self):
            self.rt = _cpu_runtime()
            self.multiple = int(meta["multiple"])
            self.model = _Graph(parts["colorizer"], multiple=self.multiple)
            self.bins = torch.tensor(meta["bins"], dtype=torch.float32)
            self.image_size = int(min(meta["size"]))
            self.temperature, self.correction = float(meta["temperature"]), float(meta["correction"])
            self.class_weights = torch.tensor(meta["class_weights"], dtype=torch.float32)
            self.base = int(meta["model_kwargs"].get("base", 32))

    return OnnxColorizer()


def _stylizer(meta: dict, parts: dict):
    from ..tasks.stylize import StyleNet

    class OnnxStyleNet(StyleNet):
        def __init__(self):
            self.rt = _cpu_runtime()
            self.model = _Graph(parts["stylizer"])
            self.fmt = torch.contiguous_format
            self.base = int(meta["model_kwargs"].get("base", 16))
            self.style = meta.get("style", {})

    return OnnxStyleNet()


def _segmenter(meta: dict, parts: dict):
    from ..data.masks import ClassTable
    from ..tasks.segment import Segmenter

    return Segmenter(_Graph(parts["segmenter"]), ClassTable.from_dict(meta["classes"]), int(meta["channels"]),
                     int(meta["multiple"]), int(meta["tile"]), int(meta["overlap"]), bool(meta["tta"]), _cpu_runtime(),
                     meta)


def _detector(meta: dict, parts: dict):
    from ..tasks.detect import Detector

    graph = _Graph(parts["detector"], nc=int(meta["nc"]), reg_max=int(meta["reg_max"]), strides=list(meta["strides"]))
    return Detector(graph, list(meta["classes"]), int(meta["image_size"]), torch.device("cpu"))


class _SwapModel:
    """FaceSwapNet's call and `swap` over the exported encoder and the two decoder graphs."""

    def __init__(self, parts: dict, directions: dict):
        self.encoder = parts["encoder"]
        self.decoders = {"a": parts["decoder-a"], "b": parts["decoder-b"]}
        # direction -> the decoder graph that draws it, as the export wrote it ({"a2b": "decoder-b", ...})
        self.by_direction = {d: parts[role] for d, role in directions.items()}

    def __call__(self, x, identity: str = "a"):
        return self.decoders[identity](self.encoder(x))

    def swap(self, x, direction: str):
        if direction not in self.by_direction:
            raise ValueError(f"direction must be a2b or b2a, not {direction!r}")
        return self.by_direction[direction](self.encoder(x))


def _faceswapper(meta: dict, parts: dict):
    from ..tasks.faceswap import FaceSwapper

    _need(parts, "encoder", "decoder-a", "decoder-b")
    # FrameConverter (detection, alignment, colour matching, blending) and convert() run unchanged
    # around the three graphs.
    return FaceSwapper(_SwapModel(parts, meta["directions"]), meta, _cpu_runtime())
