"""run_all.sh --dry_run for every setup it lists and every preset: the stages, where each run goes,
the dataset and model of each setup, the paper's PLR grids (docs/protocol.md sections 3, 4, 7) and the
scan preset's length (a fifth of the paper preset's pre-training)."""
import functools
import math
import re
import shlex

import numpy as np
import pytest

from conftest import ROOT, run

SETUPS = re.search(r'^SETUPS="([^"]*)"', (ROOT / "run_all.sh").read_text(), re.M).group(1).split()
PRESETS = ("smoke", "quick", "paper", "scan")
STAGES = ["pretrain", "finetune", "swa", "evaluate", "report"]

# setup -> (dataset, model): the setups PROTOCOL.md describes
EXPECTED = {"synthetic": ("tick", "mlp_si"),
            "convnet_si_cifar10": ("cifar10", "convnet_si"), "convnet_si_cifar100": ("cifar100", "convnet_si"),
            "resnet18_si_cifar10": ("cifar10", "resnet18_si"), "resnet18_si_cifar100": ("cifar100", "resnet18_si"),
            "resnet18_cifar10": ("cifar10", "resnet18"), "resnet18_cifar100": ("cifar100", "resnet18"),
            "convnet_si_fmnist": ("fashion_mnist", "convnet_si"),
            "vit_cifar10": ("cifar10", "vit_small"), "vit_fmnist": ("fashion_mnist", "vit_small")}

# PROTOCOL.md's paper grids
SYNTHETIC_PLRS = [3.16e-5, 5.62e-5, 1.00e-4, 1.78e-4, 3.16e-4, 5.62e-4, 1.00e-3, 1.78e-3, 3.16e-3, 5.62e-3, 7.50e-3,
                  1.00e-2, 1.33e-2, 1.78e-2, 2.37e-2, 3.16e-2, 4.22e-2, 5.62e-2, 0.1, 0.178, 0.316, 0.562, 1.0]
RESNET18_SI_C10_PLRS = [1e-6, 2e-6, 5e-6, 1e-5, 1.4e-5, 2e-5, 3e-5, 5e-5, 7e-5, 1e-4, 1.4e-4, 2e-4, 3e-4, 5e-4, 7e-4,
                        1e-3, 1.4e-3, 2e-3, 3e-3, 5e-3, 7e-3, 1e-2, 1.4e-2, 2e-2, 3e-2, 5e-2, 7e-2, 0.1, 0.2, 0.5, 1, 2]
SI_PLRS = [1e-5, 2e-5, 5e-5, 1e-4, 2e-4, 5e-4, 1e-3, 2e-3, 5e-3, 1e-2, 2e-2, 5e-2, 0.1, 0.2, 0.5, 1]
PRACTICAL_PLRS = [1e-4, 2e-4, 5e-4, 1e-3, 2e-3, 5e-3, 1e-2, 2e-2, 5e-2, 0.1, 0.2, 0.5, 1]
VIT_PLRS = [1e-5, 2e-5, 5e-5, 1e-4, 2e-4, 5e-4, 1e-3, 2e-3, 5e-3, 1e-2]
PAPER_PLRS = {"synthetic": SYNTHETIC_PLRS, "resnet18_si_cifar10": RESNET18_SI_C10_PLRS,
              "convnet_si_cifar10": SI_PLRS, "convnet_si_cifar100": SI_PLRS, "resnet18_si_cifar100": SI_PLRS,
              "convnet_si_fmnist": SI_PLRS, "resnet18_cifar10": PRACTICAL_PLRS, "resnet18_cifar100": PRACTICAL_PLRS,
              "vit_cifar10": VIT_PLRS, "vit_fmnist": VIT_PLRS}
PAPER_FLRS = {"synthetic": SYNTHETIC_PLRS[:11], "resnet18_si_cifar10": [1e-5, 3e-5, 5e-5, 7e-5, 1e-4, 1.4e-4, 2e-4,
                                                                        2.5e-4, 3e-4]}
