"""One small adapter class per task: what the server needs to show a trained model on the page
and behind `POST /api/models/{name}/predict`.

An adapter says which checkpoint `task` it serves, what it `accepts` ("image": an upload;
"none": nothing, e.g. sampling), its options (a dataclass built from the task's own apply-verb
options with `pick`, so ranges and help are declared once), and `run(upload, options) -> Output`
(JSON-able values plus named images). Adding a task is one `@register` class here; the app,
the page, the pool and the error handling need no change.

Every adapter calls the task's public loaded-model API (`lensforge.tasks.<task>`) and imports it
lazily, so a task module that is still missing or broken only stops that task from being served.
"""
from __future__ import annotations

import dataclasses
import json
import re
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from ..errors import DataError, UsageError
from ..options import make

ADAPTERS: dict[str, type["Adapter"]] = {}

#: Most samples one request may draw: a 64-image grid of 64 px images is ~0.3 MB of PNG.
MAX_SAMPLES = 64


def register(cls: type["Adapter"]) -> type["Adapter"]:
    ADAPTERS[cls.task] = cls
    return cls


@dataclass
class Upload:
    """The uploaded file's bytes and the name errors should use."""

    data: bytes
    name: str = "upload"

    def image(self, mode: str = "RGB") -> np.ndarray:
        """Decoded with lensforge's one reader: EXIF, 16-bit, alpha, bomb guard, one-line errors."""
        from ..data.imageio import read_image

        return read_image(self.data, mode, name=self.name)


@dataclass
class Output:
    """A prediction: JSON-able `result` and named uint8 images (sent as PNG), shown in this order;
    `text`: PNG text chunks to write into some of those images (faceswap's provenance tag)."""

    result: dict[str, Any]
    images: dict[str, np.ndarray] = field(default_factory=dict)
    text: dict[str, dict[str, str]] = field(default_factory=dict)


def pick(name: str, source: type, *names: str, **changes: dict) -> type:
    """A dataclass of some of `source`'s option fields (help, range, choices kept), with `changes`
    per field (e.g. `top_k={"high": 10, "default": 5}`): serve options are declared by the verbs."""
    hints = typing.get_type_hints(source)
    by_name = {f.name: f for f in dataclasses.fields(source)}
    spec = []
    for n in names:
        f = by_name[n]
        meta = dict(f.metadata)
        default = f.default
        for k, v in changes.get(n, {}).items():
            if k == "default":
                default = v
            else:
                meta[k] = v
        spec.append((n, hints[n], field(default=default, metadata=meta)))
    return dataclasses.make_dataclass(name, spec, kw_only=True)


def options_schema(cls: type) -> list[dict]:
    """The options a model takes, for /api/models and the page's form."""
    from ..options import _base_type

    out = []
    for f in dataclasses.fields(cls):
        t, optional, _ = _base_type(cls, f)
        m = f.metadata
        out.append({"name": f.name, "type": {int: "integer", float: "number", bool: "boolean"}.get(t, "string"),
                    "default": f.default, "nullable": optional or f.default is None, "minimum": m.get("low"),
                    "maximum": m.get("high"), "choices": list(m["choices"]) if m.get("choices") else None,
                    "help": m.get("help", "")})
    return out


