"""run_all.sh --dry_run for every setup of setups.ini and every preset: the stages, where each run
goes, and that the commands carry the table's model, dataset, grids, seeds and lengths (setups.ini is
the one source: core/setups.py reads it for run_all.sh and for these tests); the grids that follow a
formula checked against it; the recipe flags passed to every stage; the scan preset's command."""
import functools
import os
import re
import shlex

import numpy as np
import pytest

from conftest import run
from core import setups

SETUPS = setups.names()
PRESETS = ("smoke", "quick", "paper", "scan")
STAGES = ["pretrain", "finetune", "swa", "evaluate", "report"]
OUT = "/proc/lrl_dry_run/root"  # where the dry runs point: unwritable even for root, so a write would fail


@functools.lru_cache(maxsize=None)
def dry_run(setup, preset, *extra):
    """{stage: [commands as lines]} printed by run_all.sh --dry_run (a fixed --out, nothing written)."""
    proc = run("bash", "run_all.sh", "--setup", setup, "--preset", preset, *extra, "--dry_run", "--out", OUT)
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
    """The values after --name up to the next flag (None if absent; the last one if given twice)."""
    if name not in words:
        return None
    i = len(words) - 1 - words[::-1].index(name) + 1
    j = next((k for k in range(i, len(words)) if words[k].startswith("--")), len(words))
    return words[i:j]


def split_commands(line):
    """The python commands of one line (evaluate chains several with &&), each as a word list."""
    return [shlex.split(c) for c in line.split(" && ")]


def pretrain_plrs(stages):
    return sorted({float(p) for line in stages["pretrain"] for p in flag(shlex.split(line), "--lr")})


@pytest.mark.parametrize("preset", PRESETS)
@pytest.mark.parametrize("setup", SETUPS)
def test_dry_run_follows_the_table(setup, preset):
    table = setups.resolve(setup, preset)
    stages = dry_run(setup, preset)
    assert list(stages) == table["stages"] + ["report"]
    d = f"{OUT}/{setup}" + ("/scan_s0" if preset == "scan" else "")
    (report,) = [shlex.split(line) for line in stages["report"]]
    assert report[:4] == ["python", "report.py", "--root", d]
    assert (flag(report, "--paper_boundaries") or []) == table["paper_boundaries"]
    if preset == "scan":
        return  # test_scan_command
    names, seeds = [], set()
    for line in stages["pretrain"]:
        (w,) = split_commands(line)
        assert w[:2] == ["python", "train.py"]
        assert flag(w, "--dataset") == [table["dataset"]] and flag(w, "--model") == [table["model"]], line
        assert (flag(w, "--model_args") or []) == table["model_args"]
        out = flag(w, "--out")[0]
        assert out.startswith(f"{d}/pretrain/"), line
        names.append(out.rsplit("/", 1)[1])
        seeds.update(int(s) for s in flag(w, "--seed"))
        assert ("--smoke" in w) == table["smoke"]
        for k in range(0, len(table["pretrain"]), 2):  # the table's train.py flags, in the command
            assert flag(w, table["pretrain"][k]) is not None, (line, table["pretrain"])
    assert len(set(names)) == len(names) >= 1
    assert pretrain_plrs(stages) == sorted(float(p) for p in table["plrs"])
    assert sorted(seeds) == table["seeds"]
    if table["data_seeds"]:
        assert sorted(int(s) for line in stages["pretrain"] for s in flag(shlex.split(line), "--data_seed")) == \
            table["data_seeds"]
    for stage, script in (("finetune", "finetune.py"), ("swa", "swa.py")):
        froms = []
        for line in stages[stage]:
            (w,) = split_commands(line)
            assert w[:2] == ["python", script]
            (src,), (out,) = flag(w, "--from"), flag(w, "--out")
            assert out == f"{d}/{stage}/" + src.rsplit("/", 1)[1]  # named after the run it continues
            froms.append(src)
            if stage == "finetune":
                assert flag(w, "--lr") == table["flrs"]
        assert froms == [f"{d}/pretrain/{n}" for n in names]  # every pre-training run, once
    for n, line in zip(names, stages["evaluate"], strict=True):
        cmds = split_commands(line)
        assert [c[1] for c in cmds] == ["eval_fourier.py"] * 3 + ["eval_geometry.py"]
        assert [flag(c, "--run")[0] for c in cmds[:3]] == [f"{d}/{s}/{n}" for s in ("pretrain", "finetune", "swa")]
        geo = cmds[3]
        assert flag(geo, "--finetune") == [f"{d}/finetune/{n}"] and flag(geo, "--swa") == [f"{d}/swa/{n}"]
        assert flag(geo, "--out") == [f"{d}/geometry/{n}"]
        assert flag(geo, "--low") == table["flrs"][:1] and flag(geo, "--high") == table["flrs"][-1:]


