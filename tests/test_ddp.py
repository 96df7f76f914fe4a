"""Distributed data-parallel training on CPU with gloo: 2 real processes (the torchrun environment
protocol: RANK, WORLD_SIZE, MASTER_ADDR/PORT) train classify on digits through the one engine.

Shown here: the ranks see disjoint shards that together are the single-process batches; the
2-process model reaches the single-process accuracy within 1 point at the same global batch and
epochs; its checkpoint loads in a single process; a GAN (a task with a second network, its
discriminator) trains with 2 processes and its discriminator stays identical on both ranks.
Failures, resume and the simulated 2-node job: test_ddp_faults.py (the same worker).
"""
from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch

HERE = Path(__file__).resolve()
ROOT = HERE.parents[1]
TIMEOUT = 240
CLASSIFY = dict(data="digits", epochs=3, batch_size=64, lr=3e-3, width=16, ema=0.0, precision="fp32", device="cpu",
                progress=False, seed=0)


# ----------------------------------------------------------------------------- the worker (one rank)

def worker(out: str, task: str, epochs: int, resume: bool, die_at_step: int) -> None:
    """One process of the job: build the task exactly as the lifecycle does and run the engine."""
    from lensforge.engine import distributed, interrupts
    from lensforge.engine.checkpoint import load_checkpoint
    from lensforge.engine.device import select_runtime
    from lensforge.engine.trainer import fit
    from lensforge.errors import LensforgeError
    from lensforge.tasks.lifecycle import options_for

    ctx = distributed.init("cpu")
    if task == "classify":
        from lensforge.tasks.classify import ClassifyTask as Task
        values = {**CLASSIFY, "epochs": epochs}
    else:
        from lensforge.tasks.gan import GANTask as Task
        values = dict(data="digits", epochs=epochs, batch_size=64, latent_dim=8, width=8, fd_classifier="none",
                      precision="fp32", device="cpu", progress=False)
    if die_at_step and ctx.rank == 1:
        real_point, hits = interrupts.point, [0]

        def point(name):
            if name == "fit:after-step":
                hits[0] += 1
                if hits[0] == die_at_step:
                    os._exit(3)        # a crash: no clean-up, no message
            real_point(name)
        interrupts.point = point
    run_dir = Path(out)
    state = load_checkpoint(run_dir / "weights" / "last.pt", task=task) if resume else None
    opts, cfg = options_for(Task, values)
    if state is not None:
        cfg.epochs = epochs
    task_obj = Task(opts, cfg, select_runtime("cpu", "fp32"), state, frozenset(values))
    if ctx.main:
        run_dir.mkdir(parents=True, exist_ok=True)
    if hasattr(task_obj, "start"):
        task_obj.start(run_dir)
    try:
        result = fit(task_obj, cfg, run_dir, resume=state)
    except LensforgeError as e:
        print(f"lensforge: error: {e}", file=sys.stderr)
        sys.exit(1)
    report = {"rank": ctx.rank, "world": ctx.world, "shard": [task_obj.train_batches.rank, task_obj.train_batches.world],
              "steps_per_epoch": len(task_obj.train_batches), "history": result.history}
    if task == "gan":   # the discriminator's gradients were averaged: the same weights on every rank
        report["disc_checksum"] = float(sum(p.double().abs().sum() for p in task_obj.disc.parameters()))
        report["gen_checksum"] = float(sum(p.double().abs().sum() for p in task_obj.model.parameters()))
    if task == "classify":
        from lensforge.tasks.classify import predict_logits
        task_obj.model.load_state_dict(result.best_state)
        logits, y = predict_logits(task_obj.model, task_obj.ds.test, task_obj.rt)
        report["test_accuracy"] = (logits.argmax(1) == y).float().mean().item()
    Path(out, f"rank{ctx.rank}.json").write_text(json.dumps(report))


# ----------------------------------------------------------------------------- launching

def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def env_for(rank: int, world: int, port: int) -> dict:
    return {**os.environ, "RANK": str(rank), "LOCAL_RANK": str(rank), "WORLD_SIZE": str(world),
            "LOCAL_WORLD_SIZE": str(world), "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port),
            "OMP_NUM_THREADS": "1", "LENSFORGE_DIST_TIMEOUT": "60", "PYTHONPATH": str(ROOT / "src")}


def launch(out: Path, task: str = "classify", epochs: int = 3, world: int = 2, resume: bool = False,
           die_at_step: int = 0) -> list[subprocess.CompletedProcess]:
    """`world` processes of the worker, as torchrun would start them on one machine."""
    port = free_port()
    args = [sys.executable, str(HERE), "worker", str(out), task, str(epochs), str(int(resume)), str(die_at_step)]
    procs = [subprocess.Popen(args, env=env_for(r, world, port), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              text=True) for r in range(world)]
    done = []
    for p in procs:
        try:
            o, e = p.communicate(timeout=TIMEOUT)
        except subprocess.TimeoutExpired:
            for q in procs:
                q.kill()
            raise AssertionError("a distributed run hung")
        done.append(subprocess.CompletedProcess(p.args, p.returncode, o, e))
    return done


def reports(out: Path, world: int = 2) -> list[dict]:
    return [json.loads((out / f"rank{r}.json").read_text()) for r in range(world)]


def same_rows(a: list[dict], b: list[dict]) -> bool:
    """Every figure equal except the wall time each rank measured for itself."""
    return [{k: v for k, v in r.items() if k != "seconds"} for r in a] == \
        [{k: v for k, v in r.items() if k != "seconds"} for r in b]


