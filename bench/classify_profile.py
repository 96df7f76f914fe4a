"""Where a CPU training step of `lensforge classify train --data fashion-mnist` goes, and how close
the CNN's training FLOP rate comes to this CPU's bf16 peak.

    python bench/classify_profile.py                       # ~2 minutes on the 2-core Xeon
    python bench/classify_profile.py --steps 60 --profiler-steps 10   # quicker, noisier

It builds the task exactly as the CLI does (ClassifyTask with the classify recipe, the runtime
chosen by select_runtime: bf16 autocast + channels_last on a CPU with AVX512-BF16/AMX), the same
AdamW parameter groups and weight EMA as engine/trainer.py, and then runs the engine's step by
hand with a timer around each phase:

  data       next(batch): index the uint8 tensor, augment the whole batch, to float / 255
  forward    autocast forward + label-smoothed cross-entropy + the batch accuracy (task.training_step)
  backward   zero_grad(set_to_none) + loss.backward()
  optimizer  the scheduled lr into the groups + AdamW step
  ema        the weight EMA's lerp over every parameter
  logs       the running sums and the float() of each log (what the engine does every step)
  evaluate   task.evaluate on the EMA weights: the whole 10,000-image test set, once per epoch

CPU ops run synchronously in the calling thread (intra-op threads join before an op returns), so
perf_counter around each phase is the phase's wall time; no synchronisation call is needed. The
step's sum is checked against an untimed run of the same steps.

FLOPs are counted from the network's layers (forward hooks on every Conv2d/Linear): forward
2 x MACs; backward 2 x MACs for the weight gradients plus 2 x MACs for the input gradients of
every layer but the first (its input needs no gradient); the usual "3 x forward" is given beside.
Batch norm, ReLU, pooling, the loss and the optimiser are memory-bound and not counted.
The bf16 peak is measured with large bf16 matmuls (oneDNN; AMX where the CPU has it) and also
stated from the ISA; see peak_reasoning in the output.
Writes bench/results/classify_profile.{json,md}.

    python bench/classify_profile.py --variants            # ~3 minutes: what would a change buy?

--variants times the same step (no phase timers, same batches) for changes to the classify path
that keep its results, each on a fresh copy of the same initial weights, and checks how exactly
they keep them (logits and gradients of one step compared bit for bit; parameters after 5 steps):
ReLU moved after the max-pool (max and ReLU commute, so forward and backward are the same
numbers on a quarter of the elements), AdamW fused / foreach instead of the per-tensor loop,
torch.compile (inductor) of the network, and the evaluation at batch 1024 instead of 512.
Writes bench/results/classify_profile_variants.{json,md}.
"""
from __future__ import annotations

import argparse
import copy
import json
import signal
import os
import platform
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(ROOT / "src"))
sys.path.insert(0, str(HERE))
from classify_speed import git_state  # noqa: E402  (one record of the measured commit for both benches)

from lensforge.data.augment import augment_batch  # noqa: E402
from lensforge.engine.ema import EMA  # noqa: E402
from lensforge.engine.schedule import lr_factor  # noqa: E402
from lensforge.engine.trainer import build_optimizer, seed_everything  # noqa: E402
from lensforge.tasks.classify import ClassifyTask  # noqa: E402
from lensforge.tasks.lifecycle import options_for  # noqa: E402
from lensforge.engine.device import select_runtime  # noqa: E402

PHASES = ("data", "forward", "backward", "optimizer", "ema", "logs")
DEFAULT_DATA_DIR = os.environ.get("LENSFORGE_DATA_DIR", str(ROOT.parent / "shared" / "datasets"))


def cpu_info() -> dict:
    info = {"cpu": platform.processor() or "unknown", "cores": os.cpu_count(), "torch": torch.__version__,
            "torch_threads": torch.get_num_threads()}
    try:
        text = open("/proc/cpuinfo").read()
        first = text.split("\n\n")[0]
        fields = dict(line.split(":", 1) for line in first.splitlines() if ":" in line)
        fields = {k.strip(): v.strip() for k, v in fields.items()}
        flags = set(fields.get("flags", "").split())
        info.update(cpu=fields.get("model name", info["cpu"]), family=fields.get("cpu family"), model=fields.get("model"),
                    stepping=fields.get("stepping"), mhz=fields.get("cpu MHz"),
                    isa=[f for f in ("avx512f", "avx512_bf16", "amx_bf16", "amx_tile", "amx_int8") if f in flags],
                    hypervisor="hypervisor" in flags)
    except OSError:
        pass
    return info


