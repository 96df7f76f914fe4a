"""Face swap (the deepfakes / faceswap / DeepFaceLab method): `extract`, `train`, `convert`.

    import lensforge.tasks.faceswap as fs
    fs.extract(["alice.mp4"], "faces/alice"); fs.extract(["bob/"], "faces/bob")
    run = fs.train(a="faces/alice", b="faces/bob", epochs=20)
    fs.convert(run.dir, ["alice.mp4"], "out", direction="a2b")

Training: one shared encoder, one decoder per identity (lensforge.models.faceswap), inputs randomly
warped with undistorted targets (lensforge.faces.training), L1/MSE + SSIM + the mask channel's
error against each face's landmark ellipse. Convert: detect, align, swap, colour-match, feather,
warp back; pixels outside the mask keep their bytes, every output carries a provenance tag.
"""
from __future__ import annotations

import contextlib
import json
import sys
import tempfile
import time
import zipfile
from pathlib import Path, PurePosixPath

import cv2
import numpy as np
import torch

from ..color import psnr, ssim
from ..data.imageio import IMAGE_EXTENSIONS, read_image
from ..data.loader import _gen
from ..engine.checkpoint import load_checkpoint
from ..engine.device import select_runtime
from ..errors import DataError, UsageError
from ..faces.align import DEFAULT_MARGIN, align_face, template_points, transform_points
from ..faces.blend import blend_alpha, composite, face_mask
from ..faces.detect import FaceDetector
from ..faces.extract import ALIGNMENTS, ExtractResult
from ..faces.extract import extract as extract_sources
from ..faces.provenance import provenance_record, stamp_label, tag_video, write_image
from ..faces.sources import MEDIA_EXTENSIONS, as_sources, read_frames
from ..faces.training import WarpSettings, augment_pair, faceswap_loss
from ..faces.video import VideoReader, VideoWriter
from ..options import make
from ..specs.faceswap import ConvertOptions, ExtractOptions, FaceswapOptions
from .apply import Record, accepts_onnx, expand_inputs, unique_stems, write_records_csv
from .common import restore_model
from .lifecycle import Run, TrainableTask, run

TASK = "faceswap"
#: Video containers convert writes in the input's own format; others become .mp4.
WRITABLE_VIDEO = (".mp4", ".m4v", ".mov", ".avi", ".mkv")


# ============================================================================ extract

def extract(inputs, out: str | Path, **options) -> ExtractResult:
    """Aligned face crops + alignments.json from photos, videos, folders and zips (see
    lensforge.faces.extract). Files without a face or unreadable ones are listed, not fatal."""
    o = make(ExtractOptions, {"inputs": [str(i) for i in inputs], "out": str(out), **options})
    sources = as_sources(expand_inputs(o.inputs, MEDIA_EXTENSIONS))
    return extract_sources(sources, o.out, face_size=o.face_size, margin=o.margin, largest=o.largest,
                           min_size=o.min_size, every=o.every, detector=o.detector, min_score=o.min_score)


# ============================================================================ face sets

class FaceSet:
    """Aligned faces of one person, re-cut to the network's size and margin, with their masks."""

    def __init__(self, images: torch.Tensor, masks: torch.Tensor, names: list[str], note: str = ""):
        self.images, self.masks, self.names, self.note = images, masks, names, note

    def __len__(self) -> int:
        return len(self.names)

    def subset(self, idx) -> "FaceSet":
        idx = list(idx)
        return FaceSet(self.images[idx], self.masks[idx], [self.names[i] for i in idx], self.note)


def _alignments(path: Path, names: list[str], read) -> dict | None:
    """alignments.json next to the crops (folder root or zip root, or one wrapper folder down)."""
    cands = [n for n in names if PurePosixPath(n).name == ALIGNMENTS]
    if not cands:
        return None
    cands.sort(key=lambda n: len(PurePosixPath(n).parts))
    try:
        return json.loads(read(cands[0]))
    except (ValueError, OSError) as e:
        raise DataError(f"{path}/{cands[0]}: not a readable alignments file ({e})") from None