def one_two_five(lo, hi):
    """1, 2, 5 x powers of ten from lo to hi."""
    return [m * 10.0 ** e for e in range(-8, 3) for m in (1, 2, 5) if lo * 0.999 <= m * 10.0 ** e <= hi * 1.001]


def test_the_grids_that_follow_a_formula():
    # the synthetic example: logspace(-4.5, -2.25, 10)[:-1] + logspace(-2.25, -1.25, 9)[:-1] +
    # logspace(-1.25, 0, 6), 3 significant digits; FLRs its first 11; 10 data seeds x 5 model seeds
    syn = setups.resolve("synthetic", "paper")
    grid = [*np.logspace(-4.5, -2.25, 10)[:-1], *np.logspace(-2.25, -1.25, 9)[:-1], *np.logspace(-1.25, 0, 6)]
    assert [float(p) for p in syn["plrs"]] == pytest.approx(grid, rel=5e-3) and len(grid) == 23
    assert syn["flrs"] == syn["plrs"][:11]
    assert syn["seeds"] == list(range(5)) and syn["data_seeds"] == list(range(10))
    for s in ("convnet_si_cifar10", "convnet_si_cifar100", "resnet18_si_cifar100", "convnet_si_fmnist"):
        assert [float(p) for p in setups.resolve(s, "paper")["plrs"]] == pytest.approx(one_two_five(1e-5, 1))
    for s in ("resnet18_cifar10", "resnet18_cifar100"):
        assert [float(p) for p in setups.resolve(s, "paper")["plrs"]] == pytest.approx(one_two_five(1e-4, 1))
    for s in ("vit_cifar10", "vit_fmnist"):
        assert [float(p) for p in setups.resolve(s, "paper")["plrs"]] == pytest.approx(one_two_five(1e-5, 1e-2))
    for s in SETUPS:  # grids increase; a quick grid is a part of the paper one unless the setup says otherwise
        paper, quick = setups.resolve(s, "paper"), setups.resolve(s, "quick")
        assert [float(p) for p in paper["plrs"]] == sorted(float(p) for p in paper["plrs"])
        assert set(quick["flrs"]) <= set(paper["flrs"]) or s in ("convnet_si_fmnist",)


@pytest.mark.parametrize("setup", SETUPS)
def test_scan_command(setup):
    """The adaptive scan: one scan.py over the paper grid and lengths, one seed (data seed = model seed
    where data are drawn per seed), the budget in runs; --epochs / --ft_epochs set its lengths."""
    table = setups.resolve(setup, "paper")
    ((scan,),) = [split_commands(line) for line in dry_run(setup, "scan", "--seeds", "4 5")["scan"]]
    own, train = scan[:scan.index("--")], scan[scan.index("--") + 1:]
    assert own[:2] == ["python", "scan.py"] and flag(own, "--plrs") == table["plrs"]
    assert flag(own, "--full") == [str(table["pretrain_length"])] and flag(own, "--budget") == ["2"]
    assert flag(own, "--finetune") == [str(table["finetune_length"])]
    assert flag(own, "--out") == [f"{OUT}/{setup}/scan_s4"]
    assert flag(train, "--dataset") == [table["dataset"]] and flag(train, "--seed") == ["4"]
    assert flag(train, "--data_seed") == (["4"] if table["data_seeds"] else None)
    assert flag(train, "--threads") == ["0"]  # one process: every core
    ((scan,),) = [split_commands(line) for line in dry_run(setup, "scan", "--epochs", "30", "--ft_epochs", "10",
                                                           "--budget", "0.5")["scan"]]
    assert flag(scan, "--full") == ["30"] and flag(scan, "--finetune") == ["10"] and flag(scan, "--budget") == ["0.5"]


