"""The band-split study (paper Fig. 16: eval_fourier.py --band_splits -> features.jsonl -> report.py's
summary.json -> band_splits.png) and the band-images figure (paper Fig. 7: eval_fourier.py --band_images)."""
import json
import shutil

import pytest
import torch
from conftest import call
from test_images_data import write_cifar

from analysis import sweep as report
from data import images
from analysis.figures import _first_partition, band_images_figure, draw_all
from analysis.fourier import parse_bands

FMNIST = pytest.mark.skipif(not (images.FMNIST_SYSTEM_DIR / "t10k-images-idx3-ubyte.gz").is_file(),
                            reason="Fashion-MNIST not installed (apt-get install dataset-fashion-mnist)")
SPLIT_KEYS = ["1-4", "5-24", "1-6", "7-24", "1-8", "9-24", "1-10", "11-24"]


@pytest.fixture(scope="module")
def smoke_run(tmp_path_factory):
    """A one-epoch Fashion-MNIST pre-training run (real data), trained once for this module."""
    out = tmp_path_factory.mktemp("bands") / "pt"
    call("train.py", "--dataset", "fashion_mnist", "--model", "convnet_si", "--smoke", "--epochs", "1",
         "--lr", "1e-3", "--threads", "1", "--out", out)
    return out


@pytest.fixture
def fresh_run(smoke_run, tmp_path):
    """A copy of the smoke run without features.jsonl, for a test to evaluate."""
    d = tmp_path / "pretrain" / "run"
    shutil.copytree(smoke_run, d)
    (d / "features.jsonl").unlink(missing_ok=True)
    return d


def _rows(d):
    return [json.loads(line) for line in (d / "features.jsonl").read_text().splitlines()]


# ---- eval_fourier.py --band_splits

@FMNIST
def test_band_splits_rows(fresh_run):
    out = call("eval_fourier.py", "--run", fresh_run, "--threads", "1", "--band_splits", "10,4,6,8").stdout
    (row,) = _rows(fresh_run)
    # the default groups, then each split's low and mid groups; 0 and 25-32 once (shared by every split)
    assert list(row["bands"]) == ["0", "1-8", "9-24", "25-32", "1-4", "5-24", "1-6", "7-24", "1-10", "11-24"]
    line = next(x for x in out.splitlines() if x.startswith("median accuracy"))
    assert line.count(" 0 ") == 1 and line.count("25-32") == 1 and line.count("1-8") == 1
    assert all(0 <= v <= 1 for v in row["bands"].values())
    assert row["band_splits"] == [4, 6, 8, 10]
    assert row["band_split_groups"] == {"4": {"low": "1-4", "mid": "5-24"}, "6": {"low": "1-6", "mid": "7-24"},
                                        "8": {"low": "1-8", "mid": "9-24"}, "10": {"low": "1-10", "mid": "11-24"}}
    # nothing new to do: skipped; a split whose groups are there already is only recorded
    assert "nothing to do" in call("eval_fourier.py", "--run", fresh_run, "--band_splits", "4,8").stdout
    assert "nothing to do" in call("eval_fourier.py", "--run", fresh_run).stdout
    # another split adds its groups and keeps the others
    call("eval_fourier.py", "--run", fresh_run, "--threads", "1", "--band_splits", "12")
    (again,) = _rows(fresh_run)
    assert again["band_splits"] == [4, 6, 8, 10, 12] and list(again["bands"])[-2:] == ["1-12", "13-24"]
    assert {k: again["bands"][k] for k in row["bands"]} == row["bands"]


@FMNIST
def test_band_splits_recorded_without_evaluation(fresh_run):
    """The default groups are split 8's: asking for it afterwards evaluates nothing, records the split."""
    call("eval_fourier.py", "--run", fresh_run, "--threads", "1")
    before = _rows(fresh_run)[0]
    out = call("eval_fourier.py", "--run", fresh_run, "--threads", "1", "--band_splits", "8").stdout
    assert "recorded" in out and "median accuracy" not in out
    (row,) = _rows(fresh_run)
    assert row["bands"] == before["bands"] and row["test_acc"] == before["test_acc"]
    assert row["band_splits"] == [8] and row["band_split_groups"] == {"8": {"low": "1-8", "mid": "9-24"}}


