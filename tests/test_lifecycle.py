"""The shared run lifecycle and the generated CLI: what every trainable task gets from them."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from PIL import Image

from conftest import write_image_folder
from lensforge.cli import main

ROOT = Path(__file__).resolve().parents[1]


def test_help_is_built_without_torch():
    """`--help` for every task and verb comes from torch-free specs (fast start-up)."""
    code = ("import sys; from lensforge.cli import build_parser; p = build_parser();"
            "import contextlib, io\n"
            "for argv in (['--help'], ['classify', 'train', '--help'], ['runs', 'list', '--help']):\n"
            "    with contextlib.suppress(SystemExit), contextlib.redirect_stdout(io.StringIO()):\n"
            "        p.parse_args(argv)\n"
            "print('torch' in sys.modules)")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "False"


def test_help_shows_the_recipe_the_api_uses():
    from lensforge.options import make
    from lensforge.recipes import RECIPES
    from lensforge.tasks.lifecycle import options_for
    from lensforge.tasks.classify import ClassifyTask

    r = subprocess.run([sys.executable, "-m", "lensforge", "classify", "train", "--help"], capture_output=True,
                       text=True, cwd=ROOT)
    text = " ".join(r.stdout.split())
    recipe = RECIPES["classify"]
    assert f"peak learning rate (default {recipe['lr']})" in text
    assert f"(default {recipe['batch_size']})" in text
    opts, cfg = options_for(ClassifyTask, {})
    assert (cfg.lr, cfg.batch_size, cfg.epochs, cfg.ema) == (recipe["lr"], recipe["batch_size"], recipe["epochs"],
                                                             recipe["ema"])
    assert make(type(opts), {}).model == "auto" and "else cnn (default auto)" in text


def test_api_refuses_unknown_and_out_of_range_options(tmp_path):
    from lensforge.errors import UsageError
    from lensforge.tasks import classify

    with pytest.raises(UsageError, match="unknown option"):
        classify.train("digits", epochz=3, out=tmp_path / "r")
    with pytest.raises(UsageError, match="--lr -1"):
        classify.train("digits", lr=-1, out=tmp_path / "r")
    assert not (tmp_path / "r").exists()


def test_models_reject_unknown_arguments():
    from lensforge.models import create_model

    with pytest.raises(TypeError):
        create_model("cnn", in_channels=1, num_classes=10, image_size=[28, 28], bogus=3)


def test_failed_start_leaves_no_folder(tmp_path, monkeypatch):
    """A run that dies before its first checkpoint removes the run folder it created."""
    monkeypatch.chdir(tmp_path)
    from lensforge.tasks import classify

    with pytest.raises(FloatingPointError):
        _diverge(classify)
    assert not (tmp_path / "runs" / "classify" / "digits-cnn").exists()


def _diverge(classify):
    """Make the first step's loss non-finite, deterministically."""
    import torch

    from lensforge.tasks.classify import ClassifyTask

    original = ClassifyTask.training_step

    def nan_step(self, model, batch):
        loss, logs = original(self, model, batch)
        return loss * torch.tensor(float("nan")), logs

    ClassifyTask.training_step = nan_step
    try:
        classify.train("digits", epochs=1, progress=False)
    finally:
        ClassifyTask.training_step = original


def test_small_data_recipe_adapts_and_says_so(tmp_path, capsys):
    """Few images: a smaller batch, a scaled lr, enough steps and a short EMA, said before training;
    options the user set are kept as given."""
    from lensforge.tasks import classify

    root = write_image_folder(tmp_path / "data", classes=("a", "b", "c"), n=20, size=(16, 16))
    run = classify.train(str(root), epochs=1, out=tmp_path / "r1", progress=False, model="mlp")
    err = capsys.readouterr().err
    assert "recipe adapted to the data: batch 16" in err and "48 train" in err and "3 classes" in err
    cfg = __import__("yaml").safe_load((run.dir / "config.yaml").read_text())
    assert cfg["train"]["batch_size"] == 16 and cfg["train"]["epochs"] == 1 and cfg["train"]["ema"] < 0.999
    assert cfg["train"]["lr"] < 5e-3 and cfg["recipe_adapted"]
    run2 = classify.train(str(root), epochs=1, batch_size=8, ema=0.5, out=tmp_path / "r2", progress=False, model="mlp")
    cfg2 = __import__("yaml").safe_load((run2.dir / "config.yaml").read_text())
    assert cfg2["train"]["batch_size"] == 8 and cfg2["train"]["ema"] == 0.5


