"""Reproduce the generative-models figures quoted in docs/generative.md.

    .venv/bin/python bench/generative.py                 # everything, each step under the CPU lock
    .venv/bin/python bench/generative.py --only vae_mnist gan_mnist  # a subset
    flock /tmp/lensforge-cpu.lock env LENSFORGE_BENCH_LOCKED=1 .venv/bin/python bench/generative.py  # one lock

Each experiment runs in its own process under `flock /tmp/lensforge-cpu.lock` (this machine's
2 cores are shared), with the wall time of that process recorded next to its figures in
bench/results/generative.json. Run folders go to bench/out/ (git-ignored); a few small sample
PNGs are copied to docs/img/.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DATA = os.environ.get("LENSFORGE_BENCH_DATA", str(ROOT.parent / "shared" / "datasets"))
OUT = ROOT / "bench" / "out" / "generative"
RESULTS = ROOT / "bench" / "results" / "generative.json"
LOCK = "/tmp/lensforge-cpu.lock"
ORL = f"{DATA}/orl-faces.zip"
# The commit whose code the *_before experiments run: the last one before issue 17's GAN recipe.
BEFORE = "fd5c176"

# name -> (equivalent CLI command, python API call run in a child process[, commit whose src/ it runs with])
EXPERIMENTS = {
    "ae_fashion_conv3": (
        f"lensforge autoencode train --data fashion-mnist --data-dir {DATA} --model conv --latent-dim 3 --epochs 4 "
        f"--out bench/out/generative/ae_fashion_conv3 --no-progress",
        "from lensforge.tasks import autoencode; autoencode.train('fashion-mnist', data_dir=D, model='conv', "
        "latent_dim=3, epochs=4, batch_size=128, lr=2e-3, weight_decay=0.0, out=O, progress=False)"),
    "denoise_mnist": (
        f"lensforge autoencode train --data mnist --data-dir {DATA} --model conv --latent-dim 32 --denoise 0.3 "
        f"--epochs 2 --out bench/out/generative/denoise_mnist --no-progress",
        "from lensforge.tasks import autoencode; autoencode.train('mnist', data_dir=D, model='conv', latent_dim=32, "
        "denoise=0.3, epochs=2, batch_size=128, lr=2e-3, weight_decay=0.0, out=O, progress=False)"),
    "vae_mnist": (
        f"lensforge vae train --data mnist --data-dir {DATA} --model conv --latent-dim 32 --epochs 14 "
        f"--batch-size 128 --lr 2e-3 --out bench/out/generative/vae_mnist --no-progress",
        "from lensforge.tasks import vae; vae.train('mnist', data_dir=D, model='conv', latent_dim=32, epochs=14, "
        "batch_size=128, lr=2e-3, weight_decay=0.0, out=O, progress=False)"),
    "fd_classifier_mnist": (
        f"lensforge classify train --data mnist --data-dir {DATA} --model cnn --epochs 1 --label-smoothing 0 --precision fp32 "
        f"--out bench/out/generative/fd_classifier_mnist --no-progress",
        "from lensforge.tasks import classify; classify.train('mnist', data_dir=D, model='cnn', epochs=1, out=O, "
        "progress=False, label_smoothing=0.0, precision='fp32')"),
    # Issue 17: the default recipe (no flags but the judge): DCGAN G and D with Adam betas (0.5, 0.999) at lr 6e-4,
    # EMA 0.999 of G, 28 epochs, bf16 autocast on an AMX-BF16 CPU (lensforge.recipes, tasks/gan.py).
    "gan_mnist": (
        f"lensforge gan train --data mnist --data-dir {DATA} "
        f"--fd-classifier bench/out/generative/fd_classifier_mnist --out bench/out/generative/gan_mnist --no-progress",
        "from lensforge.tasks import gan; gan.train('mnist', data_dir=D, "
        "fd_classifier=str(OUT / 'fd_classifier_mnist'), out=O, progress=False)"),
    # The recipe before issue 17 (G's Adam betas (0.9, 0.99), fp32 on CPUs), run with that commit's code
    # (git archive BEFORE src, on PYTHONPATH) on this machine, so before and after compare on one CPU.
    "gan_mnist_before": (
        f"lensforge gan train --data mnist --data-dir {DATA} --epochs 15 --ema 0.999 "
        f"--fd-classifier bench/out/generative/fd_classifier_mnist --out bench/out/generative/gan_mnist_before "
        f"--no-progress",
        "from lensforge.tasks import gan; gan.train('mnist', data_dir=D, epochs=15, ema=0.999, "
        "fd_classifier=str(OUT / 'fd_classifier_mnist'), out=O, progress=False)", "BEFORE"),
    "gan_mnist_cond": (
        f"lensforge gan train --data mnist --data-dir {DATA} --conditional --epochs 8 --ema 0.999 "
        f"--fd-classifier bench/out/generative/fd_classifier_mnist --out bench/out/generative/gan_mnist_cond "
        f"--no-progress",
        "from lensforge.tasks import gan; gan.train('mnist', data_dir=D, conditional=True, epochs=8, ema=0.999, "
        "fd_classifier=str(OUT / 'fd_classifier_mnist'), out=O, progress=False)"),
    # Issue 17: the SNGAN recipe (--spectral-norm: spectral-norm D without batch norm, hinge loss by --loss auto,
    # D at 2x G's learning rate) with EMA 0.999 of G; 18 epochs sized to stay under 15 minutes at gan_mnist's
    # 42 s per epoch on this CPU. Compare with gan_mnist epoch by epoch (fd_per_epoch, recognisable_per_epoch).
    "gan_mnist_sn": (
        f"lensforge gan train --data mnist --data-dir {DATA} --epochs 18 --ema 0.999 --spectral-norm "
        f"--fd-classifier bench/out/generative/fd_classifier_mnist --out bench/out/generative/gan_mnist_sn --no-progress",
        "from lensforge.tasks import gan; gan.train('mnist', data_dir=D, epochs=18, ema=0.999, spectral_norm=True, "
        "fd_classifier=str(OUT / 'fd_classifier_mnist'), out=O, progress=False)"),
    "vae_faces": (
        f"lensforge vae train --data {ORL} --image-size 64 --model conv --latent-dim 32 --likelihood bernoulli "
        f"--epochs 60 --batch-size 32 --lr 2e-3 --out bench/out/generative/vae_faces --no-progress",
        "from lensforge.tasks import vae; vae.train(ORL, image_size=64, model='conv', latent_dim=32, epochs=60, "
        "batch_size=32, lr=2e-3, weight_decay=0.0, out=O, progress=False)"),
    "gan_faces": (
        f"lensforge gan train --data {ORL} --image-size 64 --epochs 150 --batch-size 32 --ema 0.999 "
        f"--fd-classifier none --out bench/out/generative/gan_faces --no-progress",
        "from lensforge.tasks import gan; gan.train(ORL, image_size=64, epochs=150, batch_size=32, ema=0.999, "
        "fd_classifier='none', out=O, progress=False)"),
    # ORL before/after with a Frechet distance: one judge (a CNN on the 40 people, 64 px) for both runs;
    # fd_vs_test in results.json is against the 80 held-out faces (the folder loader's fixed 20% test
    # split, seed 0), which neither the GAN nor the judge trained on.
    "fd_classifier_orl": (
        f"lensforge classify train --data {ORL} --image-size 64 --model cnn --label-smoothing 0 --precision fp32 "
        f"--out bench/out/generative/fd_classifier_orl --no-progress",
        "from lensforge.tasks import classify; classify.train(ORL, image_size=64, model='cnn', out=O, progress=False, "
        "label_smoothing=0.0, precision='fp32')"),
    "gan_faces_fd": (
        f"lensforge gan train --data {ORL} --image-size 64 --epochs 150 --batch-size 32 --ema 0.999 "
        f"--fd-classifier none --out bench/out/generative/gan_faces_fd --no-progress",
        "from lensforge.tasks import gan; gan.train(ORL, image_size=64, epochs=150, batch_size=32, ema=0.999, "
        "fd_classifier='none', out=O, progress=False)"),
    "gan_faces_fd_before": (
        f"lensforge gan train --data {ORL} --image-size 64 --epochs 150 --batch-size 32 --ema 0.999 "
        f"--fd-classifier none --out bench/out/generative/gan_faces_fd_before --no-progress",
        "from lensforge.tasks import gan; gan.train(ORL, image_size=64, epochs=150, batch_size=32, ema=0.999, "
        "fd_classifier='none', out=O, progress=False)", "BEFORE"),
}

DOC_IMAGES = {  # run file -> docs/img name
    ("vae_mnist", "samples.png"): "vae_mnist_samples.png",
    ("ae_fashion_conv3", "latent.png"): "ae_fashion_latent3.png",
    ("ae_fashion_conv3", "reconstructions.png"): "ae_fashion_reconstructions.png",
    ("denoise_mnist", "reconstructions.png"): "denoise_mnist.png",
    ("gan_mnist", "samples.png"): "gan_mnist_samples.png",
    ("gan_mnist", "progress.png"): "gan_mnist_progress.png",
    ("gan_mnist_cond", "samples.png"): "gan_mnist_cond_samples.png",
    ("vae_faces", "samples.png"): "vae_faces_samples.png",
    ("gan_faces", "samples.png"): "gan_faces_samples.png",
    ("gan_mnist_sn", "samples.png"): "gan_mnist_sn_samples.png",
    ("gan_mnist_sn", "progress.png"): "gan_mnist_sn_progress.png",
    ("gan_mnist_before", "samples.png"): "gan_mnist_before_samples.png",
    ("gan_faces_fd", "samples.png"): "gan_faces_fd_samples.png",
    ("gan_faces_fd_before", "samples.png"): "gan_faces_fd_before_samples.png",
}


def code_at(commit: str) -> Path:
    """src/ of `commit` exported (git archive) into bench/out, for experiments that measure old code."""
    dest = OUT / f"src-{commit}"
    if not (dest / "src" / "lensforge").is_dir():
        dest.mkdir(parents=True, exist_ok=True)
        archive = subprocess.run(["git", "archive", commit, "src"], cwd=ROOT, check=True, capture_output=True).stdout
        subprocess.run(["tar", "-x", "-C", str(dest)], input=archive, check=True)
    return dest / "src"


def run_one(name: str) -> dict:
    cli, code, *commit = EXPERIMENTS[name]
    commit = BEFORE if commit == ["BEFORE"] else (commit[0] if commit else None)
    out = OUT / name
    if out.exists():
        shutil.rmtree(out)
    prog = (f"import sys; from pathlib import Path; D={DATA!r}; ORL={ORL!r}; OUT=Path({str(OUT)!r}); "
            f"O={str(out)!r}; {code}")
    env = dict(os.environ)
    if commit:   # that commit's lensforge first on the path, ahead of the editable install of this tree
        env["PYTHONPATH"] = os.pathsep.join([str(code_at(commit))] + ([env["PYTHONPATH"]] if env.get("PYTHONPATH") else []))
    t0 = time.time()
    locked = os.environ.get("LENSFORGE_BENCH_LOCKED") == "1"   # the caller already holds the lock
    proc = subprocess.run(([] if locked else ["flock", LOCK]) + [sys.executable, "-c", prog], cwd=ROOT, env=env)
    wall = time.time() - t0  # includes waiting for the lock; the run's own train_seconds is in results
    entry = {"command": cli, "exit_code": proc.returncode, "wall_seconds_incl_lock_wait": round(wall, 1)}
    if commit:
        entry["code_commit"] = commit
    return collect(name, out, entry)


# Faces: FD against the held-out faces, measured once on the finished run with the ORL judge. Not per epoch:
# at 64 px with that judge an epoch took 15-16 s with its FD against 0.6-1 s without (150 epochs).
HELDOUT_FD = {"gan_faces_fd": "fd_classifier_orl", "gan_faces_fd_before": "fd_classifier_orl"}


def heldout_fd(run_dir: Path, judge_dir: Path, n: int = 400) -> dict:
    """FD of n samples of the run's generator (best.pt, this tree's loader) against the data's held-out
    split (the folder loader's fixed 20%, seed 0, which neither the GAN nor the judge trained on), with
    the floor: real held-out faces against real training faces, through the same judge."""
    import torch
    from lensforge.tasks import gan
    from lensforge.tasks.generative_common import load_images

    ds = load_images(ORL, image_size=64, seed=0)
    judge = gan.FeatureJudge(judge_dir, ds.train.shape, torch.device("cpu"))
    f_test, _ = judge(gan.real_images(ds.test, len(ds.test), seed=2))
    f_train, _ = judge(gan.real_images(ds.train, len(ds.train), seed=1))
    f_fake, _ = judge(gan.load(run_dir, device="cpu").sample(n, seed=0))
    return {"fd_vs_heldout_faces": gan.frechet_distance(f_fake, f_test),
            "fd_vs_train_faces": gan.frechet_distance(f_fake, f_train),
            "fd_real_heldout_vs_train": gan.frechet_distance(f_test, f_train),
            "heldout_faces": len(ds.test), "train_faces": len(ds.train), "samples": n, "judge": str(judge_dir)}


def collect(name: str, out: Path, entry: dict) -> dict:
    """Attach a finished run folder's results.json to its entry and copy its docs images."""
    res = out / "results.json"
    if entry["exit_code"] == 0 and res.exists():
        entry["results"] = json.loads(res.read_text())
        if name in HELDOUT_FD:
            entry["heldout_fd"] = heldout_fd(out, OUT / HELDOUT_FD[name])
        for (exp, f), img in DOC_IMAGES.items():
            if exp == name and (out / f).exists():
                (ROOT / "docs" / "img").mkdir(parents=True, exist_ok=True)
                shutil.copyfile(out / f, ROOT / "docs" / "img" / img)
    return entry


def summarise(all_results: dict) -> dict:
    """The must-show checks, as booleans next to the numbers they come from."""
    s = {}
    r = all_results.get("vae_mnist", {}).get("results")
    if r:
        s["vae_mnist_test_neg_elbo_nats"] = r["test_neg_elbo"]
        s["vae_mnist_train_seconds"] = r["train_seconds"]
        s["vae_mnist_ok"] = r["test_neg_elbo"] <= 100 and r["train_seconds"] <= 600
    r = all_results.get("ae_fashion_conv3", {}).get("results")
    if r:
        s["ae_fashion_conv3_test_mse"] = r["test_mse"]
        s["pca3_fashion_test_mse"] = r["pca3_test_mse"]
        s["ae_beats_pca"] = r["test_mse"] < r["pca3_test_mse"]
    r = all_results.get("denoise_mnist", {}).get("results")
    if r:
        s["denoise_noisy_psnr_db"] = r["test_noisy_psnr"]
        s["denoise_output_psnr_db"] = r["test_psnr"]
        s["denoise_gain_db"] = r["test_psnr_gain_db"]
        s["denoise_ok"] = r["test_psnr_gain_db"] >= 6
    for exp, key in (("gan_mnist", "gan"), ("gan_mnist_before", "gan_before"), ("gan_mnist_cond", "gan_cond"),
                     ("gan_mnist_sn", "gan_sn")):
        r = all_results.get(exp, {}).get("results")
        if r and isinstance(r.get("fd_vs_train"), float):
            fds = r["fd_per_epoch"]
            s[f"{key}_fd_per_epoch"] = fds
            s[f"{key}_fd_falls"] = fds[-1] < fds[0]
            # "still falling": the lowest FD of the run is in its last quarter of epochs
            s[f"{key}_fd_best_in_last_quarter"] = fds.index(min(fds)) >= len(fds) - max(1, len(fds) // 4)
            s[f"{key}_recognisable_fraction"] = r["recognisable_fraction"]
            s[f"{key}_recognisable_ok"] = r["recognisable_fraction"] >= 0.8
            s[f"{key}_train_seconds"] = r["train_seconds"]
    for exp, key in (("gan_faces_fd", "faces"), ("gan_faces_fd_before", "faces_before")):
        h = all_results.get(exp, {}).get("heldout_fd")
        if h:
            s[f"{key}_fd_vs_heldout_faces"] = h["fd_vs_heldout_faces"]
            s[f"{key}_fd_vs_train_faces"] = h["fd_vs_train_faces"]
            s[f"{key}_fd_real_heldout_vs_train"] = h["fd_real_heldout_vs_train"]
            s[f"{key}_train_seconds"] = all_results[exp]["results"]["train_seconds"]
    return s


def cpu_model() -> str:
    """The CPU's model name and whether it has AMX-BF16 (which decides the GAN's precision)."""
    try:
        info = Path("/proc/cpuinfo").read_text()
    except OSError:
        return "unknown CPU"
    name = next((line.split(":", 1)[1].strip() for line in info.splitlines() if line.startswith("model name")), "?")
    return f"{name} ({'with' if ' amx_bf16' in info else 'without'} AMX-BF16)"


def write_results(experiments: dict) -> None:
    doc = {"machine": f"{cpu_model()}, {os.cpu_count()} CPU cores (shared, runs serialised by {LOCK})",
           "experiments": experiments, "summary": summarise(experiments)}
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    tmp = RESULTS.with_suffix(".tmp")
    tmp.write_text(json.dumps(doc, indent=2) + "\n")
    os.replace(tmp, RESULTS)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--only", nargs="*", choices=list(EXPERIMENTS), default=None)
    ap.add_argument("--record", nargs=2, metavar=("NAME", "RUN_DIR"), default=None,
                    help="record a finished run folder made with NAME's exact command elsewhere (e.g. a queue "
                         "script under the lock) instead of running it again")
    args = ap.parse_args()
    names = args.only or list(EXPERIMENTS)
    prev = json.loads(RESULTS.read_text()) if RESULTS.exists() else {}
    experiments = prev.get("experiments", {})
    if args.record:
        name, run_dir = args.record
        if name not in EXPERIMENTS:
            ap.error(f"--record {name}: not one of {', '.join(EXPERIMENTS)}")
        if not (Path(run_dir) / "results.json").is_file():
            ap.error(f"--record {run_dir}: no results.json there (not a finished run folder)")
        names = []
        entry = {"command": EXPERIMENTS[name][0], "exit_code": 0, "recorded_from": str(run_dir)}
        if len(EXPERIMENTS[name]) > 2:
            entry["code_commit"] = BEFORE if EXPERIMENTS[name][2] == "BEFORE" else EXPERIMENTS[name][2]
        experiments[name] = collect(name, Path(run_dir), entry)
        write_results(experiments)
    for name in names:
        print(f"== {name}", flush=True)
        experiments[name] = run_one(name)
        write_results(experiments)
    print(json.dumps(summarise(experiments), indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
