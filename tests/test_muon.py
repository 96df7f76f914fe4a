"""--optimizer muon: orthogonalised kernel updates, plain SGD for the rest, fixed norms for kernels
followed by batch norm, the batch rule for small sets, and a training run that learns and resumes."""
from __future__ import annotations

import pytest
import torch

from lensforge.engine.config import TrainConfig
from lensforge.engine.muon import MuonSGD, orthogonalise, split_kernels
from lensforge.engine.trainer import build_optimizer
from lensforge.models import create_model


def _matrix(rows, cols, spread, seed=0):
    g = torch.Generator().manual_seed(seed)
    u, _ = torch.linalg.qr(torch.randn(rows, rows, generator=g))
    v, _ = torch.linalg.qr(torch.randn(cols, cols, generator=g))
    k = min(rows, cols)
    return u[:, :k] @ torch.diag(torch.logspace(-1, 1, k) * spread / 100) @ v[:, :k].T, u[:, :k] @ v[:, :k].T


@pytest.mark.parametrize("shape", [(32, 288), (288, 32)])
def test_orthogonalise_evens_out_the_singular_values_and_keeps_the_directions(shape):
    m, polar = _matrix(*shape, spread=100.0)
    out = orthogonalise(m).float()
    assert out.shape == m.shape
    s = torch.linalg.svdvals(out)
    # singular values 0.1..10 (100x apart) come out within 6x of each other, none above 1.5
    assert s.max() < 1.5 and s.max() / s.min() < 6
    # and the result points where U V^T does (the nearest orthogonal matrix)
    assert torch.nn.functional.cosine_similarity(out.flatten(), polar.flatten(), dim=0) > 0.9


def test_muon_puts_kernels_in_muon_groups_and_keeps_every_parameter_once():
    net = create_model("whitenet", in_channels=3, num_classes=4, image_size=[32, 32], width=8)
    opt = build_optimizer(net, TrainConfig(optimizer="muon", lr=0.5, muon_lr=0.2, weight_decay=1e-3))
    assert isinstance(opt, MuonSGD)
    muon = [g for g in opt.param_groups if g["muon"]]
    assert len(muon) == 1 and all(p.dim() == 4 for p in muon[0]["params"])
    assert muon[0]["lr_scale"] == pytest.approx(0.2 / 0.5) and muon[0]["scale_invariant"]
    rest = [p for g in opt.param_groups if not g["muon"] for p in g["params"]]
    assert all(p.dim() < 4 for p in rest)
    grouped = [id(p) for g in opt.param_groups for p in g["params"]]
    trainable = {id(p) for p in net.parameters() if p.requires_grad}
    assert len(grouped) == len(set(grouped)) and set(grouped) == trainable


def test_sgd_groups_step_exactly_as_torch_sgd():
    torch.manual_seed(0)
    a, b = torch.randn(5, 3, requires_grad=True), None
    b = a.detach().clone().requires_grad_(True)
    ours = MuonSGD([{"params": [a], "weight_decay": 1e-2}], lr=0.1, momentum=0.85)
    ref = torch.optim.SGD([b], lr=0.1, momentum=0.85, nesterov=True, weight_decay=1e-2)
    for step in range(3):
        grad = torch.randn(5, 3)
        a.grad, b.grad = grad.clone(), grad.clone()
        ours.step()
        ref.step()
    assert torch.allclose(a, b, atol=1e-6)


def test_scale_invariant_kernels_keep_their_norm_and_others_decay():
    torch.manual_seed(0)
    fixed, decayed = torch.randn(16, 8, 3, 3) * 3, torch.randn(16, 8, 3, 3) * 3
    fixed.requires_grad_(True)
    decayed.requires_grad_(True)
    before = float(decayed.detach().norm())
    groups = split_kernels([{"params": [fixed], "weight_decay": 0.5, "scale_invariant": True},
                            {"params": [decayed], "weight_decay": 0.5}], muon_scale=1.0)
    opt = MuonSGD(groups, lr=0.1)
    for _ in range(4):
        for p in (fixed, decayed):
            p.grad = torch.zeros_like(p)          # no gradient: only the norm rule acts
        opt.step()
    assert float(fixed.detach().norm()) == pytest.approx(16 ** 0.5, rel=1e-4)
    assert float(decayed.detach().norm()) == pytest.approx(before * (1 - 0.1 * 0.5) ** 4, rel=1e-4)


def test_a_small_folder_scales_muons_rates_by_their_own_rules(tmp_path):
    from conftest import write_image_folder
    from lensforge.engine.checkpoint import load_checkpoint
    from lensforge.tasks import classify

    root = write_image_folder(tmp_path / "colours", classes=("r", "g", "b"), n=40, size=(32, 32))
    run = classify.train(str(root), optimizer="muon", epochs=2, width=8, progress=False, out=tmp_path / "run")
    cfg = load_checkpoint(run.best_weights, task="classify")["config"]
    # 96 images cannot feed whitenet's batch of 1024: the batch shrinks, the SGD part's lr with it,
    # the kernels' normalised steps with its square root
    from lensforge.recipes import MODEL_RECIPES
    recipe = MODEL_RECIPES["classify"]["whitenet"]
    assert recipe["optimizer"] == "muon"
    ratio = cfg["batch_size"] / recipe["batch_size"]
    assert ratio < 1
    assert cfg["lr"] == pytest.approx(recipe["lr"] * ratio, rel=0.01)
    assert cfg["muon_lr"] == pytest.approx(recipe["muon_lr"] * ratio ** 0.5, rel=0.01)


def test_muon_trains_and_resumes_exactly(mnist_dir, tmp_path, monkeypatch):
    from lensforge.engine.checkpoint import load_checkpoint
    from lensforge.engine.trainer import Interrupted
    from lensforge.tasks import classify

    opts = dict(data_dir=mnist_dir, model="cnn", epochs=3, batch_size=64, optimizer="muon", lr=0.05, muon_lr=0.05,
                progress=False, precision="fp32")
    full = classify.train("mnist", out=tmp_path / "full", **opts)
    assert full.results["test_accuracy"] >= 0.9          # synthetic blobs: chance is 0.10

    original = classify.ClassifyTask.training_step
    calls = {"n": 0}

    def flaky(self, model, batch):
        calls["n"] += 1
        if calls["n"] == 13:                            # mid-way through epoch 2
            raise KeyboardInterrupt
        return original(self, model, batch)

    monkeypatch.setattr(classify.ClassifyTask, "training_step", flaky)
    with pytest.raises(Interrupted):
        classify.train("mnist", out=tmp_path / "cut", **opts)
    assert load_checkpoint(tmp_path / "cut" / "weights" / "last.pt")["epoch"] == 1
    monkeypatch.setattr(classify.ClassifyTask, "training_step", original)
    resumed = classify.train(resume=tmp_path / "cut", progress=False)
    assert resumed.results["test_accuracy"] == pytest.approx(full.results["test_accuracy"], abs=1e-6)