@FMNIST
def test_bad_band_splits_fail_with_one_line(fresh_run):
    """Out of range (s < 1, s >= 24 for 32x32) or not an integer: one line, exit 2, nothing written
    (no features.jsonl on a fresh run; an existing one untouched). Every bad form: test_fourier.py."""
    def bad(value):
        p = call("eval_fourier.py", "--run", fresh_run, "--threads", "1", "--band_splits", value, check=False)
        assert p.returncode == 2 and p.stdout == "", p.stdout
        assert len(p.stderr.strip().splitlines()) == 1 and p.stderr.startswith("error: --band_splits")
        assert "1..23" in p.stderr and "Traceback" not in p.stderr

    for value in ("0", "24", "4.5"):
        bad(value)
        assert not (fresh_run / "features.jsonl").exists()
    call("eval_fourier.py", "--run", fresh_run, "--threads", "1")
    before = (fresh_run / "features.jsonl").read_bytes()
    for value in ("4,-2", "x"):
        bad(value)
        assert (fresh_run / "features.jsonl").read_bytes() == before


# ---- report.py: summary.json and band_splits.png

def _record(member, bands, groups, stage="pretrain", plr=1e-3, flr=None):
    return {"member": member, "stage": stage, "plr": plr, "flr": flr, "bands": bands, "band_split_groups": groups}


def test_band_split_means():
    g = {"4": {"low": "1-4", "mid": "5-24"}, "8": {"low": "1-8", "mid": "9-24"}}
    a = _record(0, {"1-4": 0.2, "5-24": 0.6, "1-8": 0.3, "9-24": 0.5}, g)
    b = _record(1, {"1-4": 0.4, "5-24": 0.8, "1-8": 0.5, "9-24": 0.7}, g)
    out = report.band_split_means([a, b])
    assert list(out) == ["4", "8"]
    assert out["4"] == pytest.approx({"low": 0.3, "mid": 0.7}) and out["8"] == pytest.approx({"low": 0.4, "mid": 0.6})
    # only the splits every member has
    c = _record(2, {"1-4": 0.0, "5-24": 0.0}, {"4": g["4"]})
    assert list(report.band_split_means([a, b, c])) == ["4"]
    # without the study (or for a member without it): none
    assert report.band_split_means([a, dict(b, band_split_groups={})]) is None
    assert report.band_split_means([{"member": 0, "bands": {"0": 0.1}, "run": None}]) is None
    assert report.band_split_means([{"member": 0, "bands": None, "features": [0.5]}]) is None


@FMNIST
def test_report_band_splits(fresh_run):
    """features.jsonl of a real run -> summary.json's pre-training "band_splits" -> band_splits.png."""
    call("eval_fourier.py", "--run", fresh_run, "--threads", "1", "--band_splits", "4,6,8,10")
    root = fresh_run.parent.parent
    call("report.py", "--root", root)
    summary = json.loads((root / "summary.json").read_text())
    (row,) = _rows(fresh_run)
    st = summary["per_plr"][0]["pretrain"]
    assert list(st["band_splits"]) == ["4", "6", "8", "10"]
    for s, g in row["band_split_groups"].items():
        assert st["band_splits"][s] == {"low": row["bands"][g["low"]], "mid": row["bands"][g["mid"]]}
    assert (root / "figures" / "band_splits.png").stat().st_size > 0
    assert "band_splits" in (root / "report.md").read_text()


def _summary(splits=True, flrs=("1e-05", "0.0005"), swa=True):
    """A hand-written summary.json of three PLRs with the band study at every stage."""
    per = []
    for i, plr in enumerate((1e-4, 1e-3, 1e-2)):
        def stage(shift):
            st = {"train_loss": 0.01 * (i + 1), "train_loss_std": 0.001, "train_acc": 0.99, "train_acc_std": 0.01,
                  "test_loss": 0.5, "test_loss_std": 0.01, "test_acc": 0.8, "test_acc_std": 0.01, "n_seeds": 2,
                  "features_sorted": None, "features_sorted_std": None,
                  "bands": {"0": 0.1, "1-8": 0.3 + shift, "9-24": 0.6 - shift, "25-32": 0.1,
                            "1-4": 0.2, "5-24": 0.7, "1-6": 0.25, "7-24": 0.65}}
            if splits:
                st["band_splits"] = {str(s): {"low": 0.1 + 0.03 * s + shift, "mid": 0.8 - 0.02 * s - shift}
                                     for s in (4, 6, 8, 10)}
            return st
        per.append({"plr": plr, "regime": ["1", "2A", "3"][i], "pretrain": stage(0.05 * i),
                    "finetune": {k: stage(0.05 * i + 0.01 * j) for j, k in enumerate(flrs)},
                    "swa": stage(0.05 * i + 0.02) if swa else None, "geometry": None})
    return {"setup": "handmade", "dataset": "cifar10", "model": "convnet_si", "plrs": [e["plr"] for e in per],
            "boundaries": {"1|2": 3e-4, "2A|2B": 3e-3, "2|3": None}, "recommended_plr": 1e-3, "per_plr": per,
            "at_loss": [], "at_loss_target": None, "missing": []}


