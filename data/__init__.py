"""Dataset registry: the synthetic tick data (data/tick.py) and the image datasets (data/images.py)."""
from data.images import DATASETS as IMAGE_DATASETS
from utils.args import UserError

DATASETS = ("tick", *IMAGE_DATASETS)


def check_dataset(name):
    if name not in DATASETS:
        raise UserError(f"unknown dataset {name!r}; known: {', '.join(DATASETS)}")