def test_unreadable_training_files_are_counted(tmp_path, capsys):
    from lensforge.tasks import classify

    root = write_image_folder(tmp_path / "data", classes=("a", "b"), n=12, size=(16, 16))
    (root / "a" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n not really")
    run = classify.train(str(root), epochs=1, out=tmp_path / "r", progress=False, model="mlp")
    err = capsys.readouterr().err
    assert "skipped 1 unreadable file(s), e.g. " in err and "broken.png" in err
    assert len(run.results["skipped_files"]) == 1 and "broken.png" in run.results["skipped_files"][0]


def test_nested_class_folders_use_the_folder_holding_the_images(tmp_path):
    """faces94 layout: group/<person>/*.jpg gives one class per person, not per group."""
    from lensforge.data import load_dataset

    for group, people in (("female", ("ann", "bea")), ("male", ("carl", "dan", "eli"))):
        for person in people:
            write_image_folder(tmp_path / "faces" / group, classes=(person,), n=5, size=(12, 12))
    write_image_folder(tmp_path / "faces" / "x", classes=("ann",), n=5, size=(12, 12))  # a second 'ann' folder
    ds = load_dataset(str(tmp_path / "faces"))
    assert sorted(ds.classes) == ["bea", "carl", "dan", "eli", "female/ann", "x/ann"]


def test_early_stop_without_validation_is_refused(tmp_path):
    r = subprocess.run([sys.executable, "-m", "lensforge", "classify", "train", "--early-stop", "2", "--out",
                        str(tmp_path / "r"), "--no-progress"], capture_output=True, text=True, cwd=ROOT)
    assert r.returncode == 2 and "--early-stop: classify has no validation split" in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1 and not (tmp_path / "r").exists()


def test_memory_need_is_refused_up_front(tmp_path, monkeypatch):
    from lensforge.errors import UsageError
    from lensforge.tasks import classify, lifecycle

    monkeypatch.setattr(lifecycle, "_physical_memory", lambda: 24 << 30)  # the same verdict on any machine
    root = tmp_path / "big"
    for c in ("a", "b"):
        (root / c).mkdir(parents=True)
        for i in range(2):
            Image.new("RGB", (40, 40), (i * 100, 0, 0)).save(root / c / f"{i}.png")
    # activations: a small ResNet at 512 px is fine per image, not for 4096 images at once
    with pytest.raises(UsageError, match="needs about .* GiB of memory .batch 4096"):
        classify.train(str(root), model="resnet", image_size=512, batch_size=4096, epochs=1, out=tmp_path / "r",
                       progress=False)
    # weights: the cnn's dense layer at 1024 px has 2G weights; refused before any is allocated
    with pytest.raises(UsageError, match="needs about .* GiB of memory for the 2148 M weights of .cnn."):
        classify.train(str(root), image_size=1024, epochs=1, out=tmp_path / "r", progress=False)
    assert not (tmp_path / "r").exists()


def test_resume_refuses_changed_options_and_extends_epochs(tmp_path, capsys):
    from lensforge.errors import UsageError
    from lensforge.tasks import classify

    run = classify.train("digits", model="mlp", epochs=1, batch_size=64, out=tmp_path / "r", progress=False)
    with pytest.raises(UsageError, match="drop --lr"):
        classify.train(resume=run.dir, lr=0.1)
    capsys.readouterr()
    again = classify.train(resume=run.dir, epochs=2, progress=False)
    assert "extending the run from 1 to 2 epochs" in capsys.readouterr().err
    assert again.results["epochs_run"] == 2
    rows = (run.dir / "metrics.csv").read_text().splitlines()
    assert [r.split(",")[0] for r in rows[1:]] == ["1", "2"]


def test_runs_list_and_data_list(tmp_path, capsys, mnist_dir):
    from lensforge.tasks import classify

    classify.train("digits", model="mlp", epochs=1, batch_size=64, out=tmp_path / "runs" / "classify" / "a",
                   progress=False)
    assert main(["runs", "list", "--root", str(tmp_path / "runs")]) == 0
    out = capsys.readouterr().out
    assert "classify" in out and "digits" in out and "test_accuracy=" in out
    assert main(["data", "list", "--data-dir", str(mnist_dir)]) == 0
    out = capsys.readouterr().out
    lines = {l.split()[0]: l for l in out.splitlines()[1:]}
    assert "present" in lines["mnist"] and "missing" in lines["cifar10"] and "missing" in lines["fashion-mnist"]


def test_outputs_have_normal_permissions(tmp_path):
    import os

    from lensforge.tasks import classify

    old = os.umask(0o022)
    try:
        run = classify.train("digits", model="mlp", epochs=1, batch_size=64, out=tmp_path / "r", progress=False)
    finally:
        os.umask(old)
    for name in ("report.html", "results.json", "curves.png", "metrics.csv", "weights/best.pt"):
        assert (run.dir / name).stat().st_mode & 0o777 == 0o644, name
