"""summary.json against the schema of docs/schema.md, on the synthetic smoke sweep that
tests/test_pipeline.py runs too (conftest.py: smoke_sweep): every key and type the schema names, and
its numbers against the run directories they are aggregated from (means over seeds, %.3g FLR keys)."""
import json
import math
from collections import defaultdict

import numpy as np
import pytest

from core.io import read_jsonl
from engine.rundir import RunDir

pytestmark = pytest.mark.e2e  # the session's run_all.sh smoke sweep

SMOKE_PLRS, SMOKE_FLRS = [1e-3, 1e-2, 0.3], [1e-4, 3e-3]  # run_all.sh's synthetic smoke preset
REGIMES = {"1", "2A", "2B", "2", "3"}
GEOMETRY = [(q, pair) for pair in ("low_high", "swa_high", "swa_low")
            for q in ("angle", "train_barrier", "test_barrier")]  # summary.json's order


@pytest.fixture(scope="module")
def sweep(smoke_sweep):
    setup = smoke_sweep[0] / "synthetic"
    return setup, json.loads((setup / "summary.json").read_text())


def member_rows(setup, stage):
    """Per member of every run of a stage: its members.jsonl row, results.json numbers and features."""
    out = []
    for d in sorted((setup / stage).iterdir()):
        rd = RunDir(str(d))
        feats = {r["member"]: r for r in read_jsonl(d / "features.jsonl")}
        for m, res in zip(rd.members(), rd.results()["members"]):
            out.append(dict(m, **res, features=feats[m["member"]]["features"]))
    return out


def is_number(x):
    return isinstance(x, float) and math.isfinite(x) or isinstance(x, int) and not isinstance(x, bool)


def test_top_level_keys_and_types(sweep):
    _, s = sweep
    assert (s["setup"], s["dataset"], s["model"]) == ("synthetic", "tick", "mlp_si")
    assert s["model_args"] == {"width": 32, "num_classes": 2, "in_channels": 32}  # the SI MLP's smoke arguments
    assert s["recipe"] == {"optimizer": "sgd", "momentum": 0.0, "weight_decay": 0.0, "augment": "none",
                           "sphere": "on", "schedule": "constant", "batch_size": 16}  # the paper's, batch 16
    assert isinstance(s["plrs"], list) and all(is_number(p) for p in s["plrs"])
    assert s["plrs"] == sorted(set(s["plrs"])) == SMOKE_PLRS  # increasing
    assert set(s["boundaries"]) == {"1|2", "2A|2B", "2|3"}
    assert all(v is None or is_number(v) for v in s["boundaries"].values())
    assert s["recommended_plr"] is None or s["recommended_plr"] in s["plrs"]
    assert isinstance(s["per_plr"], list) and [e["plr"] for e in s["per_plr"]] == s["plrs"]
    assert isinstance(s["missing"], list) and isinstance(s["rule"], str) and isinstance(s["at_loss"], list)


def test_regimes_are_ordered_and_boundaries_between_them(sweep):
    _, s = sweep
    labels = [e["regime"] for e in s["per_plr"]]
    assert set(labels) <= REGIMES
    rank = [{"1": 0, "2A": 1, "2": 1, "2B": 2, "3": 3}[r] for r in labels]
    assert rank == sorted(rank)  # 1, 2(A, B), 3 as the PLR grows
    # each boundary the geometric mean of the last PLR below it and the first above (None: no such pair)
    for key, below, above in (("1|2", {"1"}, {"2", "2A", "2B"}), ("2|3", {"1", "2", "2A", "2B"}, {"3"}),
                              ("2A|2B", {"2A"}, {"2B"})):
        lo = [p for p, r in zip(s["plrs"], labels) if r in below]
        hi = [p for p, r in zip(s["plrs"], labels) if r in above]
        b = s["boundaries"][key]
        if lo and hi:
            assert b == pytest.approx(math.sqrt(max(lo) * min(hi)), rel=1e-12), key
        else:
            assert b is None, key
    if s["recommended_plr"] is not None:
        assert labels[s["plrs"].index(s["recommended_plr"])] in {"2A", "2", "2B", "1"}


def check_stage(entry, members, flr=None):
    """One stage's entry against its members (one per seed): means (and population std) over seeds."""
    assert entry["n_seeds"] == len(members) == 2
    for key in ("train_loss", "train_acc", "test_loss", "test_acc"):
        vals = [m[key] for m in members]
        assert is_number(entry[key]) and is_number(entry[f"{key}_std"])
        assert entry[key] == pytest.approx(np.mean(vals), rel=1e-12, abs=1e-15), (key, flr)
        assert entry[f"{key}_std"] == pytest.approx(np.std(vals), rel=1e-9, abs=1e-15), (key, flr)
    assert 0 <= entry["train_acc"] <= 1 and 0 <= entry["test_acc"] <= 1
    fs = entry["features_sorted"]
    assert isinstance(fs, list) and len(fs) == 16 and all(is_number(v) and 0 <= v <= 1 for v in fs)
    assert fs == sorted(fs, reverse=True)  # rank 1 first
    expected = np.mean([sorted(m["features"], reverse=True) for m in members], axis=0)
    assert fs == pytest.approx(expected.tolist(), rel=1e-12)
    assert entry["bands"] is None  # synthetic: single-feature sets, no frequency bands


def test_per_plr_stages_are_means_over_seeds(sweep):
    setup, s = sweep
    rows = {stage: member_rows(setup, stage) for stage in ("pretrain", "finetune", "swa")}
    for e in s["per_plr"]:
        check_stage(e["pretrain"], [m for m in rows["pretrain"] if m["plr"] == e["plr"]])
        check_stage(e["swa"], [m for m in rows["swa"] if m["plr"] == e["plr"]])
        # FLR keys: the FLR printed with %.3g
        assert list(e["finetune"]) == ["0.0001", "0.003"] == ["%.3g" % f for f in SMOKE_FLRS]
        by_flr = defaultdict(list)
        for m in rows["finetune"]:
            if m["plr"] == e["plr"]:
                by_flr["%.3g" % m["flr"]].append(m)
        assert set(by_flr) == set(e["finetune"])
        for key, members in by_flr.items():
            check_stage(e["finetune"][key], members, key)


def test_geometry_fields(sweep):
    setup, s = sweep
    pairs = [p for d in sorted((setup / "geometry").iterdir()) for p in RunDir(str(d)).results()["pairs"]]
    for e in s["per_plr"]:
        g = e["geometry"]
        assert list(g) == [f"{q}_{kind}" for q, kind in GEOMETRY]
        for q, kind in GEOMETRY:
            v = g[f"{q}_{kind}"]
            assert is_number(v) and (0 <= v <= math.pi if q == "angle" else 0 <= v <= 1), (q, kind)
            vals = [p[q] for p in pairs if p["plr"] == e["plr"] and p["pair"] == kind]
            assert len(vals) == 2 and v == pytest.approx(np.mean(vals), rel=1e-12), (q, kind)  # two data seeds
