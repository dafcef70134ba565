"""Pre-activation ResNet-18 of width k for 32x32 images (docs/protocol.md sections 3 and 6), SI or practical.

  x (N, in, 32, 32) -> stem conv3x3 in->k (no BN before it)       (N, k, 32, 32)
  4 stages x 2 blocks, widths k, 2k, 4k, 8k, first-block strides 1, 2, 2, 2
                                                                  (N, 8k, 4, 4)
  head: BN -> ReLU -> AvgPool(4) -> flatten -> Linear(8k -> classes)

Block (x: (N, cin, H, W) -> (N, cout, H/s, W/s)):
  a = ReLU(BN1(x))
  out = conv2(ReLU(BN2(conv1(a)))) + shortcut,   conv1 3x3 stride s, conv2 3x3 stride 1
  shortcut = x, or BN(a) -> conv1x1 stride s when the shape changes (`Pointwise`).
The extra BN in the projection shortcut follows the authors' ResNet18SI (after Li & Arora 2019,
arXiv 1910.07454); a is already scale-free, so it is kept for fidelity, not for invariance.

scale_invariant=True (SI, k = 32): BNs without affine, convs without bias, last layer without bias,
rescaled to Frobenius norm 10 and frozen. Every block output is then homogeneous of degree 1 in the
joint scale of the conv weights (identity shortcuts carry the stem's scale forward), and the head BN
removes it: the network is invariant to one common rescaling of all convs, not to per-layer ones,
hence one sphere for all of them. Conv weights: 27k + 2724k^2 (2,790,240 for k = 32, RGB).
scale_invariant=False (practical, k = 64): BNs with affine, trainable default-initialised last
layer with bias, no sphere: 11,173,066 parameters for 10 classes.
"""
import torch
from torch import nn

HEAD_NORM = 10.0


class Pointwise(nn.Conv2d):
    """1x1 convolution of stride s without bias. On CPUs it computes the same sums another way:
    subsample every s-th row and column, then a stride-1 convolution, because torch 2.14's CPU
    backward of strided 1x1 convolutions in channels_last hangs or crashes for few channels (width
    4). With it the ResNets train in channels_last on CPUs too: 1.06x faster for the SI ResNet-18,
    1.2x for the practical one. Elsewhere it is nn.Conv2d; its parameters and state_dict are
    nn.Conv2d's in either case."""

    def __init__(self, cin, cout, stride):
        super().__init__(cin, cout, 1, stride, bias=False)

    def forward(self, x):
        s = self.stride[0]
        if x.device.type != "cpu" or s == 1:
            return super().forward(x)
        return nn.functional.conv2d(x[:, :, ::s, ::s], self.weight)


class Block(nn.Module):
    def __init__(self, cin, cout, stride, affine):
        super().__init__()
        self.bn1 = nn.BatchNorm2d(cin, affine=affine)
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout, affine=affine)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.shortcut = None
        if stride != 1 or cin != cout:
            self.shortcut = nn.Sequential(nn.BatchNorm2d(cin, affine=affine),
                                          Pointwise(cin, cout, stride))

    def forward(self, x):
        a = torch.relu(self.bn1(x))
        out = self.conv2(torch.relu(self.bn2(self.conv1(a))))
        return out + (x if self.shortcut is None else self.shortcut(a))


class ResNet18(nn.Module):
    def __init__(self, width=32, num_classes=10, in_channels=3, scale_invariant=True):
        super().__init__()
        k, affine = width, not scale_invariant
        self.scale_invariant = scale_invariant
        self.stem = nn.Conv2d(in_channels, k, 3, 1, 1, bias=False)
        blocks, cin = [], k
        for cout, stride in ((k, 1), (2 * k, 2), (4 * k, 2), (8 * k, 2)):
            blocks += [Block(cin, cout, stride, affine), Block(cout, cout, 1, affine)]
            cin = cout
        self.blocks = nn.Sequential(*blocks)
        self.bn = nn.BatchNorm2d(8 * k, affine=affine)
        self.head = nn.Linear(8 * k, num_classes, bias=not scale_invariant)
        if scale_invariant:
            with torch.no_grad():
                self.head.weight.mul_(HEAD_NORM / self.head.weight.norm())
            self.head.requires_grad_(False)

    def forward(self, x):  # x: (N, in, 32, 32) -> logits (N, classes)
        h = torch.relu(self.bn(self.blocks(self.stem(x))))  # (N, 8k, 4, 4)
        return self.head(torch.flatten(nn.functional.avg_pool2d(h, 4), 1))