def load_face_set(path: str | Path, size: int, margin: float) -> FaceSet:
    """Crops written by `faceswap extract` (a folder or a .zip of one), re-cut from their extraction
    margin to `margin` at `size` px. Each face's mask is the landmark ellipse of its own landmarks
    (from alignments.json; without it, the template's)."""
    path = Path(path)
    if path.is_dir():
        files = sorted(p for p in path.rglob("*") if p.is_file())
        names = [p.relative_to(path).as_posix() for p in files]
        read = lambda n: (path / n).read_bytes()  # noqa: E731
    elif path.is_file() and zipfile.is_zipfile(path):
        with zipfile.ZipFile(path) as zf:  # face sets are small (a few MB): read them at once
            blobs = {n: zf.read(n) for n in zf.namelist() if not n.endswith("/")}
        names = sorted(blobs)
        read = blobs.__getitem__
    elif path.exists():
        raise UsageError(f"{path}: not a folder or .zip of face crops (run `lensforge faceswap extract` first)")
    else:
        raise UsageError(f"{path}: no such file or folder")
    doc = _alignments(path, names, read)
    m_src = float(doc["settings"]["margin"]) if doc else DEFAULT_MARGIN
    records = {f["file"]: f for f in doc.get("faces", [])} if doc else {}
    crops = [n for n in names if PurePosixPath(n).suffix.lower() in IMAGE_EXTENSIONS and not PurePosixPath(n).name.startswith(".")]
    if not crops:
        raise UsageError(f"{path}: no face crops found (run `lensforge faceswap extract` first)")
    images, masks = [], []
    for n in crops:
        label = f"{path}/{n}"
        img = read_image(read(n), "RGB", name=label)
        h, w = img.shape[:2]
        if h != w:
            raise DataError(f"{label}: not an aligned face crop ({w}x{h}, crops are square); "
                            "run `lensforge faceswap extract` on the photos first")
        rec = records.get(PurePosixPath(n).name)
        lm = (transform_points(rec["landmarks"], np.array(rec["matrix"])) if rec
              else template_points(w, m_src))
        # Re-cut: template position p maps to size * (margin + t * (1 - 2 margin)) in both crops.
        k = size * (1 - 2 * margin) / (w * (1 - 2 * m_src))
        t = size * margin - k * w * m_src
        mat = np.array([[k, 0, t], [0, k, t]])
        img = cv2.warpAffine(img, mat, (size, size), flags=cv2.INTER_AREA if k < 1 else cv2.INTER_LINEAR,
                             borderMode=cv2.BORDER_REFLECT101)
        images.append(img)
        masks.append(face_mask(size, margin, transform_points(lm, mat)))
    note = "" if doc else f"{path}: no {ALIGNMENTS}; assumed margin {DEFAULT_MARGIN} and template landmarks"
    x = torch.from_numpy(np.stack(images)).permute(0, 3, 1, 2).contiguous()
    m = torch.from_numpy((np.stack(masks) * 255).astype(np.uint8))[:, None]
    return FaceSet(x, m, crops, note)


class PairBatches:
    """`steps` batches per epoch; each step draws `batch_size` faces of A and of B (with
    replacement) and augments them, all from a generator seeded by (seed, epoch, step)."""

    def __init__(self, a: FaceSet, b: FaceSet, batch_size: int, steps: int, seed: int, warp: WarpSettings,
                 device: torch.device):
        self.a, self.b, self.batch_size, self.steps = a, b, batch_size, steps
        self.seed, self.warp, self.device = seed, warp, device

    def __len__(self) -> int:
        return self.steps

    def _draw(self, faces: FaceSet, gen: torch.Generator):
        idx = torch.randint(len(faces), (self.batch_size,), generator=gen)
        x = faces.images[idx].float().div_(255)
        m = faces.masks[idx].float().div_(255)
        return tuple(t.to(self.device) for t in augment_pair(x, m, gen, self.warp))

    def epoch(self, epoch: int = 0, start: int = 0):
        for step in range(start, self.steps):
            gen = _gen(self.seed, epoch, step, 14)
            yield self._draw(self.a, gen) + self._draw(self.b, gen)

    def __iter__(self):
        return self.epoch(0)


# ============================================================================ training

