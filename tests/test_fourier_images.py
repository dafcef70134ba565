"""eval_fourier.py on image runs (docs/protocol.md section 5, frequency bands), with known answers.

The model of the colour sweep (conftest.py: colour_sweep; tests/colour_images.py) sees only each
image's mean colour, and the class of an image is its background colour. So:
- the band-0 image (the mean colour, normalised as the regular test set) is classified exactly as
  the original: the same accuracy;
- every group without band 0 has zero mean per image and channel and goes in raw: the pooled input
  is 0 and the prediction is argmax of the last layer's bias, one class for every image, so the
  accuracy is that class's share of the test set (class k has k + 1 of the 55 test images). For the
  nearest-colour classifier that class is the one whose colour is the normalisation mean (class 2:
  3 / 55); had the band images been normalised like the originals, the pooled input would be
  -mean / std, the colour black, and the class the near-black one (class 6: 7 / 55).
"""
import json
import shutil

import pytest
import torch

from colour_images import BLACK, GREY, TEXTURE
from conftest import run
from models import build
from engine import checkpoint
from analysis.fourier import band_test_sets, parse_bands
from test_images_data import write_cifar
from engine import module as module_backend

DEFAULT = ["0", "1-8", "9-24", "25-32"]


@pytest.fixture(autouse=True)
def one_thread():
    n = torch.get_num_threads()
    torch.set_num_threads(1)  # as the scripts run (--threads 1); two threads on a loaded machine crawl
    yield
    torch.set_num_threads(n)


def rows_of(run_dir):
    return [json.loads(line) for line in (run_dir / "features.jsonl").read_text().splitlines()]


def check_known_answers(run_dir, y_test):
    """Every member's row: band 0 scores the test accuracy, the other groups the test-set share of the
    class its last layer's bias favours. Returns the rows."""
    y = torch.as_tensor(y_test)
    ck = checkpoint.load(str(run_dir / "checkpoints" / "final.pt"))
    rows = rows_of(run_dir)
    assert [r["member"] for r in rows] == [m["member"] for m in ck["members"]]
    for i, r in enumerate(rows):
        assert list(r["bands"]) == DEFAULT
        assert r["bands"]["0"] == r["test_acc"]
        constant = int(ck["state"]["fc.bias"][i].argmax())  # the prediction for a zero pooled input
        for key in DEFAULT[1:]:
            assert r["bands"][key] == pytest.approx((y == constant).double().mean().item(), abs=1e-12), (i, key)
    return rows


def test_band0_keeps_the_accuracy_zero_mean_bands_give_one_class(colour_sweep):
    pt = colour_sweep["setup"] / "pretrain" / "pt"
    rows = check_known_answers(pt, colour_sweep["y_test"])
    ck = checkpoint.load(str(pt / "checkpoints" / "final.pt"))
    # PLR 1e-3 barely moved from the handicapped nearest-colour start: the last class (10 images) is
    # never predicted, everything else is; its bias still favours the normalisation mean's colour
    assert rows[0]["test_acc"] == pytest.approx(45 / 55) and rows[1]["test_acc"] == 1.0
    assert int(ck["state"]["fc.bias"][0].argmax()) == GREY
    assert rows[0]["bands"]["9-24"] == pytest.approx(3 / 55) and (BLACK + 1) / 55 != pytest.approx(3 / 55)
    # the fine-tuned run: the same known answers, for each (PLR, FLR) member
    assert len(check_known_answers(colour_sweep["setup"] / "finetune" / "pt", colour_sweep["y_test"])) == 6


def test_band_images_are_what_the_model_is_fed(colour_sweep):
    """The band test sets themselves: band 0 is each image's (normalised) mean colour, flat, and its
    predictions are the originals'; the other groups are flat zero on average and get one class."""
    pt = colour_sweep["setup"] / "pretrain" / "pt"
    ck = checkpoint.load(str(pt / "checkpoints" / "final.pt"))
    ts = module_backend.test_set(ck, type("Args", (), {"data_dir": None})(), torch.device("cpu"))
    model = build(ck["model"], 0, ck["model_args"])
    model.load_state_dict(checkpoint.member(ck["state"], 0))
    with torch.no_grad():
        original = model(ts["x"]).argmax(1)
        for key, x in band_test_sets(ts["raw"], parse_bands(",".join(DEFAULT)), ts["mean"], ts["std"]):
            pooled = x.double().mean(dim=(2, 3))  # (N, 3): what the model sees
            if key == "0":
                torch.testing.assert_close(pooled, ts["x"].double().mean(dim=(2, 3)), atol=1e-5, rtol=0)
                assert x.std(dim=(2, 3)).max() < 1e-5  # one colour per image and channel
                assert torch.equal(model(x).argmax(1), original)
            else:
                assert pooled.abs().max() < 1e-5 and x.abs().max() > TEXTURE / 255 / 2  # raw, not blank
                assert model(x).argmax(1).tolist() == [GREY] * len(x)
    # the accuracies eval_fourier.py wrote are these
    acc = module_backend.member_accuracy(ck, torch.device("cpu"))
    sets = dict(band_test_sets(ts["raw"], parse_bands(",".join(DEFAULT)), ts["mean"], ts["std"]))
    for r in rows_of(pt):
        assert r["test_acc"] == acc(ts["x"], ts["y"])[r["member"]].item()
        assert all(r["bands"][k] == acc(sets[k], ts["y"])[r["member"]].item() for k in DEFAULT)


