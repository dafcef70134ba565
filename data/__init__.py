"""Dataset registry."""
from utils.args import UserError
DATASETS = ("tick",)


def check_dataset(name):
    if name not in DATASETS:
        raise UserError(f"unknown dataset {name!r}; known: {', '.join(DATASETS)}")
