"""Model registry: name -> module class (the image models are not registered until the scripts use them)."""
from utils.args import UserError
from models.mlp import SIMLP

MODELS = {"mlp_si": SIMLP}


def check_model(name, dataset):
    if name not in MODELS:
        raise UserError(f"unknown model {name!r}; known: {', '.join(sorted(MODELS))}")
    if (name == "mlp_si") != (dataset == "tick"):
        raise UserError(f"model {name} does not fit dataset {dataset}: mlp_si is for tick only")
