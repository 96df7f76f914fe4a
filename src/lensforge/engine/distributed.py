"""Data-parallel training across processes (torchrun / torch.distributed), used by engine.trainer.fit.

    torchrun --nproc-per-node 2 -m lensforge classify train --data digits        # one machine
    torchrun --nnodes 2 --node-rank R --nproc-per-node 2 --rdzv-backend c10d \
             --rdzv-endpoint HOST:29400 -m lensforge classify train ...            # several

A process started by torchrun finds RANK, WORLD_SIZE, LOCAL_RANK and the rendezvous in its
environment; `init()` joins the group (gloo on CPU, NCCL on CUDA) with a finite timeout, so a rank
that dies makes the others fail with a message instead of waiting forever. What the engine does
with it (trainer.py): the model is wrapped in DistributedDataParallel, other trainable networks a
task holds (a GAN's discriminator) have their gradients averaged the same way, the training batches
are sharded by rank (data/loader.py: every rank draws the same seeded permutation and takes its
slice of each global batch, so `--batch-size` stays the global batch), logged metrics are averaged
over ranks, evaluation runs on rank 0 and its numbers are broadcast, and only rank 0 writes
metrics.csv and checkpoints (whose weights carry no DDP prefix: they load in a single process).
"""
from __future__ import annotations

import atexit
import datetime
import os
import sys
from dataclasses import dataclass

import torch
import torch.distributed as dist

from ..errors import UsageError

#: Seconds a collective may wait for a peer before the job fails (a dead or stuck rank).
#: Evaluation runs on rank 0 while the others wait in a broadcast, so this bounds eval time too.
DEFAULT_TIMEOUT = 1800


@dataclass(frozen=True)
class Context:
    rank: int = 0
    world: int = 1
    local_rank: int = 0
    backend: str | None = None

    @property
    def active(self) -> bool:
        return self.world > 1

    @property
    def main(self) -> bool:
        return self.rank == 0


_SINGLE = Context()


def env_world() -> int:
    try:
        return int(os.environ.get("WORLD_SIZE", "1"))
    except ValueError:
        return 1


def init(device: str = "auto") -> Context:
    """Join the process group torchrun (or a test) described in the environment; a no-op context
    for a single process. Idempotent."""
    if dist.is_available() and dist.is_initialized():
        return current()
    world = env_world()
    if world <= 1:
        return _SINGLE
    if not dist.is_available():
        raise UsageError("this PyTorch build has no torch.distributed; run a single process")
    rank, local = int(os.environ["RANK"]), int(os.environ.get("LOCAL_RANK", "0"))
    cuda = device != "cpu" and not str(device).startswith("cpu") and torch.cuda.is_available()
    backend = "nccl" if cuda else "gloo"
    if cuda:
        torch.cuda.set_device(local % torch.cuda.device_count())
    timeout = datetime.timedelta(seconds=float(os.environ.get("LENSFORGE_DIST_TIMEOUT", DEFAULT_TIMEOUT)))
    try:
        dist.init_process_group(backend, timeout=timeout)
    except Exception as e:  # noqa: BLE001 -- rendezvous failures come in many types
        raise UsageError(f"rank {rank}: could not join the process group ({backend}, "
                         f"{os.environ.get('MASTER_ADDR', '?')}:{os.environ.get('MASTER_PORT', '?')}): "
                         f"{(str(e).splitlines() or [''])[0][:200]}") from None
    if rank != 0 and not os.environ.get("LENSFORGE_ALL_RANKS_PRINT"):
        # One job, one output: the other ranks' stdout (the CLI's result lines) would repeat rank 0's.
        # Their stderr stays: an error on any rank is still shown.
        sys.stdout = open(os.devnull, "w")
    atexit.register(shutdown)
    return Context(rank, world, local, backend)


def current() -> Context:
    if dist.is_available() and dist.is_initialized():
        return Context(dist.get_rank(), dist.get_world_size(), int(os.environ.get("LOCAL_RANK", "0")),
                       dist.get_backend())
    return _SINGLE


def is_main() -> bool:
    return current().main


def average(values: dict[str, torch.Tensor], device) -> dict[str, torch.Tensor]:
    """Means over ranks of scalar tensors (one all_reduce for all of them)."""
    ctx = current()
    if not ctx.active or not values:
        return values
    keys = sorted(values)
    flat = torch.stack([torch.as_tensor(values[k], dtype=torch.float64).reshape(()).to(device) for k in keys])
    dist.all_reduce(flat, op=dist.ReduceOp.SUM)
    flat = (flat / ctx.world).cpu()
    return {k: flat[i] for i, k in enumerate(keys)}


def broadcast(obj, src: int = 0):
    """`obj` of rank `src` on every rank (pickled by torch.distributed between our own processes)."""
    if not current().active:
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=src)
    return box[0]