HOMOGENEOUS_PY = """
from torch import nn


class Homogeneous(nn.Module):
    \"\"\"Convolutions and ReLUs without biases or normalisation: f(c x) = c f(x) for c > 0, so its
    predictions depend on an image's pattern, not on its contrast (a BN model in eval mode gives the
    faint band images one class).\"\"\"

    def __init__(self, num_classes, in_channels):
        super().__init__()
        self.net = nn.Sequential(nn.Conv2d(in_channels, 8, 3, padding=1, bias=False), nn.ReLU(),
                                 nn.Conv2d(8, 8, 5, stride=2, bias=False), nn.ReLU(), nn.AdaptiveAvgPool2d(1),
                                 nn.Flatten(), nn.Linear(8, num_classes, bias=False))

    def forward(self, x):
        return self.net(x)
"""


@pytest.fixture(scope="module")
def noise_run(tmp_path_factory):
    """A positively homogeneous ConvNet trained one epoch on random images with random labels (100
    test images): its predictions depend on every frequency, so its band accuracies differ from group
    to group."""
    d = tmp_path_factory.mktemp("noise")
    write_cifar(d / "data", "cifar10", sizes={**{f"data_batch_{i}": 20 for i in range(1, 6)}, "test_batch": 100})
    (d / "homogeneous.py").write_text(HOMOGENEOUS_PY)
    run("train.py", "--dataset", "cifar10", "--data_dir", d / "data", "--model", f"{d}/homogeneous.py:Homogeneous",
        "--sphere", "off", "--augment", "none", "--smoke", "--epochs", "1", "--lr", "1e-3", "--seed", "0", "1",
        "--threads", "1",
        "--out", d / "pt")
    return d / "pt"


def test_second_split_and_band_splits_merge_into_one_row(noise_run, tmp_path):
    """--bands with a moved low/mid boundary, then --band_splits: one row per member holding every
    group once; each group's accuracy is what that group alone gives (accuracies that differ from
    group to group, so a value under the wrong key shows)."""
    d = tmp_path / "pt"
    shutil.copytree(noise_run, d)
    run("eval_fourier.py", "--run", d, "--threads", "1", "--bands", "0, 1-6,7-24 ,25-32")
    first = rows_of(d)
    assert [list(r["bands"]) for r in first] == [["0", "1-6", "7-24", "25-32"]] * 2  # two seeds
    run("eval_fourier.py", "--run", d, "--threads", "1", "--band_splits", "8,4")
    rows = rows_of(d)
    assert [r["member"] for r in rows] == [0, 1]
    for r, r0 in zip(rows, first):
        # the first split's groups kept, then the default groups not there yet, then split 4's
        assert list(r["bands"]) == ["0", "1-6", "7-24", "25-32", "1-8", "9-24", "1-4", "5-24"]
        assert {k: r["bands"][k] for k in r0["bands"]} == r0["bands"] and r["test_acc"] == r0["test_acc"]
        assert r["band_splits"] == [4, 8]
        assert r["band_split_groups"] == {"4": {"low": "1-4", "mid": "5-24"}, "8": {"low": "1-8", "mid": "9-24"}}
    # every group, evaluated alone
    ck = checkpoint.load(str(d / "checkpoints" / "final.pt"))
    ts = module_backend.test_set(ck, type("Args", (), {"data_dir": None})(), torch.device("cpu"))
    acc = module_backend.member_accuracy(ck, torch.device("cpu"))
    for key in rows[0]["bands"]:
        (_, x), = band_test_sets(ts["raw"], parse_bands(key), ts["mean"], ts["std"])
        alone = acc(x, ts["y"]).tolist()
        assert [r["bands"][key] for r in rows] == alone, key
    # the groups' accuracies differ, so the check above can tell the keys apart
    assert max(len(set(r["bands"].values())) for r in rows) >= 4, rows