# the authors' boundaries 1|2, 2A|2B, 2|3 (docs/protocol.md section 4), drawn next to the detected ones
PAPER_BOUNDARIES = {"synthetic": [7.5e-3, 1.78e-2, 5.6e-2], "resnet18_si_cifar10": [3e-4, 1.4e-3, 2e-2],
                    "convnet_si_cifar10": [5e-4, 2e-3, 2e-2], "convnet_si_cifar100": [2e-4, 2e-3, 0.1],
                    "resnet18_si_cifar100": [1e-4, 2e-3, 0.1], "resnet18_cifar10": [2e-3, 0.1, None],
                    "resnet18_cifar100": [2e-3, 0.1, None], "vit_cifar10": [1e-4, 1e-3, None]}
# the scan's pre-training: a fifth of the paper preset's (synthetic: iterations, images: epochs)
SCAN_LENGTH = {"synthetic": ("--iters", 8000), "vit_cifar10": ("--epochs", 100), "vit_fmnist": ("--epochs", 20)}


OUT = "/proc/lrl_dry_run/root"  # where the dry runs point: unwritable even for root, so a write would fail


def test_every_listed_setup_is_known():
    assert SETUPS and set(SETUPS) == set(EXPECTED), "a new setup: add its dataset and model to EXPECTED"


@functools.lru_cache(maxsize=None)
def dry_run(setup, preset):
    """{stage: [commands as word lists]} printed by run_all.sh --dry_run (a fixed --out, nothing written)."""
    proc = run("bash", "run_all.sh", "--setup", setup, "--preset", preset, "--dry_run", "--out", OUT)
    assert proc.stderr == ""
    stages, current = {}, None
    for line in proc.stdout.splitlines():
        if line.startswith("# "):
            current = line[2:]
            stages[current] = []
        else:
            stages[current].append(line)
    return stages


def flag(words, name):
    """The values after --name up to the next flag (None if absent)."""
    if name not in words:
        return None
    i = words.index(name) + 1
    j = next((k for k in range(i, len(words)) if words[k].startswith("--")), len(words))
    return words[i:j]


def split_commands(line):
    """The python commands of one line (evaluate chains several with &&), each as a word list."""
    return [shlex.split(c) for c in line.split(" && ")]


@pytest.mark.parametrize("preset", PRESETS)
@pytest.mark.parametrize("setup", sorted(EXPECTED))
def test_dry_run(setup, preset):
    stages = dry_run(setup, preset)
    assert list(stages) == (["pretrain", "report"] if preset == "scan" else STAGES)
    d = f"{OUT}/{setup}" + ("/scan" if preset == "scan" else "")
    (report,) = [shlex.split(line) for line in stages["report"]]
    assert report[:4] == ["python", "report.py", "--root", d]
    paper = flag(report, "--paper_boundaries")
    assert (paper and [None if b == "none" else float(b) for b in paper]) == PAPER_BOUNDARIES.get(setup)
    dataset, model = EXPECTED[setup]
    names = []
    for line in stages["pretrain"]:
        (w,) = split_commands(line)
        assert w[:2] == ["python", "train.py"]
        assert flag(w, "--dataset") == [dataset] and flag(w, "--model") == [model], line
        out = flag(w, "--out")[0]
        assert out.startswith(f"{d}/pretrain/"), line
        names.append(out.rsplit("/", 1)[1])
        assert ("--smoke" in w) == (preset == "smoke")
    assert len(set(names)) == len(names) >= 1
    if preset == "scan":
        return
    for stage, script in (("finetune", "finetune.py"), ("swa", "swa.py")):
        froms = []
        for line in stages[stage]:
            (w,) = split_commands(line)
            assert w[:2] == ["python", script]
            (src,), (out,) = flag(w, "--from"), flag(w, "--out")
            assert out == f"{d}/{stage}/" + src.rsplit("/", 1)[1]  # named after the run it continues
            froms.append(src)
        assert froms == [f"{d}/pretrain/{n}" for n in names]  # every pre-training run, once
    for n, line in zip(names, stages["evaluate"], strict=True):
        cmds = split_commands(line)
        assert [c[1] for c in cmds] == ["eval_fourier.py"] * 3 + ["eval_geometry.py"]
        assert [flag(c, "--run")[0] for c in cmds[:3]] == [f"{d}/{s}/{n}" for s in ("pretrain", "finetune", "swa")]
        geo = cmds[3]
        assert flag(geo, "--finetune") == [f"{d}/finetune/{n}"] and flag(geo, "--swa") == [f"{d}/swa/{n}"]
        assert flag(geo, "--out") == [f"{d}/geometry/{n}"]
        flrs = flag(shlex.split(stages["finetune"][0]), "--lr")
        assert flag(geo, "--low") == flrs[:1] and flag(geo, "--high") == flrs[-1:]  # the smallest and largest FLR


