"""ONNX export figures quoted in docs/deploy.md: parity with PyTorch per task, identical classify
predictions on full test sets, int8 accuracy change, and per-image latency onnxruntime vs torch eager.

    flock /tmp/lensforge-cpu.lock .venv/bin/python bench/export_latency.py     # all, ~10 min on 2 cores
    .venv/bin/python bench/export_latency.py --only classify_digits ae_digits  # a subset

Small runs are trained first into bench/out/export/ (git-ignored; kept between invocations), from
the shared data read as a user's download would be (../shared/datasets). Latency: batch 1, fp32,
the same real input every call, median of the timed calls after warm-up, both engines limited to
the same thread count. Results: bench/results/export_latency.{json,md}.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DATA = Path(os.environ.get("LENSFORGE_BENCH_DATA", str(ROOT.parent / "shared" / "datasets")))
WEIGHTS = ROOT.parent / "shared" / "weights" / "squeezenet1_1-features-caffe.pth"
OUT = ROOT / "bench" / "out" / "export"
RESULTS = ROOT / "bench" / "results" / "export_latency"
THREADS = 2


def cifar_folder(n_train: int = 400, n_test: int = 100) -> Path:
    """A user's photo folder: the first CIFAR-10 JPEGs of the shared zip, train/ and test/ splits."""
    root = OUT / "cifar-photos"
    if (root / "test").is_dir():
        return root
    with zipfile.ZipFile(DATA / "cifar10-jpeg.zip") as zf:
        names = sorted(n for n in zf.namelist() if n.endswith(".jpg"))
        for split, n in (("train", n_train), ("test", n_test)):
            picked = [m for m in names if f"{split}/" in m][:n]
            for m in picked:
                dest = root / split / Path(m).name
                dest.parent.mkdir(parents=True, exist_ok=True)
                dest.write_bytes(zf.read(m))
    return root


def train_runs() -> dict[str, tuple[str, callable]]:
    """name -> (CLI equivalent, function training the run into OUT/name)."""
    from lensforge.tasks import autoencode, classify, colorize, detect, faceswap, gan, segment, stylize, vae

    d = str(DATA)
    return {
        "classify_mnist": (f"lensforge classify train --data mnist --data-dir {d} --width 32 --epochs 1",
                           lambda o: classify.train("mnist", data_dir=d, width=32, epochs=1, out=o, progress=False)),
        "classify_digits": ("lensforge classify train --data digits --epochs 3 --batch-size 64",
                            lambda o: classify.train("digits", epochs=3, batch_size=64, out=o, progress=False)),
        "ae_digits": ("lensforge autoencode train --data digits --model conv --latent-dim 16 --epochs 5",
                      lambda o: autoencode.train("digits", model="conv", latent_dim=16, epochs=5, out=o, progress=False)),
        "vae_digits": ("lensforge vae train --data digits --model conv --latent-dim 8 --epochs 5",
                       lambda o: vae.train("digits", model="conv", latent_dim=8, epochs=5, out=o, progress=False)),
        "gan_digits": ("lensforge gan train --data digits --conditional --epochs 3 --fd-classifier none",
                       lambda o: gan.train("digits", conditional=True, epochs=3, fd_classifier="none", out=o,
                                           progress=False)),
        "segment_isbi": ("lensforge segment train --data isbi2012-membrane.zip --model unet --width 8 --depth 3 "
                         "--crop 128 --batch-size 4 --steps-per-epoch 25 --epochs 2",
                         lambda o: segment.train(str(DATA / "isbi2012-membrane.zip"), model="unet", width=8, depth=3,
                                                 crop=128, batch_size=4, steps_per_epoch=25, epochs=2, out=o,
                                                 progress=False, precision="fp32")),
        "colorize_cifar": ("lensforge colorize train --data CIFAR_FOLDER --base 16 --depth 2 --epochs 3",
                           lambda o: colorize.train(str(cifar_folder()), base=16, depth=2, epochs=3, batch_size=32,
                                                    out=o, progress=False, precision="fp32")),
        "stylize_cifar": ("lensforge stylize train --data CIFAR_FOLDER --style STYLE --image-size 32 --epochs 1",
                          lambda o: stylize.train(str(cifar_folder()), style=str(_style_image()), image_size=32,
                                                  epochs=1, batch_size=8, features=str(WEIGHTS), out=o,
                                                  progress=False, precision="fp32")),
        "detect_bccd": ("lensforge detect train --data bccd-voc.zip --model n --epochs 1",
                        lambda o: detect.train(str(DATA / "bccd-voc.zip"), model="n", epochs=1, out=o, progress=False,
                                               precision="fp32")),
        "faceswap_faces94": ("lensforge faceswap extract essex-faces94.zip (2 people) --largest; "
                             "lensforge faceswap train --a A --b B --epochs 1 --steps 20",
                             lambda o: faceswap.train(*_face_pair(), epochs=1, steps=20, out=o, progress=False,
                                                      precision="fp32")),
    }


