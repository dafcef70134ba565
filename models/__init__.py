"""Model registry: one record per model, and the one place where a model's initial weights are drawn.

  mlp_si       SI MLP of the synthetic example (models/mlp.py; trains through its fused population backend)
  convnet_si   SI ConvNet, width c (models/convnet.py)
  convnet      its practical counterpart: affine BNs, trainable head, no sphere
  resnet18_si  SI pre-activation ResNet-18, width k (models/resnet.py)
  resnet18     practical ResNet-18, width 64 by default: affine BNs, trainable head, no sphere
  vit_small    ViT-Small of appendix F (models/vit.py): Adam, RandAugment, batch 512, no sphere

A researcher's own class needs no record here: `--model path/to/file.py:Class` or
`--model package.module:Class` (models/custom.py) gets one made on the fly, with the SI recipe when
the class sets `scale_invariant = True` (checked numerically at start-up, never trusted) and the
practical one otherwise. Scripts read records, never names.
"""
import dataclasses
import functools
import os

import torch

from models.convnet import ConvNet, ConvNetSI
from models.mlp import SIMLP, MLPPopulation
from models.resnet import ResNet18
from models.vit import ViTSmall
from core.errors import UserError
from core.seeding import seed_of

# The paper's two recipes (docs/protocol.md sections 2 and 6); every field is a flag of train.py.
SI_RECIPE = {"optimizer": "sgd", "momentum": 0.0, "weight_decay": 0.0, "augment": "none", "sphere": "on"}
PRACTICAL_RECIPE = {"optimizer": "sgd", "momentum": 0.9, "weight_decay": 5e-4, "augment": "crop_flip",
                    "sphere": "off"}
# Appendix F's ViT (docs/protocol.md sections 3 and 4): Adam, weight decay 1e-4, RandAugment(2, 14) + crop + flip,
# constant LR, no sphere (regimes by the practical rule); batch 512
VIT_RECIPE = {"optimizer": "adam", "momentum": 0.0, "weight_decay": 1e-4, "augment": "randaugment", "sphere": "off"}


@dataclasses.dataclass(frozen=True)
class ModelRecord:
    """What the scripts know of a model. `cls(num_classes=N, in_channels=C, **args)` builds it."""
    name: str               # registry name, or the spec of a researcher's class (file.py:Class)
    cls: object
    scale_invariant: bool   # claims invariance to one common rescaling of its trainable weights
    args: dict              # default constructor arguments (width ...)
    smoke_args: dict        # --smoke: the same, tiny
    recipe: dict            # default recipe (SI_RECIPE or PRACTICAL_RECIPE, or the record's own)
    inputs: str = "image"   # "image" (N, C, H, W) or "vector" (N, D): must match the dataset record's
    population: object = None  # a fused backend that trains many members as stacked tensors, or None
    radius: float = None    # sphere radius when not given: None = the SI weights' norm at initialisation
    batch_size: int = None  # default mini-batch size when the model's recipe has one (else the dataset's)
    bf16: bool = False      # --bf16 auto turns bf16 autocast on for CUDA: measured to keep the accuracy
    # the random stream that seeds the initial weights (models.build): the SI MLP keeps the stream its
    # published runs were drawn from
    init_stream: str = "model_init"
    # constructor arguments that must not come from --model_args (the data decide them)
    reserved: tuple = ("num_classes", "in_channels")


MODELS = {r.name: r for r in (
    ModelRecord("mlp_si", SIMLP, True, {"width": 32}, {"width": 32}, SI_RECIPE, inputs="vector",
                population=MLPPopulation, radius=1.0, init_stream="mlp_init"),
    ModelRecord("convnet_si", ConvNetSI, True, {"width": 32}, {"width": 4}, SI_RECIPE),
    ModelRecord("convnet", ConvNet, False, {"width": 32}, {"width": 4}, PRACTICAL_RECIPE),
    ModelRecord("resnet18_si", functools.partial(ResNet18, scale_invariant=True), True, {"width": 32},
                {"width": 4}, SI_RECIPE),
    ModelRecord("resnet18", functools.partial(ResNet18, scale_invariant=False), False, {"width": 64},
                {"width": 4}, PRACTICAL_RECIPE, bf16=True),
    ModelRecord("vit_small", ViTSmall, False, {}, {"dim": 32, "depth": 2, "heads": 2, "dim_head": 16, "mlp_dim": 32},
                VIT_RECIPE, batch_size=512),
)}


def is_spec(name):
    return ":" in name


def canonical(name):
    """The name a run records: built-in names as they are, a file spec with its absolute path (so
    downstream scripts started elsewhere find it), a module spec as it is."""
    if is_spec(name):
        path, _, cls = name.rpartition(":")
        if path.endswith(".py"):
            return f"{os.path.abspath(os.path.expanduser(path))}:{cls}"
    return name


def resolve(name):
    """The record of a registry name or of a researcher's class spec (a UserError otherwise)."""
    if name in MODELS:
        return MODELS[name]
    if not is_spec(name):
        raise UserError(f"unknown model {name!r}; known: {', '.join(MODELS)}, or path/to/file.py:Class "
                        f"or package.module:Class for your own")
    from models.custom import load_class  # only for researchers' classes: imports their code
    cls = load_class(name)
    si = getattr(cls, "scale_invariant", False) is True
    return ModelRecord(name, cls, si, {}, {}, SI_RECIPE if si else PRACTICAL_RECIPE)


def construct(record, num_classes, in_channels, model_args):
    """record.cls(num_classes=, in_channels=, **model_args); a constructor error is a UserError."""
    from models.custom import construct as make
    return make(record.cls, num_classes, in_channels, model_args)


def build(model, seed, model_args=None, **kwargs):
    """A model with the initial weights of model seed `seed` (the same for every LR). model: a record
    or a name/spec; model_args (and kwargs on top) hold num_classes and in_channels too. The global
    RNG is forked, not reseeded, so building a model has no effect on other draws."""
    record = resolve(model) if isinstance(model, str) else model
    args = dict(model_args or {}, **kwargs)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed_of(record.init_stream, seed))
        return construct(record, args.pop("num_classes"), args.pop("in_channels"), args)