# ----------------------------------------------------------------------------- tests

def test_ranks_take_disjoint_slices_of_the_same_global_batches():
    from lensforge.data.loader import Batches
    from lensforge.data.sets import TensorSet

    n = 203
    data = TensorSet(torch.zeros(n, 1, 4, 4, dtype=torch.uint8), torch.arange(n))
    single = [y for _, y in Batches(data, 16, shuffle=True, drop_last=True, seed=5).epoch(3)]
    shards = [[y for _, y in Batches(data, 16, shuffle=True, drop_last=True, seed=5).shard(r, 2).epoch(3)]
              for r in range(2)]
    assert len(shards[0]) == len(shards[1]) == len(single) == 12
    for step, batch in enumerate(single):
        a, b = shards[0][step], shards[1][step]
        assert len(a) == len(b) == 8 and not set(a.tolist()) & set(b.tolist())
        assert sorted(a.tolist() + b.tolist()) == sorted(batch.tolist())
    seen = torch.cat([torch.cat(s) for s in shards])
    assert len(seen) == len(set(seen.tolist())) == 12 * 16          # nothing twice; only the last partial batch left out
    with pytest.raises(ValueError, match="does not split evenly over 3 processes"):
        Batches(data, 16, shuffle=True).shard(0, 3)
    # without drop_last a last batch too small to give every rank an image is left out, the same on all ranks
    last = [list(Batches(TensorSet(torch.zeros(17, 1, 2, 2, dtype=torch.uint8)), 16).shard(r, 2).epoch(0)) for r in (0, 1)]
    assert len(last[0]) == len(last[1]) == 1


@pytest.fixture(scope="module")
def single_accuracy(tmp_path_factory):
    """The same recipe in one process (the reference the 2-process run must match within 1 point)."""
    out = tmp_path_factory.mktemp("single") / "run"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT / "src")}
    env.pop("WORLD_SIZE", None)
    p = subprocess.run([sys.executable, str(HERE), "worker", str(out), "classify", "3", "0", "0"], env=env,
                       capture_output=True, text=True, timeout=TIMEOUT)
    assert p.returncode == 0, p.stderr[-2000:]
    return json.loads((out / "rank0.json").read_text())


def test_two_processes_match_single_process_and_load_single_process(tmp_path, single_accuracy, monkeypatch):
    # The workers train and evaluate in fp32; evaluate() picks bf16 on a CPU with fast bf16, which
    # may move an image across the decision line: compare like with like.
    monkeypatch.setattr("lensforge.engine.device.cpu_has_fast_bf16", lambda: False)
    out = tmp_path / "ddp"
    procs = launch(out)
    assert [p.returncode for p in procs] == [0, 0], procs[0].stderr[-2000:] + procs[1].stderr[-2000:]
    r0, r1 = reports(out)
    assert (r0["world"], r0["shard"], r1["shard"]) == (2, [0, 2], [1, 2])
    assert r0["steps_per_epoch"] == r1["steps_per_epoch"] == single_accuracy["steps_per_epoch"] == 1438 // 64
    assert same_rows(r0["history"], r1["history"])                # all-reduced: every rank reports the same numbers
    assert "epoch 3/3" in procs[0].stderr and "epoch" not in procs[1].stderr   # only rank 0 prints
    assert abs(r0["test_accuracy"] - single_accuracy["test_accuracy"]) <= 0.01, (r0, single_accuracy)
    assert r0["test_accuracy"] > 0.9
    assert sorted(p.name for p in (out / "weights").iterdir()) == ["best.pt", "last.pt"]
    from lensforge.tasks import classify
    clf = classify.load(out / "weights" / "best.pt", device="cpu")        # no DDP prefix: loads in one process
    res = classify.evaluate(out / "weights" / "best.pt", "digits", device="cpu")
    assert abs(res["test_accuracy"] - r0["test_accuracy"]) < 1e-6 and clf.classes == [str(i) for i in range(10)]


def test_gan_trains_with_two_processes(tmp_path):
    out = tmp_path / "gan"
    procs = launch(out, task="gan", epochs=1)
    # both ranks' stderr: once (1 full suite of ~6, 2026-12-06) rank 1 alone ended on SIGABRT (-6) and
    # only rank 0's output was kept, so the cause is unknown; 9 reruns under load passed
    assert [p.returncode for p in procs] == [0, 0], "\n--- rank 1 ---\n".join(p.stderr[-3000:] for p in procs)
    r0, r1 = reports(out)
    assert same_rows(r0["history"], r1["history"]) and r0["shard"] == [0, 2]
    assert r0["disc_checksum"] == r1["disc_checksum"] and r0["gen_checksum"] == r1["gen_checksum"]
    from lensforge.engine.checkpoint import load_checkpoint
    last = load_checkpoint(out / "weights" / "last.pt", task="gan")
    assert last["world_size"] == 2 and "disc" in last["task_state"]
    from lensforge.tasks import gan
    images = gan.load(out, device="cpu").sample(4)
    assert images.shape == (4, 1, 28, 28) and 0 <= images.min() and images.max() <= 1


if __name__ == "__main__" and len(sys.argv) > 1 and sys.argv[1] == "worker":
    worker(sys.argv[2], sys.argv[3], int(sys.argv[4]), bool(int(sys.argv[5])), int(sys.argv[6]))
