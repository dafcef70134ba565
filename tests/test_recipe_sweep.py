"""The recipe end to end through run_all.sh: a researcher's model and data, and a built-in setup, swept
with AdamW reach every stage with it (each run's config.json, summary.json's recipe, report.md's first
lines); bad recipe values get one line before anything is written; an SI model whose frozen head is
far from the paper's norm is warned about at start-up."""
import json

import pytest

from conftest import run
from engine.rundir import RunDir
from test_own_model import MODELS_PY, write_npz

ADAMW = ("--optimizer", "adamw", "--weight_decay", "0.05")


def check_recipe(root, stages):
    """Every run of every stage trained with AdamW, weight decay 0.05; the summary and report say so."""
    runs = [p for s in stages for p in sorted((root / s).iterdir())]
    assert runs
    for p in runs:
        recipe = RunDir(str(p)).config()["meta"]["recipe"]
        assert recipe["optimizer"] == "adamw" and recipe["weight_decay"] == 0.05, p
    summary = json.loads((root / "summary.json").read_text())
    assert summary["recipe"]["optimizer"] == "adamw" and summary["recipe"]["weight_decay"] == 0.05
    head = (root / "report.md").read_text().splitlines()[:6]
    assert any(line.startswith("Recipe: adamw, momentum 0, weight decay 0.05") for line in head), head
    return summary


@pytest.mark.e2e
def test_your_own_model_swept_with_adamw(tmp_path):
    (tmp_path / "my_models.py").write_text(MODELS_PY)
    write_npz(tmp_path / "my_data.npz")
    proc = run("bash", "run_all.sh", "--setup", "mine", "--model", tmp_path / "my_models.py:SICNN", "--dataset",
               tmp_path / "my_data.npz", "--model_args", "width=3", "--plrs", "1e-3 1e-2", "--flrs", "1e-4",
               "--epochs", "2", "--ft_epochs", "1", "--seeds", "0", *ADAMW, "--jobs", "2", "--out", tmp_path / "runs")
    summary = check_recipe(tmp_path / "runs" / "mine", ("pretrain", "finetune", "swa"))
    assert summary["model"].endswith("my_models.py:SICNN") and summary["model_args"]["width"] == 3
    assert summary["dataset"].endswith("my_data.npz") and summary["model_args"]["num_classes"] == 3
    # the head of SICNN keeps nn.Linear's default initialisation: said at start-up, with what to do
    assert "frozen head.weight (3, 6): norm" in proc.stdout and "rescale it in the constructor" in proc.stdout


@pytest.mark.e2e
def test_a_built_in_setup_swept_with_adamw(tmp_path):
    run("bash", "run_all.sh", "--setup", "convnet_si_fmnist", "--preset", "smoke", *ADAMW, "--jobs", "2",
        "--out", tmp_path)
    check_recipe(tmp_path / "convnet_si_fmnist", ("pretrain", "finetune", "swa"))


@pytest.mark.parametrize("flags, message", [
    (("--momentum", "1.5"), "--momentum needs a number in [0, 1)"),
    (("--weight_decay", "-1"), "--weight_decay needs a finite number >= 0"),
    (("--augment", "mixup"), "--augment needs none, crop_flip or randaugment"),
    (("--sphere", "maybe"), "--sphere needs on or off"),
    (("--schedule", "linear"), "--schedule needs constant or cosine"),
    (("--batch_size", "0"), "--batch_size needs a positive integer"),
    (("--setup", "convnet_si_fmnist", "--optimizer", "adam", "--momentum", "0.9"),
     "--momentum 0.9 does not apply to --optimizer adam"),
])
def test_bad_recipe_values_through_run_all(flags, message, tmp_path):
    proc = run("bash", "run_all.sh", "--preset", "smoke", *flags, "--out", tmp_path / "runs", check=False)
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode == 2 and len(lines) == 1 and message in lines[0], proc.stderr
    assert not (tmp_path / "runs").exists()