RECIPE = ["--optimizer", "adamw", "--weight_decay", "0.05", "--augment", "crop_flip", "--schedule", "cosine"]


def test_recipe_flags_reach_every_stage():
    stages = dry_run("mine", "quick", "--model", "convnet_si", "--dataset", "cifar10", *RECIPE, "--batch_size", "64",
                     "--measure")
    assert list(stages) == STAGES
    for stage in ("pretrain", "finetune", "swa"):
        for line in stages[stage]:
            w = shlex.split(line)
            for k in range(0, len(RECIPE), 2):
                assert flag(w, RECIPE[k]) == [RECIPE[k + 1]], (stage, line)
            assert flag(w, "--batch_size") == (["64"] if stage == "pretrain" else None)  # the others inherit it
    built_in = dry_run("convnet_si_fmnist", "quick", "--optimizer", "sgd", "--momentum", "0.9")
    assert all(flag(shlex.split(line), "--momentum") == ["0.9"] for s in ("pretrain", "finetune", "swa")
               for line in built_in[s])


def test_your_own_setup_runs_what_the_answer_needs():
    own = ("--model", "convnet_si", "--dataset", "cifar10")
    assert list(dry_run("mine", "quick", *own)) == ["pretrain", "finetune", "swa", "report"]
    assert list(dry_run("mine", "quick", *own, "--measure")) == STAGES
    assert list(dry_run("mine", "quick", *own, "--stages", "pretrain")) == ["pretrain", "report"]


def test_model_args_take_the_same_form_as_train_py():
    a = dry_run("mine", "quick", "--model", "convnet_si", "--dataset", "cifar10", "--model_args", "width=8",
                "head_norm=10.0", "--plrs", "1e-3")
    b = dry_run("mine", "quick", "--model", "convnet_si", "--dataset", "cifar10", "--model_args", "width=8 head_norm=10.0",
                "--plrs", "1e-3")
    assert a == b and flag(shlex.split(a["pretrain"][0]), "--model_args") == ["width=8", "head_norm=10.0"]


def test_help_lists_every_setup():
    text = " ".join(run("bash", "run_all.sh", "--help").stdout.split())
    listed = re.search(r"Setups \(setups.ini[^)]*\): (.*?), or any NAME", text).group(1)
    assert [s.strip() for s in listed.split(",")] == SETUPS


def test_jobs_default_to_the_cores_whatever_omp_num_threads_says():
    # run() sets OMP_NUM_THREADS=1 (which `nproc` obeys): the synthetic quick sweep still splits its two
    # data seeds over the machine's cores
    parts = [flag(shlex.split(line), "--data_seed") for line in dry_run("synthetic", "quick")["pretrain"]]
    cores = min(os.cpu_count() or 1, 2)
    assert len(parts) == cores and sorted(s for p in parts for s in p) == ["0", "1"]


@pytest.mark.parametrize("preset", PRESETS)
def test_dry_run_writes_nothing(preset, tmp_path):
    run("bash", "run_all.sh", "--setup", "resnet18_si_cifar10", "--preset", preset, "--dry_run", "--out", tmp_path / "x")
    assert not (tmp_path / "x").exists()
