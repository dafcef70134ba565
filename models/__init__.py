"""Model registry: name -> constructor, and the one place where a model's initial weights are drawn.

  mlp_si       SI MLP of the synthetic example (models/mlp.py; trained as a population)
  convnet_si   SI ConvNet, width c (models/convnet.py)
  resnet18_si  SI pre-activation ResNet-18, width k (models/resnet.py)
  resnet18     practical ResNet-18, width 64 by default: affine BNs, trainable head, no sphere
"""
import functools

import torch

from models.convnet import ConvNetSI
from models.mlp import SIMLP
from models.resnet import ResNet18
from utils.args import UserError
from utils.seeding import seed_of

MODELS = {"mlp_si": SIMLP, "convnet_si": ConvNetSI,
          "resnet18_si": functools.partial(ResNet18, scale_invariant=True),
          "resnet18": functools.partial(ResNet18, scale_invariant=False)}
IMAGE_MODELS = ("convnet_si", "resnet18_si", "resnet18")
DEFAULT_WIDTH = {"mlp_si": 32, "convnet_si": 32, "resnet18_si": 32, "resnet18": 64}
SCALE_INVARIANT = {"mlp_si": True, "convnet_si": True, "resnet18_si": True, "resnet18": False}


def check_model(name, dataset):
    if name not in MODELS:
        raise UserError(f"unknown model {name!r}; known: {', '.join(sorted(MODELS))}")
    if (name == "mlp_si") != (dataset == "tick"):
        raise UserError(f"model {name} does not fit dataset {dataset}: mlp_si is for tick, "
                        f"{', '.join(IMAGE_MODELS)} for images")


def build(name, seed, **model_args):
    """An image model with the initial weights of model seed `seed` (the same for every LR).

    The global RNG is forked, not reseeded, so building a model has no effect on other draws.
    """
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed_of("model_init", seed))
        return MODELS[name](**model_args)