def build(data: str, data_dir: str):
    """The task, model, optimiser and EMA as `lensforge classify train --data <data>` builds them."""
    options = {"data": data, "data_dir": data_dir, "progress": False}
    opts, cfg = options_for(ClassifyTask, dict(options))
    rt = select_runtime(cfg.device, cfg.precision)
    task = ClassifyTask(opts, cfg, rt, None, frozenset(options))
    seed_everything(cfg.seed)
    fmt = torch.channels_last if rt.channels_last else torch.contiguous_format
    model = task.model.to(rt.device, memory_format=fmt)
    opt = build_optimizer(model, cfg, getattr(task, "adam_betas", (0.9, 0.99)))
    ema = EMA(model, cfg.ema) if cfg.ema > 0 else None
    return task, cfg, rt, model, opt, ema


def count_macs(model: torch.nn.Module, shape: tuple[int, ...]) -> list[dict]:
    """Per-image multiply-accumulates of every Conv2d / Linear, in forward order."""
    layers: list[dict] = []

    def hook(mod, inp, out):
        n = out.shape[0]
        if isinstance(mod, torch.nn.Conv2d):
            k = mod.kernel_size[0] * mod.kernel_size[1] * mod.in_channels // mod.groups
            macs = out[0].numel() * k
            desc = f"conv {mod.in_channels}->{mod.out_channels} k{mod.kernel_size[0]} out {tuple(out.shape[1:])}"
        else:
            macs = out[0].numel() * mod.in_features
            desc = f"linear {mod.in_features}->{mod.out_features}"
        layers.append({"layer": desc, "macs": int(macs), "batch": n})

    hs = [m.register_forward_hook(hook) for m in model.modules() if isinstance(m, (torch.nn.Conv2d, torch.nn.Linear))]
    was = model.training
    model.eval()
    with torch.no_grad():
        model(torch.zeros(2, *shape))
    model.train(was)
    for h in hs:
        h.remove()
    return layers


def matmul_rate(dtype, n: int, threads: int, seconds: float = 3.0) -> float:
    """FLOP/s of an n x n x n matmul in `dtype` on `threads` threads (best of repeated runs)."""
    old = torch.get_num_threads()
    torch.set_num_threads(threads)
    a, b = torch.randn(n, n).to(dtype), torch.randn(n, n).to(dtype)
    c = torch.empty(n, n, dtype=dtype)
    for _ in range(2):
        torch.mm(a, b, out=c)
    best, t_end = 0.0, time.perf_counter() + seconds
    while time.perf_counter() < t_end:
        t0 = time.perf_counter()
        torch.mm(a, b, out=c)
        best = max(best, 2 * n ** 3 / (time.perf_counter() - t0))
    torch.set_num_threads(old)
    return best


