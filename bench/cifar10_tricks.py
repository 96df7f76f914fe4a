"""Ablation of airbench's remaining tricks on lensforge's whitenet (JPEG CIFAR-10, bf16 on the CPU).

lensforge's engine runs whitenet without four things airbench94 has. This script trains the same
network (models/whitenet.py, the same data as `classify train --data cifar10-jpeg.zip`) in a loop of
its own that can switch them on, so their worth is measured before the engine grows options:

  --lookahead          airbench's Lookahead: every 5 steps the weights are pulled to an EMA whose
                       decay ramps as 0.95**5 * (step/total)**3, and the run ends on the EMA weights
  --reflect            2 px shifts fill the border by reflection (lensforge fills zeros)
  --sched triangle     lr from 0.2x up to the peak at 23% of the steps, down to 0.07x (lensforge:
                       from ~0 to the peak, down to 0)
  --wb-epochs 3        the whitening layer's bias trains for 3 epochs, then freezes
  --whiten-eps E       the eigenvalue floor of the whitening filters (models/whitenet.py: 5e-4);
                       a larger one damps the weakest 2x2-patch directions, where JPEG's
                       quantisation noise lives

Measured (bench/results/cifar10_tricks.json): all four together, 10 epochs, width 64 -> 0.9032
with flip+shift TTA (0.8985 plain), against 0.9034 for lensforge's own 10-epoch pilot
(bench/results/cifar10_pilot_bf16_whitening.md): no gain on this data, so the engine did not get them.
Whitening eps, 4-epoch runs (tags probe4_weps*): 5e-4 -> 0.8695, 5e-3 -> 0.8669, 5e-2 -> 0.8681 with
TTA (0.8611, 0.8600, 0.8633 plain): within noise, so damping the JPEG-noise directions buys nothing.

    flock /tmp/lensforge-cpu.lock .venv/bin/python bench/cifar10_tricks.py --epochs 10 --lookahead \
        --reflect --sched triangle --wb-epochs 3 --tag all4
"""
import argparse, json, time, sys, math, os, platform
from pathlib import Path
ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))
import torch, torch.nn.functional as F
from lensforge.data.folders import load_folder
from lensforge.models.whitenet import WhiteNet, _BatchNorm
from lensforge.models.classifiers import TestTimeAugment

p = argparse.ArgumentParser()
p.add_argument("--epochs", type=float, default=10)
p.add_argument("--lookahead", action="store_true")
p.add_argument("--reflect", action="store_true")
p.add_argument("--sched", default="onecycle")
p.add_argument("--wb-epochs", type=float, default=1e9)
p.add_argument("--precision", default="bf16")
p.add_argument("--width", type=int, default=64)
p.add_argument("--eps", type=float, default=1e-5)
p.add_argument("--whiten-eps", type=float, default=5e-4)
p.add_argument("--lr", type=float, default=1.5)
p.add_argument("--wd", type=float, default=1.33e-3)
p.add_argument("--seed", type=int, default=0)
p.add_argument("--tag", default="")
a = p.parse_args()
torch.manual_seed(a.seed)
torch.set_flush_denormal(True)
ds = load_folder(ROOT.parent / "shared" / "datasets" / "cifar10-jpeg.zip")
Xtr, Ytr = ds.train.images, ds.train.labels
Xte, Yte = ds.test.images, ds.test.labels
print(Xtr.shape, Xtr.dtype, Xte.shape, flush=True)
model = WhiteNet(width=a.width)
for m in model.modules():
    if isinstance(m, _BatchNorm): m.eps = a.eps
model.fit_to_data(Xtr[:5000], eps=a.whiten_eps)
model = model.to(memory_format=torch.channels_last)
norm = [p for m in model.modules() if isinstance(m, _BatchNorm) for p in m.parameters() if p.requires_grad]
ids = {id(p) for p in norm}
rest = [p for p in model.parameters() if p.requires_grad and id(p) not in ids]
bs = 1024
opt = torch.optim.SGD([dict(params=rest, lr=a.lr, weight_decay=a.wd), dict(params=norm, lr=a.lr*64, weight_decay=a.wd/64)],
                      momentum=0.85, nesterov=True)