class Adapter:
    """Base class: subclasses set `task` (and `accepts`, `draw`), build `self.Options` and the
    model in `__init__`, and implement `run`."""

    task: ClassVar[str]
    accepts: ClassVar[str] = "image"
    #: the page offers a drawing canvas as well as the upload (single-channel / digit models)
    draw: bool = False
    Options: type

    def __init__(self, name: str, path: Path, ckpt: dict, device: str):
        self.name, self.path, self.ckpt, self.device = name, Path(path), ckpt, device

    # what /api/models shows
    def classes(self) -> list[str] | None:
        c = self.ckpt.get("classes")
        if isinstance(c, dict):   # segmentation's ClassTable
            c = c.get("names")
        return [str(x) for x in c] if c else None

    def input_size(self) -> list[int] | None:
        """[height, width] the network works at, None where any size goes straight in."""
        pre = self.ckpt.get("preprocess")
        return [int(v) for v in pre["size"]] if isinstance(pre, dict) and "size" in pre else None

    def describe(self) -> dict:
        return {"name": self.name, "task": self.task, "model": self.ckpt.get("model_name"),
                "classes": self.classes(), "input_size": self.input_size(), "accepts": self.accepts,
                "draw": self.draw, "options": options_schema(self.Options)}

    def options(self, values: dict) -> Any:
        """Checked options: unknown names, types, choices and ranges give one UsageError line,
        naming the option as the API spells it (top_k, not the CLI's --top-k)."""
        from ..options import flag_of

        try:
            return make(self.Options, values)
        except UsageError as e:
            msg = str(e)
            for f in dataclasses.fields(self.Options):
                msg = msg.replace(flag_of(f), f.name)
            raise UsageError(f"options: {msg}") from None

    def run(self, upload: Upload | None, opts: Any) -> Output:
        raise NotImplementedError


def _reading_mode(spec) -> str:
    # The rule load_and_prepare applies, so the server decodes exactly as `predict` does.
    return "L" if spec.channels == 1 or spec.style == "digit" else "RGB"


