"""The post-DCGAN recipe of `lensforge gan train` (--spectral-norm, --loss): hinge loss values, spectral norm of D,
a run on that recipe that learns, reloads and samples, the defaults unchanged, and checkpoints written
before the recipe existed (no spectral_norm in d_kwargs, no loss in the options) still loading and
resuming as the batch-norm, BCE GAN they were."""
from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from lensforge.engine.checkpoint import load_checkpoint, save_checkpoint
from lensforge.errors import UsageError
from lensforge.models import create_model
from lensforge.tasks import gan
from test_autoencode import write_folder

TINY = dict(latent_dim=16, width=8, batch_size=16, lr=3e-3, fd_classifier="none", augment="off", progress=False)


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    return write_folder(tmp_path_factory.mktemp("blobs"), n=160)


def test_hinge_loss_on_known_logits():
    real = torch.tensor([2.0, 0.5, -1.0])
    fake = torch.tensor([-2.0, 0.0, 1.0])
    # relu(1 - real) = [0, 0.5, 2] -> 5/6; relu(1 + fake) = [0, 1, 2] -> 1
    assert gan.hinge_d_loss(real, fake).item() == pytest.approx(5 / 6 + 1.0)
    assert gan.hinge_g_loss(fake).item() == pytest.approx(1 / 3)
    # samples separated beyond the margin cost D nothing (BCE would still push them)
    assert gan.hinge_d_loss(torch.tensor([1.5, 3.0]), torch.tensor([-1.0, -4.0])).item() == 0.0
    assert gan.bce_d_loss(torch.zeros(4), torch.zeros(4)).item() == pytest.approx(2 * math.log(2))
    assert gan.bce_g_loss(torch.zeros(4)).item() == pytest.approx(math.log(2))


def test_loss_auto_follows_the_discriminator():
    assert gan.resolve_loss("auto", True) == "hinge" and gan.resolve_loss("auto", False) == "bce"
    assert gan.resolve_loss("bce", True) == "bce" and gan.resolve_loss("hinge", False) == "hinge"


def _largest_singular_values(d: nn.Module) -> list[float]:
    out = []
    for m in d.modules():
        if isinstance(m, (nn.Conv2d, nn.Linear)):
            w = m.weight.detach()            # the normalised weight when parametrized
            out.append(float(torch.linalg.matrix_norm(w.reshape(w.shape[0], -1), ord=2)))
    return out


def test_spectral_norm_bounds_every_layer_near_one():
    torch.manual_seed(0)
    d = create_model("dcgan-d", in_channels=1, image_size=[28, 28], width=16, num_classes=0, spectral_norm=True)
    assert not any(isinstance(m, nn.BatchNorm2d) for m in d.modules())
    plain = create_model("dcgan-d", in_channels=1, image_size=[28, 28], width=16, num_classes=0)
    assert sum(isinstance(m, nn.BatchNorm2d) for m in plain.modules()) == 2   # the DCGAN D is unchanged
    with torch.no_grad():                    # inflate the raw weights: SN must undo any scale
        for m in d.modules():
            if hasattr(m, "parametrizations"):
                m.parametrizations.weight.original.mul_(10.0)
    d.train()
    for _ in range(10):                      # one power iteration per training forward
        d(torch.rand(8, 1, 28, 28))
    d.eval()
    sigmas = _largest_singular_values(d)
    assert len(sigmas) == 4 and all(abs(s - 1) < 0.05 for s in sigmas), sigmas
    originals = [m.parametrizations.weight.original.detach() for m in d.modules() if hasattr(m, "parametrizations")]
    raw = [float(torch.linalg.matrix_norm(w.reshape(w.shape[0], -1), ord=2)) for w in originals]
    assert min(raw) > 2.0                    # the bound comes from SN, not from small weights


def test_spectral_norm_recipe_trains_reloads_and_samples(folder, tmp_path):
    r = gan.train(str(folder), spectral_norm=True, epochs=8, out=tmp_path / "sn", **TINY)
    ckpt = load_checkpoint(r.dir / "weights" / "best.pt", task="gan")
    assert ckpt["d_kwargs"]["spectral_norm"] is True
    assert r.results["gan_loss"] == "hinge" and r.results["d_spectral_norm"] is True
    assert r.results["d_lr"] == pytest.approx(gan.SN_D_LR_FACTOR * 3e-3)
    g = gan.load(r.dir)
    s = g.sample(64, seed=0)
    assert s.shape == (64, 1, 28, 28) and s.min() >= 0 and s.max() <= 1
    # it learned: the mean sample is much closer to the mean training image than an untrained G's
    from lensforge.data import load_dataset
    real = load_dataset(str(folder), require_labels=False).train.images.float().div(255)
    fresh = create_model("dcgan-g", **ckpt["model_kwargs"]).eval()
    with torch.no_grad():
        untrained = fresh(torch.randn(64, 16, generator=torch.Generator().manual_seed(0)))
    err = lambda x: float((x.mean(0) - real.mean(0)).pow(2).mean())   # noqa: E731
    assert err(s) < 0.5 * err(untrained), (err(s), err(untrained))
    # the discriminator state in last.pt is the spectral-norm one, and resume rebuilds it
    last = load_checkpoint(r.dir / "weights" / "last.pt", task="gan")
    assert any("parametrizations" in k for k in last["task_state"]["disc"])
    r2 = gan.train(resume=r.dir, epochs=9, progress=False)
    assert r2.results["epochs_run"] == 9 and r2.results["gan_loss"] == "hinge"