def _face_pair(people: tuple[str, str] = ("phughe", "jlemon")) -> tuple[str, str]:
    """Aligned faces of two faces94 people, extracted from the shared zip as a user would."""
    from lensforge.tasks.faceswap import extract

    dirs = []
    with zipfile.ZipFile(DATA / "essex-faces94.zip") as zf:
        for who in people:
            dest = OUT / "faces" / who
            if not (dest / "alignments.json").is_file():
                src = OUT / "faces-src" / who
                src.mkdir(parents=True, exist_ok=True)
                for n in zf.namelist():
                    if f"/{who}/" in n and not n.endswith("/"):
                        (src / Path(n).name).write_bytes(zf.read(n))
                extract([src], dest, face_size=128, largest=True)
            dirs.append(str(dest))
    return dirs[0], dirs[1]


def _style_image() -> Path:
    """A real photo as the style (the first CIFAR test JPEG, upscaled): content does not matter here."""
    from PIL import Image

    path = OUT / "style.png"
    if not path.exists():
        src = sorted((cifar_folder() / "test").glob("*.jpg"))[0]
        Image.open(src).convert("RGB").resize((128, 128), Image.Resampling.BICUBIC).save(path)
    return path


def median_ms(fn, warmup: int = 10, seconds: float = 3.0, at_least: int = 30) -> float:
    for _ in range(warmup):
        fn()
    times: list[float] = []
    t_end = time.perf_counter() + seconds
    while len(times) < at_least or time.perf_counter() < t_end:
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return round(1000 * statistics.median(times), 3)


def latency(part, path: Path, inputs: tuple) -> dict:
    """Per-image (batch 1) median ms of torch eager and onnxruntime on the same real input, with 1
    and with 2 threads each (OpenMP's spinning threads make 2 threads slower than 1 for small
    graphs on a loaded machine: both are reported)."""
    import numpy as np
    import torch

    one = tuple(t[:1] for t in inputs)
    out: dict = {"input_shape": list(one[0].shape)}
    for threads in (1, THREADS):
        session = session_for(path, threads)
        feeds = {i.name: (t.numpy().astype(np.int64) if t.dtype == torch.long else t.numpy().astype(np.float32))
                 for i, t in zip(session.get_inputs(), one)}
        torch.set_num_threads(threads)

        def eager():
            with torch.no_grad():
                part.module(*one)

        out[f"torch_eager_ms_{threads}t"] = median_ms(eager)
        out[f"onnxruntime_ms_{threads}t"] = median_ms(lambda: session.run(None, feeds))
    return out


def session_for(path: Path, threads: int = THREADS):
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    opts.inter_op_num_threads = 1
    return ort.InferenceSession(str(path), sess_options=opts, providers=["CPUExecutionProvider"])


def measure(name: str) -> dict:
    import torch

    from lensforge import export as lfexport
    from lensforge.engine.checkpoint import load_checkpoint
    from lensforge.export.graphs import plan_for
    from lensforge.export.samples import real_inputs
    from lensforge.tasks.common import restore_model

    cli, fn = train_runs()[name]
    run_dir = OUT / name
    if not (run_dir / "weights" / "best.pt").is_file():
        t0 = time.perf_counter()
        fn(run_dir)
        print(f"{name}: trained in {time.perf_counter() - t0:.0f} s", file=sys.stderr)
    onnx_path = OUT / f"{name}.onnx"
    t0 = time.perf_counter()
    res = lfexport.export(run_dir, out=onnx_path, dynamic_batch=True)
    row: dict = {"train_command": cli, "export_command": f"lensforge export --weights {run_dir.relative_to(ROOT)} "
                 f"--out {onnx_path.relative_to(ROOT)} --dynamic-batch", "export_seconds": round(time.perf_counter() - t0, 2),
                 "parity_max_abs_diff": res.parity, "parity_inputs": res.parity_inputs,
                 "files_bytes": {k: v.stat().st_size for k, v in res.files.items()}}
    ckpt = load_checkpoint(run_dir)
    plan = plan_for(ckpt, restore_model(ckpt).float().eval())
    inputs, _ = real_inputs(plan, n=8)
    row["latency_batch1"] = {p.role: latency(p, res.files[p.role], inputs[p.role]) for p in plan.parts}
    if ckpt["task"] == "classify":
        row.update(classify_figures(run_dir, onnx_path, plan))
    return row