def _grid(images: np.ndarray, ncols: int = 8, pad: int = 2) -> np.ndarray:
    """(N,H,W[,C]) uint8 -> one tiled image with grey padding."""
    n, h, w = images.shape[:3]
    c = images.shape[3] if images.ndim == 4 else 1
    imgs = images.reshape(n, h, w, c)
    ncols = max(1, min(ncols, n))
    nrows = -(-n // ncols)
    canvas = np.full((nrows * (h + pad) + pad, ncols * (w + pad) + pad, c), 128, np.uint8)
    for i in range(n):
        r, q = divmod(i, ncols)
        canvas[pad + r * (h + pad):pad + r * (h + pad) + h, pad + q * (w + pad):pad + q * (w + pad) + w] = imgs[i]
    return canvas[..., 0] if c == 1 else canvas


def _uint8(x) -> np.ndarray:
    from ..tasks.apply import to_uint8

    return to_uint8(x)


def _upscale(img: np.ndarray, at_least: int = 112) -> np.ndarray:
    """Nearest-neighbour enlargement of tiny images (28 px digits) so the page shows pixels, not blur."""
    k = max(1, -(-at_least // max(img.shape[:2])))
    return np.repeat(np.repeat(img, k, 0), k, 1) if k > 1 else img


# ----------------------------------------------------------------------------- classify

@register
class ClassifyAdapter(Adapter):
    task = "classify"

    def __init__(self, name, path, ckpt, device):
        super().__init__(name, path, ckpt, device)
        from ..specs.classify import PredictOptions
        from ..tasks.classify import Classifier

        self.model = Classifier(ckpt, device=device)
        k = len(self.model.classes)
        self.Options = pick("ClassifyServeOptions", PredictOptions, "top_k", top_k={"high": k, "default": min(5, k)})
        self.mode = _reading_mode(self.model.spec)
        self.draw = self.mode == "L"

    def run(self, upload, opts):
        from ..data.preprocess import prepare

        image = upload.image(self.mode)
        p = self.model.predict([image], top_k=opts.top_k)[0]
        if p.error:
            raise DataError(f"{upload.name}: {p.error}")
        seen = prepare(image, self.model.spec)   # what the network was given, e.g. the centred 28x28 digit
        return Output({"label": p.label, "confidence": p.confidence,
                       "top": [{"label": l, "confidence": c} for l, c in p.top]},
                      {"model input": _upscale(_uint8(seen[0] if seen.shape[0] == 1 else seen.transpose(1, 2, 0)))})


# ----------------------------------------------------------------------------- generative

@register
class AutoencodeAdapter(Adapter):
    task = "autoencode"

    def __init__(self, name, path, ckpt, device):
        super().__init__(name, path, ckpt, device)
        from ..specs.autoencode import DenoiseOptions
        from ..tasks import autoencode

        self.model = autoencode.load(path, device=device)
        self.Options = pick("AutoencodeServeOptions", DenoiseOptions, "add_noise", add_noise={
            "help": "first corrupt the input with Gaussian noise of this std (0-2 on [0,1] pixels), to see what "
                    "the model removes"})
        self.mode = _reading_mode(self.model.spec)
        self.draw = self.mode == "L"

    def run(self, upload, opts):
        import torch

        from ..data.preprocess import prepare
        from ..tasks.autoencode import add_noise
        from ..tasks.generative_common import NO_INK, no_ink

        arr = prepare(upload.image(self.mode), self.model.spec)
        if no_ink(arr, self.model.spec):
            raise DataError(f"{upload.name}: {NO_INK}")
        x = torch.tensor(arr[None]).float() / 255   # a copy: prepare may hand back a read-only view
        noisy = add_noise(x, opts.add_noise, torch.Generator().manual_seed(0)) if opts.add_noise > 0 else x
        y = self.model.reconstruct(noisy)
        mse = float((y - x).pow(2).mean())
        images = {"input": _upscale(_uint8(x[0]))}
        if opts.add_noise > 0:
            images["noisy"] = _upscale(_uint8(noisy[0]))
        images["output"] = _upscale(_uint8(y[0]))
        return Output({"mse": mse, "denoising_model": self.model.noise_sigma > 0}, images)


class _Sampler(Adapter):
    accepts = "none"


@register
class VAEAdapter(_Sampler):
    task = "vae"

    def __init__(self, name, path, ckpt, device):
        super().__init__(name, path, ckpt, device)
        from ..specs.vae import SampleOptions
        from ..tasks import vae

        self.model = vae.load(path, device=device)
        self.Options = pick("VAEServeOptions", SampleOptions, "n", "seed", n={"high": MAX_SAMPLES, "default": 16})

    def run(self, upload, opts):
        x = self.model.sample(opts.n, seed=opts.seed)
        return Output({"n": opts.n, "seed": opts.seed}, {"samples": _upscale(_grid(_batch(x)), 256)})


@register
class GANAdapter(_Sampler):
    task = "gan"

    def __init__(self, name, path, ckpt, device):
        super().__init__(name, path, ckpt, device)
        from ..specs.gan import SampleOptions
        from ..tasks import gan

        self.model = gan.load(path, device=device)
        names = ("n", "label", "seed") if self.model.conditional else ("n", "seed")
        self.Options = pick("GANServeOptions", SampleOptions, *names, n={"high": MAX_SAMPLES, "default": 16},
                            label={"choices": tuple(self.model.classes or ())})

    def run(self, upload, opts):
        label = getattr(opts, "label", None)
        labels = [self.model.class_index(label)] if label is not None else None
        x = self.model.sample(opts.n, labels=labels, seed=opts.seed)
        return Output({"n": opts.n, "seed": opts.seed, "label": label}, {"samples": _upscale(_grid(_batch(x)), 256)})


def _batch(x) -> np.ndarray:
    """(N,C,H,W) floats in [0,1] -> (N,H,W[,3]) uint8."""
    return np.stack([_uint8(im) for im in x])


# ----------------------------------------------------------------------------- image to image

@register
class ColorizeAdapter(Adapter):
    task = "colorize"

    def __init__(self, name, path, ckpt, device):
        super().__init__(name, path, ckpt, device)
        from ..specs.colorize import ApplyOptions
        from ..tasks.colorize import Colorizer

        self.model = Colorizer(ckpt, device=device)
        self.Options = pick("ColorizeServeOptions", ApplyOptions, "image_size", "temperature")

    def input_size(self):
        return [self.model.image_size, self.model.image_size]

    def run(self, upload, opts):
        from PIL import Image

        image = upload.image("RGB")
        out = self.model.colorize(image, image_size=opts.image_size, temperature=opts.temperature)
        grey = np.asarray(Image.fromarray(image).convert("L"))   # the lightness the model starts from
        return Output({"width": int(out.shape[1]), "height": int(out.shape[0])},
                      {"before": image, "grey input": grey, "after": out})


@register
class StylizeAdapter(Adapter):
    task = "stylize"

    def __init__(self, name, path, ckpt, device):
        super().__init__(name, path, ckpt, device)
        from ..specs.stylize import ApplyOptions
        from ..tasks.stylize import StyleNet

        self.model = StyleNet(ckpt, device=device)
        # 512 px by default (the CLI keeps the full size): a phone photo at full size takes tens of
        # seconds on a CPU and would run into --timeout; ask for more with long_side.
        self.Options = pick("StylizeServeOptions", ApplyOptions, "long_side", long_side={"default": 512})

    def input_size(self):
        return None

    def run(self, upload, opts):
        from ..tasks.stylize import load_rgb

        x = load_rgb(upload.data, opts.long_side, name=upload.name)
        y = self.model.stylize(x)
        return Output({"width": int(y.shape[-1]), "height": int(y.shape[-2])},
                      {"before": _uint8(x[0]), "after": _uint8(y[0])})


# ----------------------------------------------------------------------------- segmentation, detection

@register
class SegmentAdapter(Adapter):
    task = "segment"

    def __init__(self, name, path, ckpt, device):
        super().__init__(name, path, ckpt, device)
        from ..specs.segment import PredictOptions
        from ..tasks import segment

        self.model = segment.load(path, device=device)
        self.Options = pick("SegmentServeOptions", PredictOptions, "tile", "overlap", "tta")

    def input_size(self):
        return None

    def run(self, upload, opts):
        from ..data.masks import encode_colour
        from ..tasks.segment import overlay

        m = self.model
        img = upload.image("L" if m.channels == 1 else "RGB")
        kw = {k: getattr(opts, k) for k in ("tile", "overlap", "tta") if getattr(opts, k) is not None}
        mask = m.predict(img, **kw)
        counts = np.bincount(mask.ravel(), minlength=len(m.classes))
        share = {n: float(c / mask.size) for n, c in zip(m.classes.names, counts)}
        rgb = img if img.ndim == 3 else np.repeat(img[..., None], 3, 2)
        return Output({"width": int(mask.shape[1]), "height": int(mask.shape[0]), "share": share},
                      {"overlay": overlay(rgb, mask, m.classes.colours), "mask": encode_colour(mask, m.classes.colours)})


@register
class DetectAdapter(Adapter):
    task = "detect"

    def __init__(self, name, path, ckpt, device):
        super().__init__(name, path, ckpt, device)
        from ..specs.detect import PredictOptions
        from ..tasks import detect

        self.model = detect.load(path, device=device)
        self.Options = pick("DetectServeOptions", PredictOptions, "conf", "iou")

    def input_size(self):
        return [self.model.size, self.model.size]

    def run(self, upload, opts):
        from ..tasks.detect import draw_boxes

        img = upload.image("RGB")
        d = self.model.predict([img], conf=opts.conf, iou=opts.iou)[0]
        if d.error:
            raise DataError(f"{upload.name}: {d.error}")
        rows = np.column_stack([d.boxes, d.scores, d.classes]) if len(d.scores) else np.zeros((0, 6))
        found = [{"label": l, "confidence": float(s), "box": [round(float(v), 1) for v in b]}
                 for l, s, b in zip(d.labels, d.scores, d.boxes)]
        return Output({"width": int(img.shape[1]), "height": int(img.shape[0]), "detections": found},
                      {"boxes": draw_boxes(img, rows, self.model.classes)})


# ----------------------------------------------------------------------------- face swap

class _SeenFaces:
    """The converter's face detector, remembering what it found on the last photo (for the answer)."""

    def __init__(self, detector):
        self.detector, self.faces = detector, []

    def detect(self, image):
        self.faces = self.detector.detect(image)
        return self.faces


@register
class FaceSwapAdapter(Adapter):
    """An uploaded photo converted as `faceswap convert` converts it (largest face unless all_faces),
    with convert's provenance record in the JSON and its PNG text chunks in `Output.text` for the
    `after` image, and, with `label`, the visible mark. A photo without a face is a normal answer:
    faces_found 0 and the photo unchanged."""

    task = "faceswap"

    def __init__(self, name, path, ckpt, device):
        super().__init__(name, path, ckpt, device)
        from ..specs.faceswap import ConvertOptions
        from ..tasks import faceswap

        self.model = faceswap.load(path, device=device)
        self.Options = pick("FaceSwapServeOptions", ConvertOptions, "direction", "all_faces", "mask", "color",
                            "seamless", "feather", "label")

    def input_size(self):
        return None   # any photo: faces are found, aligned to the network's size and pasted back

    def run(self, upload, opts):
        from ..faces.provenance import KEY, SENTENCE, provenance_record, stamp_label
        from ..specs.faceswap import ConvertOptions
        from ..tasks.faceswap import FrameConverter

        image = upload.image("RGB")
        values = {f.name: getattr(opts, f.name) for f in dataclasses.fields(opts)}
        o = make(ConvertOptions, {"weights": str(self.path), "inputs": [upload.name], "out": "-", **values})
        # A converter per request (its MTCNN detector takes ~20 ms to build, measured 17-21 ms): the detector and the
        # converter keep per-call state, so requests on parallel workers must not share them.
        conv = FrameConverter(self.model, o)
        seen = conv.detector = _SeenFaces(conv.detector)
        out, n = conv(image)
        if o.label:
            out = stamp_label(out)
        record = provenance_record(direction=o.direction, weights=str(self.path), source=upload.name,
                                   visible_label=o.label)
        result = {"width": int(image.shape[1]), "height": int(image.shape[0]), "faces_found": len(seen.faces),
                  "faces_swapped": n, "direction": o.direction,
                  "faces": [f.to_json() for f in seen.faces[:n]], "changed_pixels": int(conv.touched.sum()),
                  "provenance": record}
        if not seen.faces:
            result["message"] = (f"no face found (detector {seen.detector.backend}, smallest face side {o.min_size} "
                                 "px): the photo is returned unchanged" + (" apart from the label" if o.label else ""))
        text = {"Comment": SENTENCE, KEY: json.dumps(record, sort_keys=True), "Software": "lensforge faceswap"}
        return Output(result, {"before": image, "after": out}, {"after": text})


# ----------------------------------------------------------------------------- loading

_NAME_OK = re.compile(r"[^A-Za-z0-9._-]+")


def default_name(path: Path) -> str:
    """runs/demo -> demo; runs/x/weights/best.pt -> x; other.pt -> other."""
    if path.is_dir():
        base = path.resolve().name
    elif path.parent.name == "weights":
        base = path.resolve().parent.parent.name
    else:
        base = path.stem
    return _NAME_OK.sub("-", base).strip("-") or "model"


def parse_model_args(args: list[str]) -> list[tuple[str, Path]]:
    """`NAME=PATH` or `PATH` per argument -> unique (name, path); clashes get -2, -3."""
    out: list[tuple[str, Path]] = []
    seen: set[str] = set()
    for a in args:
        name, _, rest = a.partition("=")
        if rest and not Path(a).exists():
            if _NAME_OK.search(name) or not name:
                raise UsageError(f"{a}: a model name may use only letters, digits, '.', '_' and '-'")
            path = Path(rest)
            if name in seen:
                raise UsageError(f"{a}: the name {name} is given twice")
        else:
            path = Path(a)
            name = default_name(path) if path.exists() else "model"
            base, i = name, 2
            while name in seen:
                name, i = f"{base}-{i}", i + 1
        if not path.exists():
            raise UsageError(f"{path}: no such run folder or weights file")
        seen.add(name)
        out.append((name, path))
    return out


def load_model(name: str, path: str | Path, device: str = "auto") -> Adapter:
    """The adapter for the task the checkpoint was trained for; one-line errors otherwise."""
    from ..engine.checkpoint import load_checkpoint

    ckpt = load_checkpoint(path)
    task = ckpt.get("task")
    cls = ADAPTERS.get(task)
    if cls is None:
        raise UsageError(f"{path}: a '{task}' model cannot be served yet (served: {', '.join(sorted(ADAPTERS))})")
    try:
        return cls(name, Path(path), ckpt, device)
    except ImportError as e:
        raise UsageError(f"{path}: the {task} task is not available in this install ({e})") from None
