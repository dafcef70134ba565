"""SI ConvNet of width c (docs/protocol.md section 3): the paper's small CNN for CIFAR-10 (c = 32) and
CIFAR-100 (c = 128).

  x (N, in, 32, 32)
  conv3x3 in->c   BN ReLU              (N, c, 32, 32)
  conv3x3 c->2c   BN ReLU MaxPool(2)   (N, 2c, 16, 16)
  conv3x3 2c->4c  BN ReLU MaxPool(2)   (N, 4c, 8, 8)
  conv3x3 4c->8c  BN ReLU MaxPool(2)   (N, 8c, 4, 4)
  MaxPool(4), flatten                  (N, 8c)
  Linear(8c -> classes, bias), fixed   (N, classes)

Every conv is followed by BatchNorm without affine parameters, so the network is invariant to
rescaling any conv weight by c > 0; the four conv weights are its only trainable (SI) parameters,
9c(in + 42c) of them (387,936 for c = 32 on RGB). The last layer keeps its default-initialised
bias (as the authors' ConvNetSI does), its weight is rescaled to Frobenius norm 10 and both are
frozen: a trainable head would let the logits grow without bound and break the fixed effective LR.

`ConvNet` is its practical counterpart (no sphere: docs/protocol.md section 6): the same layers with
affine BatchNorms and a trainable, default-initialised head.
"""
import torch
from torch import nn

HEAD_NORM = 10.0


def _stage(cin, cout, pool, affine=False):
    layers = [nn.Conv2d(cin, cout, 3, padding=1, bias=False),  # bias is cancelled by BN anyway
              nn.BatchNorm2d(cout, affine=affine), nn.ReLU(inplace=True)]
    return layers + [nn.MaxPool2d(2)] if pool else layers


def _body(c, in_channels, affine):
    return [*_stage(in_channels, c, False, affine), *_stage(c, 2 * c, True, affine),
            *_stage(2 * c, 4 * c, True, affine), *_stage(4 * c, 8 * c, True, affine), nn.MaxPool2d(4), nn.Flatten()]


class ConvNetSI(nn.Sequential):
    """The SI ConvNet as one nn.Sequential; `scale_invariant` tells engine/sphere.py it may sphere it."""

    scale_invariant = True

    def __init__(self, width=32, num_classes=10, in_channels=3):
        c = width
        head = nn.Linear(8 * c, num_classes)
        with torch.no_grad():
            head.weight.mul_(HEAD_NORM / head.weight.norm())
        head.requires_grad_(False)
        super().__init__(*_body(c, in_channels, affine=False), head)

    @property
    def head(self):
        """The fixed last layer (as ResNet18.head)."""
        return self[-1]


class ConvNet(nn.Sequential):
    """The practical ConvNet: ConvNetSI's layers with affine BatchNorms and a trainable head."""

    scale_invariant = False

    def __init__(self, width=32, num_classes=10, in_channels=3):
        super().__init__(*_body(width, in_channels, affine=True), nn.Linear(8 * width, num_classes))

    @property
    def head(self):
        return self[-1]
