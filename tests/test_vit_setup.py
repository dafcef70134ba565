"""The ViT setup of appendix F end to end: vit_fmnist's smoke sweep on real Fashion-MNIST (Adam,
RandAugment, SWA of strided kept checkpoints, the band-split study), and its paper preset's commands."""
import json

import pytest

from conftest import run
from data.images import FMNIST_SYSTEM_DIR
from engine import checkpoint
from engine.rundir import RunDir

pytestmark = pytest.mark.skipif(not (FMNIST_SYSTEM_DIR / "train-images-idx3-ubyte.gz").is_file(),
                                reason="needs Debian's dataset-fashion-mnist")


@pytest.mark.e2e
def test_vit_fmnist_smoke_sweep(tmp_path):
    proc = run("bash", "run_all.sh", "--setup", "vit_fmnist", "--preset", "smoke", "--jobs", "2", "--out", tmp_path)
    assert "sweep vit_fmnist/smoke finished" in proc.stdout
    root = tmp_path / "vit_fmnist"
    summary = json.loads((root / "summary.json").read_text())
    assert summary["model"] == "vit_small" and summary["dataset"] == "fashion_mnist"
    assert [e["plr"] for e in summary["per_plr"]] == [1e-3, 0.3]
    assert all(e["regime"] in ("1", "2", "2A", "2B", "3") for e in summary["per_plr"])
    assert summary["rule"].splitlines()[1].startswith("Practical setting")  # no sphere: the practical rule
    e = summary["per_plr"][0]
    for stage in (e["pretrain"], e["swa"], *e["finetune"].values()):  # Fig. 16 for every stage
        assert sorted(stage["band_splits"], key=int) == ["4", "6", "8", "10"]
        assert all(0 <= v <= 1 for split in stage["band_splits"].values() for v in split.values())
    for name in ("accuracy", "bands", "band_splits", "geometry"):
        assert (root / "figures" / f"{name}.png").stat().st_size > 10_000
    # the recipe of the model record, recorded in the run and inherited by fine-tuning
    pt = checkpoint.load(str(root / "pretrain" / "plr1e-3_s0" / "checkpoints" / "final.pt"))
    ft = checkpoint.load(str(root / "finetune" / "plr1e-3_s0" / "checkpoints" / "final.pt"))
    assert pt["recipe"] == ft["recipe"] == {"optimizer": "adam", "momentum": 0.0, "weight_decay": 1e-4,
                                            "augment": "randaugment", "sphere": "off", "schedule": "constant"}
    assert "exp_avg" in pt["opts"][0]["state"][0]
    # SWA averaged the run's own kept checkpoints (smoke: epochs 1 and 2), no continuation
    assert RunDir(str(root / "swa" / "plr1e-3_s0")).results()["swa_epochs"] == [1, 2]


def test_vit_cifar10_paper_commands():
    proc = run("bash", "run_all.sh", "--setup", "vit_cifar10", "--preset", "paper", "--dry_run")
    lines = proc.stdout.splitlines()
    train = [ln for ln in lines if ln.startswith("python train.py")]
    assert len(train) == 10 * 3  # 10 PLRs x 3 seeds
    assert all("--model vit_small" in ln and "--epochs 500 --save_epochs 492 494 496 498" in ln for ln in train)
    assert all("--lr 1e-5 2e-5 5e-5 1e-4 --epochs 500" in ln for ln in lines if ln.startswith("python finetune.py"))
    assert all("--n_models 5 --stride 2" in ln for ln in lines if ln.startswith("python swa.py"))
    assert all("--band_splits 4,6,8,10" in ln for ln in lines if ln.startswith("python eval_fourier.py"))
    assert "--paper_boundaries 1e-4 1e-3 none" in lines[-1]