def test_band_splits_figure_from_summary(tmp_path):
    drawn = draw_all(_summary(), tmp_path)
    assert "band_splits" in drawn and "bands" in drawn
    for ext in ("png", "pdf"):
        assert (tmp_path / f"band_splits.{ext}").stat().st_size > 0
    # stages without the study or without fine-tuning still draw the panels present
    (tmp_path / "pt_only").mkdir()
    assert "band_splits" in draw_all(_summary(flrs=(), swa=False), tmp_path / "pt_only")


def test_no_band_splits_no_new_figure(tmp_path):
    drawn = draw_all(_summary(splits=False), tmp_path)
    assert "band_splits" not in drawn and "bands" in drawn
    assert not (tmp_path / "band_splits.png").exists()


def test_bands_figure_keeps_the_first_partition():
    """With the split study's groups present, bands.png draws the default partition only."""
    assert _first_partition(["0", "1-8", "9-24", "25-32"] + SPLIT_KEYS) == ["0", "1-8", "9-24", "25-32"]
    assert _first_partition(["0", "1-4", "5-24", "25-32", "1-6", "7-24"]) == ["0", "1-4", "5-24", "25-32"]
    assert _first_partition(["3", "0", "1-2", "4-5"]) == ["3", "0", "1-2", "4-5"]


# ---- eval_fourier.py --band_images (paper Fig. 7)

@FMNIST
def test_band_images_fashion_mnist(tmp_path):
    out = tmp_path / "fig7.png"
    p = call("eval_fourier.py", "--band_images", "fashion_mnist", "--data_dir", tmp_path, "--out", out,
             "--n", "2", "--threads", "1")
    assert out.stat().st_size > 0 and "0,1-8,9-24,25-32" in p.stdout and "(1, 32, 32)" in p.stdout
    assert [f.name for f in tmp_path.iterdir()] == ["fig7.png"]   # no temporary file left


def test_band_images_tiny_cifar(tmp_path):
    write_cifar(tmp_path, "cifar10")
    out = tmp_path / "fig7.pdf"
    p = call("eval_fourier.py", "--band_images", "cifar10", "--data_dir", tmp_path, "--out", out,
             "--bands", "0,1-6,7-24,25-32", "--threads", "1")
    assert out.stat().st_size > 0 and "4 cifar10 test images of (3, 32, 32)" in p.stdout


@pytest.mark.parametrize("args, message", [
    (["--band_images", "cifar10", "--out", "{d}/f.png", "--band_splits", "4"], "--band_splits are for --run"),
    (["--band_images", "cifar10", "--out", "{d}/f.png", "--force"], "--force"),
    (["--band_images", "cifar10"], "needs --out"),
    (["--band_images", "cifar10", "--out", "{d}/f.xyz"], "give a figure file"),
    (["--band_images", "cifar10", "--out", "{d}/no/f.png"], "does not exist"),
    (["--band_images", "cifar10", "--out", "{d}/f.png", "--n", "0"], "--n 0"),
    (["--band_images", "cifar10", "--out", "{d}/f.png", "--n", "11"], "has 10 test images"),
    (["--band_images", "cifar10", "--out", "{d}/f.png", "--bands", "0,1-8,5"], "overlap"),
    (["--band_images", "cifar10", "--out", "{d}/f.png", "--bands", "0,40-50"], "empty"),
    (["--band_images", "tick", "--out", "{d}/f.png"], "image dataset"),
    (["--band_images", "nope", "--out", "{d}/f.png"], "unknown dataset"),
    (["--band_images", "cifar100", "--out", "{d}/f.png"], "not found"),
    (["--band_images", "cifar10", "--run", "{d}"], "not allowed with"),
    ([], "one of the arguments --run --band_images is required"),
    (["--run", "{d}/pt", "--out", "{d}/f.png"], "are for --band_images"),
])
def test_band_images_bad_input(tmp_path, args, message):
    write_cifar(tmp_path, "cifar10")
    (tmp_path / "pt").mkdir()
    before = sorted(p.name for p in tmp_path.iterdir())
    p = call("eval_fourier.py", *[a.format(d=tmp_path) for a in args], "--data_dir", tmp_path, check=False)
    assert p.returncode == 2 and len(p.stderr.strip().splitlines()) == 1 and message in p.stderr, p.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == before


@pytest.mark.parametrize("c", [1, 3, 2])
def test_band_images_figure_direct(tmp_path, c):
    x = torch.randint(0, 256, (3, c, 16, 16), generator=torch.Generator().manual_seed(c), dtype=torch.uint8)
    path = tmp_path / "f.png"
    assert band_images_figure(x, parse_bands("0,1-3,4-9,10-16"), str(path)) == str(path)
    assert path.stat().st_size > 0