def test_defaults_keep_the_dcgan_recipe_and_options_override(folder, tmp_path):
    for cond in (False, True):
        r = gan.train(str(folder), conditional=cond, epochs=1, out=tmp_path / f"c{cond}", **TINY)
        assert r.results["gan_loss"] == "bce" and r.results["d_spectral_norm"] is False
        assert r.results["d_lr"] == pytest.approx(3e-3)
    r = gan.train(str(folder), conditional=True, spectral_norm=True, epochs=1, out=tmp_path / "csn", **TINY)
    assert r.results["gan_loss"] == "hinge" and r.results["d_spectral_norm"] is True
    r = gan.train(str(folder), spectral_norm=False, loss="hinge", d_lr=1e-3, epochs=1, out=tmp_path / "u", **TINY)
    assert r.results["gan_loss"] == "hinge" and r.results["d_spectral_norm"] is False
    assert r.results["d_lr"] == pytest.approx(1e-3)
    with pytest.raises(UsageError, match="--loss"):
        gan.train(str(folder), loss="wasserstein", out=tmp_path / "bad")
    assert not (tmp_path / "bad").exists()


def test_checkpoint_from_before_the_recipe_loads_and_resumes(folder, tmp_path):
    r = gan.train(str(folder), spectral_norm=False, loss="bce", epochs=1, out=tmp_path / "old", **TINY)
    # rewrite both checkpoints as the previous version wrote them: no new model or option keys
    for name in ("best.pt", "last.pt"):
        path = r.dir / "weights" / name
        ckpt = load_checkpoint(path, task="gan")
        ckpt["d_kwargs"].pop("spectral_norm")
        ckpt["d_kwargs"].pop("arch")
        for key in ("spectral_norm", "loss", "d_arch"):
            ckpt["options"].pop(key)
        save_checkpoint(path, ckpt)
    assert "spectral_norm" not in load_checkpoint(r.dir / "weights" / "last.pt", task="gan")["d_kwargs"]
    s = gan.load(r.dir).sample(4, seed=1)
    assert s.shape == (4, 1, 28, 28)
    # resume rebuilds the batch-norm D from the old d_kwargs (its state dict would not load into an
    # SN one) and trains it with the BCE loss the run started with
    r2 = gan.train(resume=r.dir, epochs=2, progress=False)
    assert r2.results["epochs_run"] == 2
    assert r2.results["d_spectral_norm"] is False and r2.results["gan_loss"] == "bce"