class FaceSwapTask(TrainableTask):
    name, Options = TASK, FaceswapOptions
    needs_validation = ()

    def setup(self) -> None:
        o = self.opts
        a = load_face_set(o.a, o.image_size, o.margin)
        b = load_face_set(o.b, o.image_size, o.margin)
        for who, faces, src in (("A", a, o.a), ("B", b, o.b)):
            if len(faces) < o.holdout + 2:
                raise UsageError(f"{src}: {len(faces)} faces of {who}; need at least --holdout ({o.holdout}) + 2")
        self.train_a, self.val_a = self._split(a)
        self.train_b, self.val_b = self._split(b)
        self.model_name = o.model
        self.model_kwargs = {"image_size": o.image_size, "width": o.width, "latent": o.latent}
        warp = WarpSettings(warp=o.warp, flip=o.flip)
        self.train_batches = PairBatches(self.train_a, self.train_b, self.cfg.batch_size, o.steps, self.cfg.seed,
                                         warp, self.rt.device)
        self.previews: list[np.ndarray] = []
        self.feature_net = None
        if o.perceptual_weight > 0:
            from ..models.features import load_feature_net, resolve_weights
            net = load_feature_net(resolve_weights(o.features))
            self.feature_net = net.to(self.rt.device)
            # The shallow layers: at 64 px the deeper ones are 2-4 px wide and see little but colour.
            self.feature_layers = net.layers.style[:3]

    def _split(self, faces: FaceSet) -> tuple[FaceSet, FaceSet]:
        """Held-out faces: a seeded draw, the same on resume."""
        order = torch.randperm(len(faces), generator=torch.Generator().manual_seed(self.cfg.seed)).tolist()
        hold = sorted(order[:self.opts.holdout])
        keep = sorted(order[self.opts.holdout:])
        return faces.subset(keep), faces.subset(hold)

    def run_name(self) -> str:
        stem = lambda p: Path(str(p).rstrip("/")).stem  # noqa: E731
        return f"{stem(self.opts.a)}-{stem(self.opts.b)}"

    def summary(self) -> str:
        notes = "; ".join(n for n in (self.train_a.note, self.train_b.note) if n)
        return (f"faceswap: A {len(self.train_a)} train + {len(self.val_a)} held-out faces, B {len(self.train_b)} + "
                f"{len(self.val_b)}; {self.opts.image_size} px, margin {self.opts.margin}"
                + (f" ({notes})" if notes else ""))

    def config_extra(self) -> dict:
        return {"faces": {"a_train": len(self.train_a), "a_heldout": self.val_a.names,
                          "b_train": len(self.train_b), "b_heldout": self.val_b.names}}

    def extra_meta(self) -> dict:
        return {"face_margin": self.opts.margin, "image_size": self.opts.image_size}

    def training_step(self, model, batch):
        wa, ta, ma, wb, tb, mb = batch
        code = model.encoder(torch.cat([wa, wb]))
        ca, cb = code.split([len(wa), len(wb)])
        o = self.opts
        kw = {"kind": o.loss, "ssim_weight": o.ssim_weight, "mask_weight": o.mask_weight}
        ra, mka = model.decoders["a"](ca)
        rb, mkb = model.decoders["b"](cb)
        la, loga = faceswap_loss(ra, mka, ta, ma, **kw)
        lb, logb = faceswap_loss(rb, mkb, tb, mb, **kw)
        loss = la + lb
        logs = {f"{k}_a": v for k, v in loga.items()} | {f"{k}_b": v for k, v in logb.items()}
        if self.feature_net is not None:
            perc = self._perceptual(torch.cat([ra, rb]), torch.cat([ta, tb]))
            loss = loss + o.perceptual_weight * perc
            logs["perceptual"] = perc.detach()
        logs["loss"] = loss.detach()
        return loss, logs

    def _perceptual(self, pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """Mean over the chosen layers of the feature MSE relative to the target features' power, so
        the term is scale-free whatever the network's input convention (Caffe 0-255 or [0,1])."""
        fp = self.feature_net(pred.float(), self.feature_layers)
        with torch.no_grad():
            ft = self.feature_net(target.float(), self.feature_layers)
        terms = [(fp[i] - ft[i]).pow(2).mean() / ft[i].pow(2).mean().clamp_min(1e-6) for i in self.feature_layers]
        return torch.stack(terms).mean()

    @torch.no_grad()
    def _outputs(self, model) -> dict[str, torch.Tensor]:
        model.eval()
        dev = self.rt.device
        xa = self.val_a.images.float().div(255).to(dev)
        xb = self.val_b.images.float().div(255).to(dev)
        return {"a": xa, "b": xb, "aa": model(xa, "a")[0].float(), "ab": model(xa, "b")[0].float(),
                "bb": model(xb, "b")[0].float(), "ba": model(xb, "a")[0].float()}

    def evaluate(self, model) -> dict[str, float]:
        out = self._outputs(model)
        metrics = {
            "val_l1": float(((out["aa"] - out["a"]).abs().mean() + (out["bb"] - out["b"]).abs().mean()) / 2),
            "val_psnr_a": float(psnr(out["aa"], out["a"]).mean()), "val_psnr_b": float(psnr(out["bb"], out["b"]).mean()),
            "val_ssim_a": float(ssim(out["aa"], out["a"]).mean()), "val_ssim_b": float(ssim(out["bb"], out["b"]).mean()),
        }
        grid = preview_grid(out)
        self.previews.append(grid)
        run_dir = getattr(self, "run_dir", None)  # set by the runner when it offers it: live previews
        if run_dir is not None:
            write_image_plain(Path(run_dir) / "previews" / f"epoch_{len(self.previews):03d}.png", grid)
        return metrics

    def final_results(self, run_dir: Path, fit) -> dict:
        for i, grid in enumerate(self.previews, 1):
            path = run_dir / "previews" / f"epoch_{i:03d}.png"
            if not path.exists():
                write_image_plain(path, grid)
        out = self._outputs(self.model)
        write_image_plain(run_dir / "preview.png", preview_grid(out))
        self.figures.append(("Held-out faces, best weights. Rows: A, A->A, A->B, B, B->B, B->A", "preview.png"))
        return {
            "heldout_psnr_a2a": round(float(psnr(out["aa"], out["a"]).mean()), 3),
            "heldout_psnr_b2b": round(float(psnr(out["bb"], out["b"]).mean()), 3),
            "heldout_ssim_a2a": round(float(ssim(out["aa"], out["a"]).mean()), 4),
            "heldout_ssim_b2b": round(float(ssim(out["bb"], out["b"]).mean()), 4),
            "faces_a": len(self.train_a) + len(self.val_a), "faces_b": len(self.train_b) + len(self.val_b),
            "heldout_per_identity": self.opts.holdout,
        }


def preview_grid(out: dict[str, torch.Tensor], columns: int = 8) -> np.ndarray:
    """Rows A, A->A, A->B, B, B->B, B->A (faceswap's preview layout) of up to `columns` faces."""
    def row(t):
        t = t[:columns].clamp(0, 1).mul(255).round().byte().permute(0, 2, 3, 1).cpu().numpy()
        n = min(len(out["a"]), len(out["b"]), columns)
        t = np.concatenate([t, np.zeros((n - len(t), *t.shape[1:]), np.uint8)]) if len(t) < n else t[:n]
        return np.concatenate(list(t), axis=1)
    rows = [row(out[k]) for k in ("a", "aa", "ab", "b", "bb", "ba")]
    return np.concatenate(rows, axis=0)


def write_image_plain(path: Path, rgb: np.ndarray) -> None:
    from .apply import save_image
    save_image(path, rgb)


def train(a: str | None = None, b: str | None = None, *, out=None, resume=None, **options) -> Run:
    """Train the two-identity autoencoder on face sets written by `extract`."""
    if a is not None:
        options["a"] = str(a)
    if b is not None:
        options["b"] = str(b)
    return run(FaceSwapTask, None, out=out, resume=resume, **options)


# ============================================================================ convert

class FaceSwapper:
    """A trained face swap network ready to convert aligned crops. `model` is anything with
    `swap(x, direction)`: the PyTorch network (load) or the exported graphs (export.runtime)."""

    def __init__(self, model, meta: dict, rt):
        self.model, self.meta, self.rt = model, meta, rt
        self.size = int(meta["image_size"])
        self.margin = float(meta["face_margin"])

    @torch.no_grad()
    def swap(self, crops: np.ndarray, direction: str) -> tuple[np.ndarray, np.ndarray]:
        """(N,S,S,3) uint8 aligned crops -> swapped faces (N,S,S,3) uint8 and masks (N,S,S) in [0,1]."""
        x = torch.from_numpy(np.ascontiguousarray(crops)).permute(0, 3, 1, 2).float().div(255).to(self.rt.device)
        rgb, mask = self.model.swap(x, direction)
        faces = rgb.clamp(0, 1).mul(255).round().byte().permute(0, 2, 3, 1).cpu().numpy()
        return faces, mask[:, 0].float().cpu().numpy()


@accepts_onnx(TASK)
def load(weights: str | Path, device: str = "auto") -> FaceSwapper:
    ckpt = load_checkpoint(weights, task=TASK)
    rt = select_runtime(device, "fp32")
    return FaceSwapper(restore_model(ckpt, what="the face swap network").to(rt.device).eval(), ckpt, rt)


class FrameConverter:
    """Swap the largest (or every) face of RGB frames; frames without a face come back as they were."""

    def __init__(self, swapper: FaceSwapper, o: ConvertOptions):
        self.swapper, self.o = swapper, o
        #: Pixels the last call was allowed to change (the warped blend masks); all others are
        #: returned byte-identical.
        self.touched: np.ndarray | None = None
        self.detector = FaceDetector(o.detector, min_size=o.min_size, min_score=o.min_score)

    def __call__(self, frame: np.ndarray) -> tuple[np.ndarray, int]:
        o, sw = self.o, self.swapper
        faces = self.detector.detect(frame)
        if not o.all_faces:
            faces = faces[:1]
        if not faces:
            self.touched = np.zeros(frame.shape[:2], bool)
            return frame, 0
        aligned = [align_face(frame, f.landmarks, sw.size, sw.margin) for f in faces]
        swapped, learned = sw.swap(np.stack([c for c, _ in aligned]), o.direction)
        out = frame
        self.touched = np.zeros(frame.shape[:2], bool)
        for (crop, matrix), face, new, lmask in zip(aligned, faces, swapped, learned):
            mask = lmask if o.mask == "learned" else face_mask(sw.size, sw.margin,
                                                               transform_points(face.landmarks, matrix))
            out = composite(out, new, matrix, mask, color=o.color, seamless=o.seamless, feather_px=o.feather)
            self.touched |= blend_alpha(mask, matrix, frame.shape, o.feather) > 0
        return out, len(faces)


def convert(weights: str | Path, inputs, out: str | Path, **options) -> list[Record]:
    """Swap faces in photos and videos; writes OUT/<name>.png|jpg and OUT/<name>.mp4 (videos keep
    fps, size and frame count), each tagged as altered by lensforge faceswap, plus OUT/convert.csv."""
    o = make(ConvertOptions, {"weights": str(weights), "inputs": [str(i) for i in inputs], "out": str(out), **options})
    swapper = load(o.weights, o.device)
    conv = FrameConverter(swapper, o)
    files = expand_inputs(o.inputs, MEDIA_EXTENSIONS)
    sources = as_sources(files)
    out_dir = Path(o.out)
    if out_dir.exists() and not out_dir.is_dir():
        raise UsageError(f"{out_dir}: exists and is not a folder")
    records = []
    for src, stem in zip(sources, unique_stems(files)):
        record = provenance_record(direction=o.direction, weights=str(o.weights), source=src.label,
                                   visible_label=o.label)
        try:
            if src.kind == "video":
                values = _convert_video(src, stem, out_dir, conv, record, o)
            else:
                values = _convert_still(src, stem, out_dir, conv, record, o)
            records.append(Record(src.label, values))
        except DataError as e:
            records.append(Record(src.label, error=str(e)))
    write_records_csv(out_dir / "convert.csv", records,
                      ["output", "faces_swapped", "frames", "frames_with_face", "fps", "seconds", "provenance"])
    return records


def _convert_still(src, stem, out_dir: Path, conv: FrameConverter, record: dict, o) -> dict:
    frame = next(read_frames([src]))
    if frame.error:
        raise DataError(frame.error)
    t = time.perf_counter()
    image, n = conv(frame.image)
    if o.label:
        image = stamp_label(image)
    path = write_image(out_dir / f"{stem}.{o.format}", image, record)
    return {"output": str(path), "faces_swapped": n, "seconds": round(time.perf_counter() - t, 3),
            "provenance": "metadata"}


def _convert_video(src, stem, out_dir: Path, conv: FrameConverter, record: dict, o) -> dict:
    from tqdm.auto import tqdm

    ext = src.path.suffix.lower() if not src.member else PurePosixPath(src.member).suffix.lower()
    path = out_dir / f"{stem}{ext if ext in WRITABLE_VIDEO else '.mp4'}"
    t = time.perf_counter()
    total = with_face = swapped = 0
    with contextlib.ExitStack() as stack:
        video = src.path
        if src.member:  # OpenCV reads files only: unpack the zip member to a temporary file
            tmp = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="lensforge-video-")))
            video = tmp / PurePosixPath(src.member).name
            with zipfile.ZipFile(src.path) as zf:
                video.write_bytes(zf.read(src.member))
        reader = stack.enter_context(VideoReader(video, src.label))
        bar = stack.enter_context(tqdm(total=reader.frame_count or None, desc=Path(src.label).name, unit="frame",
                                       leave=False, file=sys.stderr, disable=None))
        with VideoWriter(path, reader.fps, (reader.width, reader.height)) as writer:
            for _, frame in reader.frames():
                image, n = conv(frame)
                if o.label:
                    image = stamp_label(image)
                writer.write(image)
                total += 1
                with_face += n > 0
                swapped += n
                bar.update(1)
        fps = reader.fps
    where = tag_video(path, record)
    seconds = time.perf_counter() - t
    return {"output": str(path), "faces_swapped": swapped, "frames": total, "frames_with_face": with_face, "fps": fps,
            "seconds": round(seconds, 2), "provenance": where}