def pretrain_plrs(stages):
    return sorted({float(p) for line in stages["pretrain"] for p in flag(shlex.split(line), "--lr")})


@pytest.mark.parametrize("setup", sorted(PAPER_PLRS))
def test_paper_grids(setup):
    stages = dry_run(setup, "paper")
    assert pretrain_plrs(stages) == PAPER_PLRS[setup]
    if setup == "synthetic":
        # logspace(-4.5, -2.25, 10)[:-1] + logspace(-2.25, -1.25, 9)[:-1] + logspace(-1.25, 0, 6), 3 digits
        grid = [*np.logspace(-4.5, -2.25, 10)[:-1], *np.logspace(-2.25, -1.25, 9)[:-1], *np.logspace(-1.25, 0, 6)]
        assert len(SYNTHETIC_PLRS) == 23 and SYNTHETIC_PLRS == pytest.approx(grid, rel=5e-3)
        # 50 runs: model seeds 0-4 x data seeds 0-9, every PLR in every part
        words = [shlex.split(line) for line in stages["pretrain"]]
        assert all(flag(w, "--seed") == list("01234") for w in words)
        assert sorted(int(s) for w in words for s in flag(w, "--data_seed")) == list(range(10))
    else:
        seeds = [flag(shlex.split(line), "--seed") for line in stages["pretrain"]]
        assert sorted(s for (s,) in seeds) == sorted(["0", "1", "2"] * len(PAPER_PLRS[setup]))
    if setup in PAPER_FLRS:
        assert {tuple(float(f) for f in flag(shlex.split(line), "--lr")) for line in stages["finetune"]} == \
            {tuple(PAPER_FLRS[setup])}


@pytest.mark.parametrize("setup", sorted(EXPECTED))
def test_scan_is_a_fifth_of_the_paper_pretraining(setup):
    paper, scan = dry_run(setup, "paper"), dry_run(setup, "scan")
    assert pretrain_plrs(scan) == pretrain_plrs(paper)  # the paper grid, one seed
    name, length = SCAN_LENGTH.get(setup, ("--epochs", 40))
    default = 40000 if name == "--iters" else 200  # train.py's paper lengths when the command gives none
    for line in scan["pretrain"]:
        w = shlex.split(line)
        assert flag(w, "--seed") == ["0"] and flag(w, name) == [str(length)], line
        if setup == "synthetic":
            assert flag(w, "--data_seed") == ["0"]
    for line in paper["pretrain"]:
        given = flag(shlex.split(line), name)
        assert math.ceil(int(given[0] if given else default) / 5) == length


@pytest.mark.parametrize("preset", PRESETS)
def test_dry_run_writes_nothing(preset, tmp_path):
    run("bash", "run_all.sh", "--setup", "resnet18_si_cifar10", "--preset", preset, "--dry_run", "--out", tmp_path / "x")
    assert not (tmp_path / "x").exists()