def test_resnet_discriminator_is_spectral_and_projects_the_class():
    torch.manual_seed(0)
    for size in ([28, 28], [64, 64], [23, 17]):
        d = create_model("dcgan-d", in_channels=1, image_size=size, width=8, num_classes=0, arch="resnet")
        assert d(torch.rand(3, 1, *size)).shape == (3,)
        assert not any(isinstance(m, (nn.BatchNorm2d, nn.BatchNorm1d)) for m in d.modules())
    d = create_model("dcgan-d", in_channels=1, image_size=[28, 28], width=8, num_classes=10, arch="resnet")
    # every conv and the linear head are spectrally normalised, and SN holds them near 1
    layers = [m for m in d.modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
    assert len(layers) == 3 * 3 + 1 and all(hasattr(m, "parametrizations") for m in layers)
    d.train()
    for _ in range(10):
        d(torch.rand(8, 1, 28, 28), torch.arange(8))
    d.eval()
    assert all(abs(s - 1) < 0.05 for s in _largest_singular_values(d))
    # projection: the same image scored as two different classes gets two different logits, and
    # the difference is exactly the inner product of the class embeddings' difference with phi(x)
    x = torch.rand(1, 1, 28, 28).expand(2, -1, -1, -1)
    with torch.no_grad():
        out = d(x, torch.tensor([3, 5]))
        phi = torch.relu(d.blocks(x[:1] * 2 - 1)).sum((2, 3))[0]
        emb = d.embed(torch.tensor([3, 5]))
    assert abs(float(out[0] - out[1])) > 1e-4
    assert float(out[0] - out[1]) == pytest.approx(float(((emb[0] - emb[1]) * phi).sum()), rel=1e-4, abs=1e-5)
    with pytest.raises(ValueError, match="needs labels"):
        d(x)
    with pytest.raises(ValueError, match="arch"):
        create_model("dcgan-d", in_channels=1, image_size=[28, 28], width=8, arch="stylegan")


def test_resnet_discriminator_run_trains_and_resumes(folder, tmp_path):
    r = gan.train(str(folder), d_arch="resnet", epochs=3, out=tmp_path / "res", **TINY)
    assert r.results["d_arch"] == "resnet" and r.results["d_spectral_norm"] is True
    assert r.results["gan_loss"] == "hinge"          # --loss auto follows the spectral-norm D
    last = load_checkpoint(r.dir / "weights" / "last.pt", task="gan")
    assert last["d_kwargs"]["arch"] == "resnet" and any(k.startswith("blocks.") for k in last["task_state"]["disc"])
    r2 = gan.train(resume=r.dir, epochs=4, progress=False)
    assert r2.results["epochs_run"] == 4 and r2.results["d_arch"] == "resnet"
    s = gan.load(r.dir).sample(8, seed=0)
    assert s.shape == (8, 1, 28, 28) and s.min() >= 0 and s.max() <= 1


def test_bf16_only_on_cpus_with_amx():
    flags = "processor\t: 0\nflags\t\t: fpu sse2 avx512f avx512bw {}\nmodel name\t: x\n"
    assert gan.cpu_has_amx_bf16(flags.format("avx512_bf16 amx_bf16 amx_tile")) is True
    # avx512_bf16 alone, or only a look-alike flag, is not enough: unmeasured there
    assert gan.cpu_has_amx_bf16(flags.format("avx512_bf16")) is False
    assert gan.cpu_has_amx_bf16(flags.format("amx_bf16x")) is False
    assert gan.cpu_has_amx_bf16("") is False
    assert gan.GANTask.cpu_auto_precision == ("bf16" if gan.cpu_has_amx_bf16() else "fp32")


def test_generator_adam_betas_new_runs_and_old_checkpoints(folder, tmp_path):
    r = gan.train(str(folder), epochs=1, out=tmp_path / "new", **TINY)
    assert r.results["precision"] == gan.GANTask.cpu_auto_precision      # --precision auto on this CPU
    path = r.dir / "weights" / "last.pt"
    ckpt = load_checkpoint(path, task="gan")
    assert {tuple(g["betas"]) for g in ckpt["optimizer"]["param_groups"]} == {(0.5, 0.999)}
    # a run started before G had DCGAN's betas resumes with the betas it was started with
    for g in ckpt["optimizer"]["param_groups"]:
        g["betas"] = (0.9, 0.99)
    save_checkpoint(path, ckpt)
    gan.train(resume=r.dir, epochs=2, progress=False)
    after = load_checkpoint(path, task="gan")
    assert after["epoch"] == 2
    assert {tuple(g["betas"]) for g in after["optimizer"]["param_groups"]} == {(0.9, 0.99)}


def test_discriminator_follows_the_schedule(folder, tmp_path):
    """D's optimiser is the task's, not the engine's, yet --schedule moves it with G: at the end of a
    one-cycle run both rates sit at the same fraction of their own peaks; constant keeps D at its peak."""
    opts = {**TINY, "lr": 2e-3}
    r = gan.train(str(folder), epochs=2, schedule="onecycle", warmup=0.0, d_lr=4e-3, out=tmp_path / "decay", **opts)
    ckpt = load_checkpoint(r.dir / "weights" / "last.pt", task="gan")
    g_lr = ckpt["optimizer"]["param_groups"][0]["lr"]
    d_lr = ckpt["task_state"]["d_opt"]["param_groups"][0]["lr"]
    assert 0 < g_lr < 2e-3 * 0.2                      # the last step of a linear decay to 0
    assert d_lr == pytest.approx(2 * g_lr)            # D's peak is 2x G's, so it stays 2x all the way down
    r = gan.train(str(folder), epochs=1, d_lr=4e-3, out=tmp_path / "flat", **opts)   # the recipe: constant
    ckpt = load_checkpoint(r.dir / "weights" / "last.pt", task="gan")
    assert ckpt["task_state"]["d_opt"]["param_groups"][0]["lr"] == pytest.approx(4e-3)


def test_small_training_sets_keep_dcgans_rate_unless_lr_is_given(folder, tmp_path):
    """The recipe's 6e-4 was measured on MNIST; a folder under AUGMENT_BELOW images trains at 2e-4 (both players)
    unless --lr says otherwise, and the run's config records the rate it used."""
    no_lr = {k: v for k, v in TINY.items() if k != "lr"}
    from lensforge.recipes import RECIPES
    assert RECIPES["gan"]["lr"] > gan.SMALL_DATA_LR
    r = gan.train(str(folder), epochs=1, out=tmp_path / "small", **no_lr)
    ckpt = load_checkpoint(r.dir / "weights" / "last.pt", task="gan")
    assert ckpt["config"]["lr"] == pytest.approx(gan.SMALL_DATA_LR) and r.results["d_lr"] == pytest.approx(gan.SMALL_DATA_LR)
    r = gan.train(str(folder), epochs=1, out=tmp_path / "given", **no_lr, lr=6e-4)
    assert load_checkpoint(r.dir / "weights" / "last.pt", task="gan")["config"]["lr"] == pytest.approx(6e-4)
