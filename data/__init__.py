"""Dataset registry: one record per dataset (the synthetic tick data, data/tick.py; the image
datasets, data/images.py), and a researcher's own data as `--dataset path/to/file.npz` or
`--dataset package.module:function` (data/custom.py). Scripts read records, never names.
"""
import dataclasses
import os

from data import custom, images, tick
from core.errors import UserError


@dataclasses.dataclass(frozen=True)
class DatasetRecord:
    name: str               # registry name, or the spec of a researcher's data
    inputs: str             # "image" (N, C, H, W uint8) or "vector" (N, D float): must match the model's
    per_seed: bool          # drawn anew for every data seed (--data_seed); runs then train one group per seed pair
    batch_size: int         # default mini-batch size
    smoke_batch_size: int   # --smoke
    lengths: dict           # default stage lengths, in the training backend's unit (iterations or epochs)
    smoke_lengths: dict     # --smoke
    features: str           # what eval_fourier.py measures: "single_feature" sets or frequency "bands"
    load: object = None     # image datasets: load(data_dir, download, train_size, device) -> data dict
    points: int = 21        # points on each linear path of eval_geometry.py (docs/protocol.md sections 5, 7)
    draw: object = None     # per-seed data: draw(data_seed) -> x_train, y_train, x_test, y_test tensors
    feature_sets: object = None  # per-seed data: feature_sets(data_seed) -> x (F, n, D), y (F, n): one set per feature


def _image(name, load):
    return DatasetRecord(name, "image", False, 128, 64, {"pretrain": 200, "finetune": 200},
                         {"pretrain": 2, "finetune": 2}, "bands", load)


def _builtin_loader(name):
    return lambda data_dir, download, train_size, device: images.load_images(name, data_dir, download,
                                                                              train_size, device)


def _custom_loader(spec):
    return lambda data_dir, download, train_size, device: custom.load_custom(spec, train_size, device)


# Synthetic tick data (docs/protocol.md section 7): batch 16, 40000 + 20000 iterations, one dataset per
# data seed (data/tick.py), 16 single-feature test sets, 11 points per interpolation path.
TICK = DatasetRecord("tick", "vector", True, 16, 16, {"pretrain": 40000, "finetune": 20000},
                     {"pretrain": 200, "finetune": 100}, "single_feature", points=11, draw=tick.tick_data,
                     feature_sets=tick.single_feature_sets)
DATASETS = {"tick": TICK, **{n: _image(n, _builtin_loader(n)) for n in images.DATASETS}}


def canonical(name):
    """The name a run records: an .npz path made absolute (downstream scripts may start elsewhere)."""
    return os.path.abspath(os.path.expanduser(name)) if name.endswith(".npz") else name


def resolve(name):
    """The record of a registry name or of a researcher's data spec (a UserError otherwise)."""
    if name in DATASETS:
        return DATASETS[name]
    if custom.is_custom(name):
        return _image(name, _custom_loader(name))
    raise UserError(f"unknown dataset {name!r}; known: {', '.join(DATASETS)}, or path/to/file.npz or "
                    f"package.module:function for your own")
