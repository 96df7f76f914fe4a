"""Distributed training when things go wrong, and across "nodes": a rank killed mid-epoch takes the
job down with one clear line and a valid last.pt, a 2-process resume then completes, a single
process may not continue it; two torchrun invocations with --nnodes 2 and a localhost c10d
rendezvous complete a run. Workers and launching: test_ddp.py."""
from __future__ import annotations

import os
import subprocess
import sys

import pytest

from test_ddp import CLASSIFY, HERE, ROOT, TIMEOUT, free_port, launch, reports, same_rows


def test_dead_rank_fails_the_job_with_one_line_and_resume_completes(tmp_path):
    out = tmp_path / "ddp"
    procs = launch(out, epochs=2, die_at_step=22 + 5)      # rank 1 crashes in epoch 2 (22 steps per epoch)
    assert procs[1].returncode == 3 and procs[0].returncode == 1
    err = [l for l in procs[0].stderr.strip().splitlines() if l.startswith("lensforge:")]
    assert len(err) == 1 and "another process of the 2-process job failed" in err[0] and "--resume" in err[0]
    assert "Traceback" not in procs[0].stderr
    from lensforge.engine.checkpoint import load_checkpoint
    last = load_checkpoint(out / "weights" / "last.pt", task="classify")
    assert last["epoch"] == 1 and last["world_size"] == 2
    procs = launch(out, epochs=2, resume=True)
    assert [p.returncode for p in procs] == [0, 0], procs[0].stderr[-2000:]
    r0 = reports(out)[0]
    assert [h["epoch"] for h in r0["history"]] == [1, 2] and r0["test_accuracy"] > 0.8
    # a single process may not continue it: every rank's shard would change under it
    from lensforge.engine.device import select_runtime
    from lensforge.engine.trainer import fit
    from lensforge.errors import UsageError
    from lensforge.tasks.classify import ClassifyTask
    from lensforge.tasks.lifecycle import options_for
    state = load_checkpoint(out / "weights" / "last.pt", task="classify")
    opts, cfg = options_for(ClassifyTask, {**CLASSIFY, "epochs": 3})
    task = ClassifyTask(opts, cfg, select_runtime("cpu", "fp32"), state, frozenset(CLASSIFY))
    with pytest.raises(UsageError, match="trained by 2 process\\(es\\); resume it with the same number"):
        fit(task, cfg, out, resume=state)


def test_simulated_two_node_job_with_torchrun(tmp_path):
    """Two torchrun invocations on this machine, --nnodes 2, one process each, c10d rendezvous."""
    out, port = tmp_path / "nodes", free_port()
    env = {**os.environ, "OMP_NUM_THREADS": "1", "LENSFORGE_DIST_TIMEOUT": "60", "PYTHONPATH": str(ROOT / "src")}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nnodes", "2", "--nproc-per-node", "1",
           "--rdzv-backend", "c10d", "--rdzv-endpoint", f"127.0.0.1:{port}", "--rdzv-id", "lensforge-test",
           "--max-restarts", "0", str(HERE), "worker", str(out), "classify", "1", "0", "0"]
    nodes = [subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for _ in range(2)]
    results = []
    for p in nodes:
        try:
            results.append((p.wait(timeout=TIMEOUT), p.stderr.read()))
        except subprocess.TimeoutExpired:
            for q in nodes:
                q.kill()
            raise AssertionError("the 2-node job hung")
    assert [c for c, _ in results] == [0, 0], results[0][1][-2000:] + results[1][1][-2000:]
    r = reports(out)
    assert {x["rank"] for x in r} == {0, 1} and all(x["world"] == 2 for x in r)
    assert same_rows(r[0]["history"], r[1]["history"]) and (out / "weights" / "last.pt").is_file()