def classify_figures(run_dir: Path, onnx_path: Path, plan) -> dict:
    """Identical predictions on the whole test split (.pt vs .onnx via the public loaders), and int8."""
    import torch

    from lensforge import export as lfexport
    from lensforge.export.samples import run_split
    from lensforge.tasks import classify
    from lensforge.tasks.classify import predict_logits

    test, _ = run_split(plan.meta, "test")
    pt, ox = classify.load(run_dir, device="cpu"), classify.load(onnx_path)
    a, y = predict_logits(pt.model, test, pt.rt, tta=pt.tta)
    b, _ = predict_logits(ox.model, test, ox.rt, tta=ox.tta)
    out = {"test_images": len(y), "pt_precision": pt.rt.precision,
           "test_logits_max_abs_diff": float((a - b).abs().max()),
           "test_predictions_differing": int((a.argmax(1) != b.argmax(1)).sum()),
           "test_accuracy_pt": float((a.argmax(1) == y).float().mean()),
           "test_accuracy_onnx": float((b.argmax(1) == y).float().mean())}
    q_path = onnx_path.with_name(onnx_path.stem + "-int8.onnx")
    q = lfexport.export(run_dir, out=q_path, dynamic_batch=True, quantize="int8").quantization
    inputs = (test.take(torch.arange(1))[0].float() / 255,)
    out["int8"] = {**q, "latency_batch1": latency(plan.parts[0], q_path, inputs)}
    return out


def write_md(results: dict) -> str:
    lines = ["# ONNX export: parity and latency", "", f"Machine: {results['machine']}; threads {THREADS}; "
             f"load average at start {results['load_start']}, at end {results['load_end']} "
             "(1-minute load averages; a figure well above 2 means other jobs shared the 2 cores, so read "
             "latencies as indicative and ratios more than absolutes).", "",
             "| run | part | max abs diff (fp32, real inputs) | torch eager ms/img, 1 / 2 threads | "
             "onnxruntime ms/img, 1 / 2 threads |", "|---|---|---|---|---|"]
    for name, r in results["runs"].items():
        if "error" in r:
            lines.append(f"| {name} | - | error: {r['error']} | | |")
            continue
        for role, lat in r["latency_batch1"].items():
            lines.append(f"| {name} | {role} | {r['parity_max_abs_diff'][role]:.2e} | {lat['torch_eager_ms_1t']} / "
                         f"{lat[f'torch_eager_ms_{THREADS}t']} | {lat['onnxruntime_ms_1t']} / "
                         f"{lat[f'onnxruntime_ms_{THREADS}t']} |")
        if "int8" in r:
            q = r["int8"]
            lines.append(f"| {name} | int8 | acc {q['fp32_accuracy']:.4f} -> {q['int8_accuracy']:.4f} "
                         f"({100 * q['accuracy_change']:+.2f} pts) | | {q['latency_batch1']['onnxruntime_ms_1t']} / "
                         f"{q['latency_batch1'][f'onnxruntime_ms_{THREADS}t']} |")
    lines += ["", "Classify predictions, .pt vs .onnx over the whole test split:", ""]
    for name, r in results["runs"].items():
        if "test_images" in r:
            lines.append(f"- {name}: {r['test_predictions_differing']} of {r['test_images']} predictions differ; "
                         f"max logit difference {r['test_logits_max_abs_diff']:.2e}; accuracy "
                         f"{r['test_accuracy_pt']:.4f} (.pt) vs {r['test_accuracy_onnx']:.4f} (.onnx)")
    return "\n".join(lines) + "\n"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--only", nargs="+", help="run names (default all)")
    args = ap.parse_args()
    os.environ.setdefault("OMP_NUM_THREADS", str(THREADS))
    names = args.only or list(train_runs())
    results = {"machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores",
               "load_start": round(os.getloadavg()[0], 2), "runs": {}}
    old = json.loads(RESULTS.with_suffix(".json").read_text()) if RESULTS.with_suffix(".json").exists() else {}
    results["runs"] = dict(old.get("runs", {})) if args.only else {}
    for name in names:
        if name == "stylize_cifar" and not WEIGHTS.is_file():
            results["runs"][name] = {"error": f"needs {WEIGHTS}"}
            continue
        results["runs"][name] = measure(name)
        print(f"{name}: {json.dumps(results['runs'][name])[:300]}", file=sys.stderr)
    results["load_end"] = round(os.getloadavg()[0], 2)
    from lensforge.fileio import write_json, write_text

    write_json(RESULTS.with_suffix(".json"), results)
    write_text(RESULTS.with_suffix(".md"), write_md(results))
    print(write_md(results))


if __name__ == "__main__":
    main()