def layer_rate(shape, cin, cout, fmt, dtype, seconds=2.0) -> dict:
    """The CNN's big convolution alone (forward, and forward+backward), bf16 like autocast runs it."""
    conv = torch.nn.Conv2d(cin, cout, 3, 1, 1, bias=False).to(memory_format=fmt)
    x = torch.randn(*shape).to(memory_format=fmt).requires_grad_(True)
    n, _, h, w = shape
    macs = n * cout * h * w * cin * 9
    out = {}
    for name, train in (("forward", False), ("forward+backward", True)):
        best, t_end, it = 0.0, time.perf_counter() + seconds, 0
        while time.perf_counter() < t_end or it < 3:
            t0 = time.perf_counter()
            with torch.autocast("cpu", dtype=dtype):
                y = conv(x)
            if train:
                y.float().sum().backward()
            dt = time.perf_counter() - t0
            if it >= 1:
                flops = 2 * macs * (3 if train else 1)
                best = max(best, flops / dt)
            it += 1
        out[name] = best
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", default="fashion-mnist")
    ap.add_argument("--data-dir", default=DEFAULT_DATA_DIR)
    ap.add_argument("--steps", type=int, default=117, help="timed training steps (an epoch is 234)")
    ap.add_argument("--warmup", type=int, default=10, help="untimed steps first (oneDNN primitive creation)")
    ap.add_argument("--profiler-steps", type=int, default=20, help="steps under torch.profiler for the op table")
    ap.add_argument("--evals", type=int, default=2, help="timed evaluations of the test set")
    ap.add_argument("--out", default=str(HERE / "results" / "classify_profile"))
    ap.add_argument("--check", action="store_true", help="seconds, not minutes: tiny counts, for testing the script")
    ap.add_argument("--variants", action="store_true", help="time result-keeping changes to the step instead")
    a = ap.parse_args()
    if a.variants:
        return variants(a)
    big, secs = 4096, 3.0
    if a.check:
        a.steps, a.warmup, a.profiler_steps, a.evals, big, secs = 3, 1, 2, 1, 256, 0.1
        a.out = str(Path(a.out).with_name(Path(a.out).name + "-check"))

    t_start = time.perf_counter()
    task, cfg, rt, model, opt, ema = build(a.data, a.data_dir)
    loader = task.train_batches
    spe = len(loader)
    total_steps = spe * cfg.epochs
    shape = task.input_shape

    def lr_at(step):
        return cfg.lr * lr_factor(step, total_steps, cfg.schedule, cfg.warmup)

    times = {k: 0.0 for k in PHASES}
    sums: dict = {}
    n_batches = 0
    it = loader.epoch(0)
    model.train()

    def step(global_step: int, timed: bool):
        nonlocal n_batches
        t0 = time.perf_counter()
        batch = next(it)
        t1 = time.perf_counter()
        with rt.autocast():
            loss, logs = task.training_step(model, batch)
        t2 = time.perf_counter()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        t3 = time.perf_counter()
        for g in opt.param_groups:
            g["lr"] = lr_at(global_step) * g.get("lr_scale", 1.0)
        opt.step()
        t4 = time.perf_counter()
        if ema is not None:
            ema.update(model)
        t5 = time.perf_counter()
        for k, v in logs.items():
            sums[k] = sums.get(k, 0) + v.detach().float()
        n_batches += 1
        _ = {k: float(v) for k, v in sums.items()}
        t6 = time.perf_counter()
        if timed:
            for k, d in zip(PHASES, (t1 - t0, t2 - t1, t3 - t2, t4 - t3, t5 - t4, t6 - t5)):
                times[k] += d

    g = 0
    for _ in range(a.warmup):
        step(g, False)
        g += 1
    t0 = time.perf_counter()
    for _ in range(a.steps):
        step(g, True)
        g += 1
    timed_wall = time.perf_counter() - t0
    # The same number of steps again, with no timers between the phases: the timers' own cost.
    t0 = time.perf_counter()
    plain_steps = min(a.steps, spe - g - a.profiler_steps - 1)
    for _ in range(plain_steps):
        step(g, False)
        g += 1
    plain_wall = time.perf_counter() - t0

    # Operator table over a few steps (torch.profiler, self CPU time).
    from torch.profiler import ProfilerActivity, profile
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        for _ in range(a.profiler_steps):
            step(g, False)
            g += 1
    ka = prof.key_averages()
    prof_total = sum(e.self_cpu_time_total for e in ka)
    ops = sorted(ka, key=lambda e: e.self_cpu_time_total, reverse=True)[:18]
    op_table = [{"op": e.key, "self_ms_per_step": round(e.self_cpu_time_total / 1e3 / a.profiler_steps, 2),
                 "share": round(e.self_cpu_time_total / prof_total, 4), "calls_per_step": e.count / a.profiler_steps}
                for e in ops]

    # Evaluation as the engine runs it after each epoch (EMA weights, whole test set).
    eval_model = ema.model if ema is not None else model
    task.evaluate(eval_model)   # first call builds the eval-mode primitives
    eval_times = []
    for _ in range(a.evals):
        t0 = time.perf_counter()
        metrics = task.evaluate(eval_model)
        eval_times.append(time.perf_counter() - t0)
    model.train()
    eval_s = min(eval_times)
    n_test = len(task.eval_split)

    # The data phase, broken down on one batch's indices.
    data = loader.data
    idx = torch.randperm(len(data))[:cfg.batch_size]
    reps = 50
    t0 = time.perf_counter()
    for _ in range(reps):
        x, y = data.take(idx)
    take_s = (time.perf_counter() - t0) / reps
    gen = torch.Generator().manual_seed(0)
    t0 = time.perf_counter()
    for _ in range(reps):
        xa = augment_batch(x, **loader.augment.batch_kwargs(), generator=gen) if loader.augment else x
    aug_s = (time.perf_counter() - t0) / reps
    t0 = time.perf_counter()
    for _ in range(reps):
        xa.float().div_(255)
    float_s = (time.perf_counter() - t0) / reps

    # FLOPs.
    layers = count_macs(model, shape)
    macs = sum(l["macs"] for l in layers)
    fwd = 2 * macs
    bwd = 2 * macs + 2 * (macs - layers[0]["macs"])
    train_flops = fwd + bwd
    bs = cfg.batch_size
    step_s = timed_wall / a.steps
    img_s = bs / step_s
    fb_s = (times["forward"] + times["backward"]) / a.steps

    # Peaks.
    threads = torch.get_num_threads()
    peaks = {"bf16_matmul_4096_threads": matmul_rate(torch.bfloat16, big, threads, secs),
             "bf16_matmul_4096_1thread": matmul_rate(torch.bfloat16, big, 1, secs),
             "bf16_matmul_1024_threads": matmul_rate(torch.bfloat16, big // 4, threads, secs),
             "fp32_matmul_4096_threads": matmul_rate(torch.float32, big, threads, secs)}
    c_in, c_out = model.net[1][0].out_channels, model.net[3][0].out_channels
    h2, w2 = shape[1] // 2, shape[2] // 2
    conv_rates = layer_rate((bs, c_in, h2, w2), c_in, c_out, torch.channels_last, torch.bfloat16, secs)
    peak = peaks["bf16_matmul_4096_threads"]
    info = cpu_info()
    ghz = 2.1  # the TSC / nominal clock this VM reports (BogoMIPS 4200); turbo under KVM is not visible
    cores = os.cpu_count() or 1
    # No core retires more than 64 fp32 FLOP per cycle (two 16-lane AVX-512 FMA ports; oneDNN's fp32
    # matmul does not use AMX in its default strict fp32 mode), so the measured fp32 matmul sets a
    # floor under the clock the cores actually ran at.
    ghz_floor = peaks["fp32_matmul_4096_threads"] / (64 * cores) / 1e9
    theory = {"amx_bf16_flop_per_cycle_per_core": 1024, "avx512_bf16_flop_per_cycle_per_core": 128,
              "avx512_fp32_flop_per_cycle_per_core": 64, "ghz_nominal": ghz, "cores": cores,
              "ghz_at_least_from_fp32_matmul": round(ghz_floor, 2),
              "amx_bf16_peak": 1024 * ghz * 1e9 * cores, "avx512_bf16_peak": 128 * ghz * 1e9 * cores,
              "avx512_fp32_peak": 64 * ghz * 1e9 * cores,
              "amx_bf16_peak_at_floor_clock": 1024 * max(ghz, ghz_floor) * 1e9 * cores}
    reasoning = ("AMX TDPBF16PS multiplies a 16x32 bf16 tile by a 32x16 tile into 16x16 fp32: 8,192 MACs per "
                 "instruction at one instruction per 16 cycles per core = 512 MACs = 1,024 FLOP/cycle/core "
                 "(Intel's '1,024 BF16 ops per cycle per core'). AVX512-BF16 VDPBF16PS: 16 lanes x 2 MACs on 2 FMA "
                 "ports = 128 FLOP/cycle/core; fp32 AVX-512 FMA: 64 FLOP/cycle/core. At the 2.1 GHz nominal clock "
                 f"this VM reports and {cores} vCPUs: {theory['amx_bf16_peak'] / 1e12:.1f} TFLOP/s AMX bf16, "
                 f"{theory['avx512_bf16_peak'] / 1e12:.2f} AVX512-BF16, {theory['avx512_fp32_peak'] / 1e12:.2f} fp32. "
                 f"The fp32 matmul measured {peaks['fp32_matmul_4096_threads'] / 1e12:.3f} TFLOP/s, which needs at "
                 f"least {ghz_floor:.2f} GHz at 64 FLOP/cycle/core, so the cores ran above nominal (turbo) and the "
                 f"AMX ceiling is at least {theory['amx_bf16_peak_at_floor_clock'] / 1e12:.1f} TFLOP/s; AMX licence "
                 "clocks may be lower than the AVX-512 ones. Whether the two vCPUs are two physical cores or one "
                 "core's hyper-threads is not visible inside the VM.")

    per_step = {k: v / a.steps for k, v in times.items()}
    epoch_train = step_s * spe
    res = {
        "command": "python bench/classify_profile.py " + " ".join(sys.argv[1:]),
        "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "machine": info, "git": git_state(),
        "run": {"data": a.data, "model": task.model_name, "batch_size": bs, "precision": rt.precision,
                "channels_last": rt.channels_last, "steps_per_epoch": spe, "epochs": cfg.epochs, "lr": cfg.lr,
                "ema": cfg.ema, "augment": task.augment.to_dict(), "timed_steps": a.steps, "warmup_steps": a.warmup},
        "step_ms": {k: round(v * 1e3, 2) for k, v in per_step.items()} | {"total": round(step_s * 1e3, 2)},
        "step_share": {k: round(v / step_s, 4) for k, v in per_step.items()},
        "timer_overhead_check": {"timed_step_ms": round(step_s * 1e3, 2),
                                 "untimed_step_ms": round(plain_wall / max(1, plain_steps) * 1e3, 2),
                                 "untimed_steps": plain_steps},
        "train_images_per_s": round(img_s, 1),
        "evaluate": {"seconds": round(eval_s, 3), "all_runs": [round(t, 3) for t in eval_times], "images": n_test,
                     "images_per_s": round(n_test / eval_s, 1), "test_accuracy_now": metrics.get("test_accuracy")},
        "epoch_estimate": {"train_seconds": round(epoch_train, 2), "evaluate_seconds": round(eval_s, 2),
                           "evaluate_share": round(eval_s / (epoch_train + eval_s), 4)},
        "data_breakdown_ms": {"take": round(take_s * 1e3, 3), "augment": round(aug_s * 1e3, 3),
                              "to_float_div255": round(float_s * 1e3, 3)},
        "flops": {"layers": layers, "forward_macs_per_image": macs, "forward_flops_per_image": fwd,
                  "train_flops_per_image": train_flops, "train_flops_per_image_3x_rule": 3 * fwd,
                  "eval_flops_per_image": fwd},
        "achieved": {"train_flop_per_s_whole_step": train_flops * img_s,
                     "train_flop_per_s_forward_backward_only": train_flops * bs / fb_s,
                     "share_of_measured_bf16_matmul_peak": round(train_flops * img_s / peak, 4),
                     "share_of_theoretical_amx_peak": round(train_flops * img_s / theory["amx_bf16_peak"], 4),
                     "share_of_amx_peak_at_floor_clock": round(train_flops * img_s / theory["amx_bf16_peak_at_floor_clock"], 4),
                     "conv2_alone_bf16_flop_per_s": {k: round(v) for k, v in conv_rates.items()},
                     "eval_flop_per_s": fwd * n_test / eval_s},
        "peak_measured_flop_per_s": {k: round(v) for k, v in peaks.items()},
        "peak_theoretical": theory, "peak_reasoning": reasoning,
        "top_ops": op_table, "profiler_steps": a.profiler_steps,
        "wall_seconds": round(time.perf_counter() - t_start, 1),
    }
    out = Path(a.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".json").write_text(json.dumps(res, indent=1))
    out.with_suffix(".md").write_text(markdown(res))
    print(markdown(res))
    return 0


def relu_after_pool(model: torch.nn.Module) -> torch.nn.Module:
    """A copy of the CNN with each conv block's ReLU moved after its max-pool (same parameters and
    state_dict keys: the ReLU has none). max(relu(x)) == relu(max(x)) for every window, and the
    gradient reaches the same element (the window's arg-max when the max is positive, nothing
    otherwise), so the numbers are the same and the ReLU touches a quarter of the elements."""
    m = copy.deepcopy(model)
    net = m.net
    for block, pool in ((1, 2), (3, 4)):
        assert isinstance(net[block][2], torch.nn.ReLU) and isinstance(net[pool], torch.nn.MaxPool2d)
        net[block][2] = torch.nn.Identity()
        net[pool] = torch.nn.Sequential(net[pool], torch.nn.ReLU(inplace=True))
    return m


def variants(a) -> int:
    """Time the training step (and the evaluation) for result-keeping changes; see the docstring."""
    t_start = time.perf_counter()
    task, cfg, rt, model0, _, _ = build(a.data, a.data_dir)
    init = copy.deepcopy(model0.state_dict())
    loader = task.train_batches
    spe = len(loader)
    total_steps = spe * cfg.epochs
    steps, warm = (3, 1) if a.check else (60, 10)
    batches = []
    for i, b in enumerate(loader.epoch(0)):   # the same batches for every variant, fetched once
        batches.append(b)
        if len(batches) == max(5, warm + steps):
            break

    def make(kind: str):
        model = copy.deepcopy(model0)
        model.load_state_dict(init)
        if kind == "relu_after_pool":
            model = relu_after_pool(model)
        opt = build_optimizer(model, cfg, getattr(task, "adam_betas", (0.9, 0.99)))
        if kind in ("adamw_fused", "adamw_foreach"):
            groups = [{k: v for k, v in g.items() if k not in ("lr",)} for g in opt.param_groups]
            flag = {"fused": True} if kind == "adamw_fused" else {"foreach": True}
            opt = torch.optim.AdamW(groups, lr=cfg.lr, betas=getattr(task, "adam_betas", (0.9, 0.99)), **flag)
        ema = EMA(model, cfg.ema) if cfg.ema > 0 else None
        step_model = torch.compile(model) if kind == "compile" else model
        return model, step_model, opt, ema

    def one_step(model, step_model, opt, ema, batch, gstep):
        with rt.autocast():
            loss, logs = task.training_step(step_model, batch)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        for g in opt.param_groups:
            g["lr"] = cfg.lr * lr_factor(gstep, total_steps, cfg.schedule, cfg.warmup) * g.get("lr_scale", 1.0)
        opt.step()
        if ema is not None:
            ema.update(model)
        _ = {k: float(v) for k, v in logs.items()}
        return loss

    def first_step_numbers(kind):
        """Logits and gradients of step 1 and the parameters after 5 steps, for the exactness check."""
        torch.manual_seed(0)
        model, step_model, opt, ema = make(kind)
        model.train()
        x, y = batches[0]
        with rt.autocast():
            logits = step_model(x.contiguous(memory_format=task.fmt))
            loss = F.cross_entropy(logits.float(), y, label_smoothing=task.opts.label_smoothing)
        loss.backward()
        grads = [p.grad.detach().clone() for p in model.parameters()]
        opt.zero_grad(set_to_none=True)
        for i in range(5):
            one_step(model, step_model, opt, ema, batches[i], i)
        return logits.detach().float(), grads, [p.detach().clone() for p in model.parameters()]

    def compare(ref, other) -> dict:
        (l0, g0, p0), (l1, g1, p1) = ref, other
        return {"logits_identical": bool(torch.equal(l0, l1)), "logits_max_abs_diff": float((l0 - l1).abs().max()),
                "grads_identical": all(torch.equal(u, v) for u, v in zip(g0, g1)),
                "grads_max_rel_diff": max(float((u - v).abs().max() / u.abs().max().clamp_min(1e-30)) for u, v in zip(g0, g1)),
                "params_after_5_steps_identical": all(torch.equal(u, v) for u, v in zip(p0, p1)),
                "params_after_5_steps_max_abs_diff": max(float((u - v).abs().max()) for u, v in zip(p0, p1))}

    kinds = ["baseline", "relu_after_pool", "adamw_fused", "adamw_foreach", "compile"]

    class Stop(Exception):
        pass

    def stop(*_):
        raise Stop()

    # A time limit (timeout's SIGTERM) ends the variant in progress; the ones done are still written.
    signal.signal(signal.SIGTERM, stop)
    out: dict = {}
    interrupted = False
    try:
        ref = first_step_numbers("baseline")
    except Stop:
        return 143
    for kind in kinds:
        try:
            exact = compare(ref, first_step_numbers(kind)) if kind != "baseline" else None
            torch.manual_seed(0)
            model, step_model, opt, ema = make(kind)
            model.train()
            t0 = time.perf_counter()
            for i in range(warm):
                one_step(model, step_model, opt, ema, batches[i], i)
            warm_s = time.perf_counter() - t0
            t0 = time.perf_counter()
            for i in range(warm, warm + steps):
                one_step(model, step_model, opt, ema, batches[i], i)
            step_s = (time.perf_counter() - t0) / steps
            out[kind] = {"step_ms": round(step_s * 1e3, 2), "images_per_s": round(cfg.batch_size / step_s, 1),
                         "first_steps_s": round(warm_s, 2), "exactness": exact}
        except Stop:
            out[kind] = {"error": "stopped by SIGTERM (time limit) before it finished"}
            interrupted = True
        except Exception as e:  # e.g. inductor without a C++ compiler: recorded, the others still run
            out[kind] = {"error": f"{type(e).__name__}: {str(e)[:300]}"}
        print(kind, out[kind], flush=True)
        if interrupted:
            break
    base = out.get("baseline", {}).get("step_ms")
    for kind in kinds[1:]:
        if base and "step_ms" in out.get(kind, {}):
            out[kind]["vs_baseline"] = round(out[kind]["step_ms"] / base, 3)
    # Evaluation batch size (the engine's per-epoch evaluation uses predict_logits' default, 512).
    from lensforge.tasks.classify import predict_logits
    ev = copy.deepcopy(model0).eval()
    evals = {}
    for bs in (() if interrupted else (512, 1024)):
        predict_logits(ev, task.eval_split, rt, batch_size=bs)
        best = min((lambda t0: (predict_logits(ev, task.eval_split, rt, batch_size=bs), time.perf_counter() - t0)[1])(
            time.perf_counter()) for _ in range(1 if a.check else 3))
        evals[str(bs)] = round(best, 3)
    res = {"command": "python bench/classify_profile.py " + " ".join(sys.argv[1:]),
           "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "machine": cpu_info(), "git": git_state(),
           "timed_steps": steps, "warmup_steps": warm, "batch_size": cfg.batch_size, "precision": rt.precision,
           "variants": out, "evaluate_seconds_by_batch": evals, "wall_seconds": round(time.perf_counter() - t_start, 1)}
    path = Path(a.out).with_name(Path(a.out).name + "_variants" + ("-check" if a.check else ""))
    path.with_suffix(".json").write_text(json.dumps(res, indent=1))
    lines = ["# lensforge classify: result-keeping changes to the CPU step, timed", "",
             f"- command: `{res['command']}`; date {res['date']}; {res['machine']['cpu']} "
             f"({', '.join(res['machine'].get('isa', []))}), {res['machine']['torch_threads']} threads",
             f"- {steps} timed steps after {warm} untimed ones, the same batches for every variant, batch "
             f"{cfg.batch_size}, {rt.precision}; exactness: step-1 logits and gradients bit for bit, parameters after 5 steps", "",
             "| variant | ms / step | vs baseline | first steps (s) | logits same | grads same | params after 5 same (max diff) |",
             "|---|---|---|---|---|---|---|"]
    for kind, r in out.items():
        if "error" in r:
            lines.append(f"| {kind} | failed: {r['error']} | | | | | |")
            continue
        e = r["exactness"] or {}
        lines.append(f"| {kind} | {r['step_ms']:.2f} | {r.get('vs_baseline', 1.0):.3f} | {r['first_steps_s']:.1f} | "
                     f"{e.get('logits_identical', '-')} | {e.get('grads_identical', '-')} | "
                     f"{e.get('params_after_5_steps_identical', '-')}"
                     + (f" ({e['params_after_5_steps_max_abs_diff']:.2g})" if e else "") + " |")
    if evals:
        lines += ["", "Evaluation of the 10,000 test images: " + ", ".join(f"batch {k}: {v:.2f} s" for k, v in evals.items())]
    lines.append("")
    path.with_suffix(".md").write_text("\n".join(lines))
    print("\n".join(lines))
    return 0


def tf(x: float) -> str:
    return f"{x / 1e12:.3f} TFLOP/s" if x >= 1e11 else f"{x / 1e9:.1f} GFLOP/s"


def markdown(r: dict) -> str:
    m, run, ms, sh = r["machine"], r["run"], r["step_ms"], r["step_share"]
    fl, ach, pk, th = r["flops"], r["achieved"], r["peak_measured_flop_per_s"], r["peak_theoretical"]
    lines = ["# lensforge classify: where a CPU training step goes", "",
             f"- command: `{r['command']}`; date {r['date']}",
             f"- machine: {m['cpu']} (family {m.get('family')} model {m.get('model')} stepping {m.get('stepping')}; "
             f"{', '.join(m.get('isa', []))}), {m['cores']} vCPUs, {m['torch_threads']} torch threads, torch {m['torch']}",
             f"- run: `lensforge classify train --data {run['data']}` as built by the CLI: {run['model']}, batch "
             f"{run['batch_size']}, {run['precision']} autocast, channels_last {run['channels_last']}, "
             f"{run['steps_per_epoch']} steps/epoch; {run['timed_steps']} timed steps after {run['warmup_steps']} warm-up", "",
             "## One training step", "", "| phase | ms / step | share |", "|---|---|---|"]
    for k in PHASES:
        lines.append(f"| {k} | {ms[k]:.2f} | {sh[k] * 100:.1f} % |")
    ov = r["timer_overhead_check"]
    lines += [f"| **step** | **{ms['total']:.2f}** | 100 % |", "",
              f"{r['train_images_per_s']:.0f} training images/s. The same steps without the phase timers: "
              f"{ov['untimed_step_ms']:.2f} ms/step ({ov['untimed_steps']} steps).",
              f"Data phase on one batch: take {r['data_breakdown_ms']['take']:.2f} ms, augment "
              f"{r['data_breakdown_ms']['augment']:.2f} ms, to float / 255 {r['data_breakdown_ms']['to_float_div255']:.2f} ms.", "",
              "## Per epoch", "",
              f"Training {r['epoch_estimate']['train_seconds']:.1f} s ({run['steps_per_epoch']} steps) + evaluation "
              f"{r['evaluate']['seconds']:.2f} s ({r['evaluate']['images']:,} test images on the EMA weights, "
              f"{r['evaluate']['images_per_s']:,.0f} img/s) = evaluation "
              f"{r['epoch_estimate']['evaluate_share'] * 100:.1f} % of an epoch.", "",
              "## FLOPs", "", "| layer | MACs / image |", "|---|---|"]
    for l in fl["layers"]:
        lines.append(f"| {l['layer']} | {l['macs']:,} |")
    lines += ["", f"Forward {fl['forward_flops_per_image'] / 1e6:.1f} MFLOP/image; training (forward + weight and input "
              f"gradients, the first layer's input gradient not needed) {fl['train_flops_per_image'] / 1e6:.1f} MFLOP/image "
              f"({fl['train_flops_per_image_3x_rule'] / 1e6:.1f} by the 3 x forward rule).", "",
              "## Achieved vs peak", "", "| what | rate |", "|---|---|",
              f"| training, whole step (data, optimiser, EMA included) | {tf(ach['train_flop_per_s_whole_step'])} |",
              f"| training, forward + backward time only | {tf(ach['train_flop_per_s_forward_backward_only'])} |",
              f"| evaluation (forward only) | {tf(ach['eval_flop_per_s'])} |",
              f"| the 64->128 conv alone, bf16 channels_last, forward | {tf(ach['conv2_alone_bf16_flop_per_s']['forward'])} |",
              f"| the 64->128 conv alone, forward + backward | {tf(ach['conv2_alone_bf16_flop_per_s']['forward+backward'])} |",
              f"| bf16 matmul 4096^3, {m['torch_threads']} threads (measured peak) | {tf(pk['bf16_matmul_4096_threads'])} |",
              f"| bf16 matmul 4096^3, 1 thread | {tf(pk['bf16_matmul_4096_1thread'])} |",
              f"| bf16 matmul 1024^3, {m['torch_threads']} threads | {tf(pk['bf16_matmul_1024_threads'])} |",
              f"| fp32 matmul 4096^3, {m['torch_threads']} threads | {tf(pk['fp32_matmul_4096_threads'])} |",
              f"| theoretical AMX bf16 ({th['cores']} cores x 1,024 FLOP/cycle x {th['ghz_nominal']} GHz nominal) | {tf(th['amx_bf16_peak'])} |",
              f"| theoretical AMX bf16 at the {th['ghz_at_least_from_fp32_matmul']} GHz the fp32 matmul proves | {tf(th['amx_bf16_peak_at_floor_clock'])} |",
              f"| theoretical AVX512-BF16 | {tf(th['avx512_bf16_peak'])} |", "",
              f"The whole training step runs at {ach['share_of_measured_bf16_matmul_peak'] * 100:.1f} % of the measured bf16 "
              f"matmul peak, {ach['share_of_theoretical_amx_peak'] * 100:.1f} % of the theoretical AMX peak at the nominal "
              f"clock and {ach['share_of_amx_peak_at_floor_clock'] * 100:.1f} % at the clock the fp32 matmul proves.", "",
              r["peak_reasoning"], "",
              f"## Top operators (torch.profiler, self CPU time, {r['profiler_steps']} steps)", "",
              "| op | ms / step | share | calls / step |", "|---|---|---|---|"]
    for o in r["top_ops"]:
        lines.append(f"| `{o['op']}` | {o['self_ms_per_step']:.2f} | {o['share'] * 100:.1f} % | {o['calls_per_step']:g} |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    sys.exit(main())