def barrier() -> None:
    if current().active:
        dist.barrier()


def wrap(model: torch.nn.Module) -> torch.nn.Module:
    """The model as the training step should call it: DDP over the group (weights broadcast from
    rank 0 at construction, gradients averaged during backward)."""
    ctx = current()
    if not ctx.active:
        return model
    from torch.nn.parallel import DistributedDataParallel as DDP

    dev = next(model.parameters()).device
    return DDP(model, device_ids=[dev.index] if dev.type == "cuda" else None)


def sync_extra_networks(task, model: torch.nn.Module) -> list[str]:
    """Average the gradients of every other trainable network the task holds (a GAN's
    discriminator, stepped inside training_step by the task's own optimiser) across ranks.

    Those networks are called several times per step (real, fake, generator pass), which DDP's
    reducer does not allow, so instead their weights are broadcast from rank 0 once and a hook
    all-reduces each parameter's gradient right after it is accumulated; every rank runs the same
    graph, so the hooks fire in the same order everywhere. Returns the attribute names synced.
    """
    ctx = current()
    if not ctx.active:
        return []
    names = []
    for name, value in sorted(vars(task).items()):
        if not isinstance(value, torch.nn.Module) or value is model or value is getattr(task, "model", None):
            continue
        params = [p for p in value.parameters() if p.requires_grad]
        if not params:
            continue
        for t in list(value.parameters()) + list(value.buffers()):
            dist.broadcast(t.data, src=0)
        for p in params:
            p.register_post_accumulate_grad_hook(_average_grad)
        names.append(name)
    return names


def _average_grad(p: torch.Tensor) -> None:
    dist.all_reduce(p.grad, op=dist.ReduceOp.SUM)
    p.grad.div_(dist.get_world_size())


def shutdown() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def step_seed(seed: int, epoch: int, step: int, rank: int) -> int:
    """The RNG seed of one training step on one rank: a distributed run reseeds every step, so each
    rank draws its own noise (GAN latents, dropout) and resume needs no per-rank RNG state."""
    s = 0
    for k in (seed, epoch, step, rank, 31):
        s = (s * 1_000_003 + int(k) + 1) % (2 ** 63 - 1)
    return s


def convert_sync_bn(model: torch.nn.Module) -> torch.nn.Module:
    """Batch norms that compute their statistics over the global batch (all ranks); the state_dict
    keys stay those of BatchNorm, so checkpoints still load in a single process. PyTorch's
    SyncBatchNorm has GPU kernels only."""
    dev = next(model.parameters()).device
    if dev.type == "cpu":
        raise UsageError("--sync-bn needs CUDA: PyTorch's SyncBatchNorm has no CPU implementation")
    return torch.nn.SyncBatchNorm.convert_sync_batchnorm(model)


_PEER_SIGNS = ("connection closed by peer", "connection reset", "broken pipe", "timed out", "timeout",
               "nccl", "gloo", "socket", "recv", "send", "peer")


def is_peer_failure(e: BaseException) -> bool:
    """True for the errors a collective raises when another rank died or stopped answering."""
    name = type(e).__name__
    text = str(e).lower()
    return name in ("DistBackendError", "DistNetworkError", "DistError") or any(s in text for s in _PEER_SIGNS)


def peer_failure(ctx: Context, e: BaseException, run_dir) -> Exception:
    from ..errors import LensforgeError

    detail = (str(e).strip().splitlines() or [""])[-1][:160]
    return LensforgeError(f"rank {ctx.rank}: another process of the {ctx.world}-process job failed or stopped "
                          f"answering ({type(e).__name__}: {detail}); {run_dir}/weights/last.pt holds the last "
                          f"completed epoch: continue with --resume {run_dir} and the same process count")


def torchrun_command(nproc: int, argv: list[str]) -> list[str]:
    """`lensforge TASK train --nproc N ...` on one machine: the torchrun command that runs the same
    arguments (without --nproc) in N processes (c10d rendezvous on a free local port)."""
    return [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", str(nproc),
            "--max-restarts", "0", "-m", "lensforge", *argv]


def relaunch_with_torchrun(argv: list[str]) -> int | None:
    """`lensforge TASK train --nproc N ...` on one machine: run the same command under torchrun in N
    processes and return its exit code. None when there is nothing to do (no --nproc, N = 1, or
    already inside a distributed job), so the caller goes on as usual."""
    if "--nproc" not in argv or env_world() > 1:
        return None
    i = argv.index("--nproc")
    try:
        n = int(argv[i + 1])
    except (IndexError, ValueError):
        raise UsageError("--nproc N: N must be a whole number of processes") from None
    if not 1 <= n <= 1024:
        raise UsageError(f"--nproc {n}: must be between 1 and 1024")
    if n == 1:
        return None
    import subprocess

    return subprocess.call(torchrun_command(n, argv[:i] + argv[i + 2:]))