for g in opt.param_groups: g["base"] = g["lr"]
steps_per_epoch = len(Xtr) // bs
total = int(a.epochs * steps_per_epoch)
def lrf(s):
    w = int(0.23 * total)
    if a.sched == "triangle":
        if s < w: f = s / w; return 0.2 * (1 - f) + f
        f = (s - w) / (total - w); return (1 - f) + 0.07 * f
    if s < w: return (s + 1) / w
    return 1 - (s - w) / (total - w)
ema = {k: v.detach().clone() for k, v in model.state_dict().items()} if a.lookahead else None
def la_update(decay):
    with torch.no_grad():
        for k, v in model.state_dict().items():
            if v.dtype.is_floating_point:
                ema[k].lerp_(v, 1 - decay); v.copy_(ema[k])
g = torch.Generator().manual_seed(a.seed)
phase = torch.randint(0, 2, (len(Xtr),), generator=g)
def batch(idx, ep):
    x = Xtr[idx]
    mirror = (phase[idx] ^ (ep % 2)).bool()
    x = torch.where(mirror[:, None, None, None], x.flip(-1), x)
    pad = 2
    xp = F.pad(x.float(), (pad,)*4, mode="reflect") if a.reflect else F.pad(x.float(), (pad,)*4)
    n = len(x)
    dy = torch.randint(0, 5, (n,), generator=g); dx = torch.randint(0, 5, (n,), generator=g)
    rows = (dy[:, None] + torch.arange(32))[:, None, :, None]
    cols = (dx[:, None] + torch.arange(32))[:, None, None, :]
    x = xp[torch.arange(n)[:, None, None, None], torch.arange(3)[None, :, None, None], rows, cols]
    return (x / 255).contiguous(memory_format=torch.channels_last), Ytr[idx]
def evaluate(tta):
    m = TestTimeAugment(model, tta).eval()
    correct = 0
    with torch.no_grad(), torch.autocast("cpu", torch.bfloat16, enabled=a.precision == "bf16"):
        for i in range(0, len(Xte), 2000):
            x = (Xte[i:i+2000].float() / 255).contiguous(memory_format=torch.channels_last)
            correct += (m(x).argmax(1) == Yte[i:i+2000]).sum().item()
    model.train()
    return correct / len(Xte)
step, t0 = 0, time.time()
log = []
ep = 0
while step < total:
    order = torch.randperm(len(Xtr), generator=g)
    if ep >= a.wb_epochs: model.whiten.bias.requires_grad_(False)
    te = time.time(); tl = 0; tc = 0
    for b in range(steps_per_epoch):
        if step >= total: break
        x, y = batch(order[b*bs:(b+1)*bs], ep)
        for gr in opt.param_groups: gr["lr"] = gr["base"] * lrf(step)
        with torch.autocast("cpu", torch.bfloat16, enabled=a.precision == "bf16"):
            out = model(x)
        loss = F.cross_entropy(out.float(), y, label_smoothing=0.2)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        step += 1
        if a.lookahead and step % 5 == 0:
            la_update(0.95**5 * (step / total) ** 3)
        tl += loss.item(); tc += (out.argmax(1) == y).float().mean().item()
    ep += 1
    if a.lookahead and step >= total: la_update(1.0)
    acc = evaluate("none")
    log.append(dict(epoch=ep, secs=round(time.time()-te, 1), loss=round(tl/steps_per_epoch, 4), train_acc=round(tc/steps_per_epoch, 4), test=acc))
    print(log[-1], flush=True)
res = dict(args=vars(a), plain=evaluate("none"), flip=evaluate("flip"), tta=evaluate("flip+shift"), train_secs=round(time.time()-t0), log=log)
print(json.dumps(res), flush=True)
res["machine"] = {"cpu": platform.processor() or platform.machine(), "cores": os.cpu_count()}
out = ROOT / "bench" / "results" / "cifar10_tricks.json"
runs = json.loads(out.read_text()) if out.is_file() else {}
runs[a.tag or "run"] = res
out.write_text(json.dumps(runs, indent=1) + "\n")
