"""RandAugment drawn per image, applied batched on the device (torchvision v2 semantics).

    g = torch.Generator().manual_seed(0)                        # CPU generator: same draws anywhere
    draws = randaugment_draws(len(xb), generator=g, device=xb.device)   # (2, num_ops, N) int64
    xb = randaugment(xb, draws)                                 # uint8 (N, C, H, W), like xb

Per image, the result is bit for bit what `torchvision.transforms.v2.RandAugment(num_ops=2,
magnitude=14)` (num_magnitude_bins=31, interpolation NEAREST, fill None) does to that image when
its own random draws give the same ops and signs (tests/test_randaugment.py checks it against
torchvision's own per-image code). Only the random draws differ from torchvision: they come from
one generator for the whole batch (every draw from a CPU generator keyed by
(stage, seed, epoch)), not from the global RNG image by image.

How a batch is applied: for each of the num_ops positions in turn, the images are grouped by what
they drew there, (op, sign) with the sign only counting for the signed ops, so at most
2 * 9 + 5 = 23 groups; each group gets one call of torchvision's tensor op
(`torchvision.transforms.v2.functional`) with that group's value. All these ops work per image on
a batch (the reductions of contrast/autocontrast/equalize are per image, affine/rotate apply one
grid to every image), so a group's result is each image's own result.

The op table (`OPS`, torchvision's order; value = table[magnitude], 31 bins, 14 -> 14/30 of the
way along; negated when the image's sign is 1, for the signed ops only):

    op            signed  table (linspace over the bins)   value at magnitude 14, 32x32
    Identity      no      -                                 -
    ShearX/Y      yes     0 .. 0.3 (shear = atan(v), deg)   +-0.14
    TranslateX    yes     0 .. 150/331 * W pixels, int()    +-6.767 -> +-6 px (28 px: +-5)
    TranslateY    yes     0 .. 150/331 * H pixels, int()    +-6 px
    Rotate        yes     0 .. 30 degrees                   +-14 degrees
    Brightness    yes     0 .. 0.9, factor 1 + v            factor 1.42 or 0.58
    Color         yes     0 .. 0.9, factor 1 + v            saturation 1.42 / 0.58; a 1-channel
                                                            image is returned unchanged (as PIL)
    Contrast      yes     0 .. 0.9, factor 1 + v            1.42 / 0.58
    Sharpness     yes     0 .. 0.9, factor 1 + v            1.42 / 0.58
    Posterize     no      round(8 - i / 7.5), int bits      6 bits
    Solarize      no      1 .. 0, threshold 255 * v         255 * 0.5333 = 136.0
    AutoContrast  no      -                                 -
    Equalize      no      -                                 -

Shear and translate are affines about the top-left corner (shear) / the centre (translate), as
torchvision does; the tables are float32 `torch.linspace` values, converted with float() as
torchvision does, so the values are bit for bit torchvision's.
"""
import math

import torch
from torchvision.transforms.v2 import InterpolationMode
from torchvision.transforms.v2 import functional as F

from core.errors import UserError

# torchvision's v2 RandAugment._AUGMENTATION_SPACE, in its order (the op index of a draw)
OPS = ("Identity", "ShearX", "ShearY", "TranslateX", "TranslateY", "Rotate", "Brightness", "Color",
       "Contrast", "Sharpness", "Posterize", "Solarize", "AutoContrast", "Equalize")
SIGNED = ("ShearX", "ShearY", "TranslateX", "TranslateY", "Rotate", "Brightness", "Color",
          "Contrast", "Sharpness")
NEAREST = InterpolationMode.NEAREST


def magnitude_table(num_bins, height, width):
    """op name -> the (num_bins,) tensor of torchvision's magnitudes, or None for ops without one
    (torchvision's expressions, so the float32 values are the same bit for bit)."""
    lin = lambda a, b: torch.linspace(a, b, num_bins)  # noqa: E731
    return {"Identity": None, "ShearX": lin(0.0, 0.3), "ShearY": lin(0.0, 0.3),
            "TranslateX": lin(0.0, 150.0 / 331.0 * width),
            "TranslateY": lin(0.0, 150.0 / 331.0 * height),
            "Rotate": lin(0.0, 30.0), "Brightness": lin(0.0, 0.9), "Color": lin(0.0, 0.9),
            "Contrast": lin(0.0, 0.9), "Sharpness": lin(0.0, 0.9),
            "Posterize": (8 - (torch.arange(num_bins) / ((num_bins - 1) / 4))).round().int(),
            "Solarize": lin(1.0, 0.0), "AutoContrast": None, "Equalize": None}


def op_value(name, magnitude, negative, num_bins, height, width):
    """The float torchvision passes to its op: table[magnitude], negated for a signed op whose
    sign is 1; 0.0 for ops without a table."""
    table = magnitude_table(num_bins, height, width)[name]
    if table is None:
        return 0.0
    value = float(table[magnitude])
    return -value if negative and name in SIGNED else value


def apply_op(x, name, value, fill=None):
    """One op with one value on a batch x (..., C, H, W) uint8, through torchvision's tensor ops,
    as torchvision's `_AutoAugmentBase._apply_image_or_video_transform` calls them."""
    if name == "Identity":
        return x
    if name in ("ShearX", "ShearY"):
        shear = math.degrees(math.atan(value))
        return F.affine(x, angle=0.0, translate=[0, 0], scale=1.0,
                        shear=[shear, 0.0] if name == "ShearX" else [0.0, shear],
                        interpolation=NEAREST, fill=fill, center=[0, 0])
    if name in ("TranslateX", "TranslateY"):
        t = int(value)  # truncation toward zero, as torchvision
        return F.affine(x, angle=0.0, translate=[t, 0] if name == "TranslateX" else [0, t],
                        scale=1.0, interpolation=NEAREST, shear=[0.0, 0.0], fill=fill)
    if name == "Rotate":
        return F.rotate(x, angle=value, interpolation=NEAREST, fill=fill)
    if name == "Brightness":
        return F.adjust_brightness(x, brightness_factor=1.0 + value)
    if name == "Color":
        return F.adjust_saturation(x, saturation_factor=1.0 + value)  # C = 1: unchanged
    if name == "Contrast":
        return F.adjust_contrast(x, contrast_factor=1.0 + value)
    if name == "Sharpness":
        return F.adjust_sharpness(x, sharpness_factor=1.0 + value)
    if name == "Posterize":
        return F.posterize(x, bits=int(value))
    if name == "Solarize":
        return F.solarize(x, threshold=255.0 * value)  # uint8: torchvision's bound is 255
    if name == "AutoContrast":
        return F.autocontrast(x)
    if name == "Equalize":
        return F.equalize(x)
    raise ValueError(f"unknown RandAugment op {name!r}; known: {', '.join(OPS)}")


def _check_params(num_ops, magnitude, num_bins=None):
    if not isinstance(num_ops, int) or num_ops < 0:
        raise UserError(f"RandAugment num_ops {num_ops!r}: use a whole number >= 0 (default 2)")
    top = "num_bins - 1" if num_bins is None else num_bins - 1
    if not isinstance(magnitude, int) or magnitude < 0 or (num_bins and magnitude >= num_bins):
        raise UserError(f"RandAugment magnitude {magnitude!r}: use a whole number in 0..{top} "
                        f"(default 14 of 31 bins)")


def randaugment_draws(n, num_ops=2, magnitude=14, generator=None, device=None):
    """The RandAugment draws of n images: a (2, num_ops, n) int64 tensor, [0] the op index into
    `OPS` (uniform over the 14), [1] the sign (1: the value is negated, probability 1/2), per
    position and image.

    Draw order (fixed: a resumed run rebuilds an epoch's draws from its generator):
    1. one `torch.randint(0, 14, (num_ops, n))`: position 0's n ops, then position 1's, ...;
    2. one `torch.rand((num_ops, n))` in the same layout, sign = (u < 0.5).
    A sign is drawn for every position and image, also where the op is not signed (it is then
    ignored), so the generator advances by the same amount whatever the ops.
    Drawn on the generator's device (CPU for a CPU generator, so the draws are the same on any
    device), then moved to `device` (default: the generator's). The draws do not depend on
    `magnitude` (checked only; torchvision too draws the sign whatever the magnitude).
    """
    _check_params(num_ops, magnitude)
    dev = generator.device if generator is not None else device
    ops = torch.randint(0, len(OPS), (num_ops, n), generator=generator, device=dev)
    signs = (torch.rand((num_ops, n), generator=generator, device=dev) < 0.5).long()
    return torch.stack([ops, signs]).to(device or dev)


def _convert_fill(fill):
    # as torchvision's _convert_fill_arg: None stays None (grid_sample's zero padding), a number
    # stays a number, a sequence becomes a list of floats (one per channel)
    if fill is None or isinstance(fill, (int, float)):
        return fill
    return [float(v) for v in fill]


def randaugment(x, draws, num_ops=2, magnitude=14, num_bins=31, fill=0):
    """RandAugment of a batch: image n gets op draws[0, k, n] (sign draws[1, k, n]) at position
    k = 0 .. num_ops-1 in turn, each at the value of bin `magnitude` of `num_bins`.

    x: (N, C, H, W) uint8, C = 1 or 3, any H, W, on any device; draws: (2, num_ops, N) int64 from
    `randaugment_draws` (moved to x's device). Returns a new uint8 tensor like x.
    fill: the value of pixels that shear/translate/rotate bring in from outside (0 = None with
    NEAREST: black); a number or one per channel.

    Per position: one sort of the batch by group key (op, sign), one host sync for the group
    sizes, one torchvision call per non-empty group on its contiguous slice, one scatter back.
    """
    _check_params(num_ops, magnitude, num_bins)
    if x.dtype != torch.uint8 or x.dim() != 4 or x.shape[1] not in (1, 3):
        raise UserError(f"randaugment wants uint8 images (N, 1 or 3, H, W), got {x.dtype} "
                        f"{tuple(x.shape)}; augment the uint8 data before normalising it")
    N, C, H, W = x.shape
    if tuple(draws.shape) != (2, num_ops, N):
        raise UserError(f"randaugment draws of shape {tuple(draws.shape)} for {N} images and "
                        f"num_ops {num_ops}; want (2, {num_ops}, {N}) from randaugment_draws")
    fill = _convert_fill(fill)
    if isinstance(fill, list) and len(fill) not in (1, C):
        raise UserError(f"randaugment fill {fill}: give one number or {C} (one per channel)")
    x = x.clone()
    if N == 0 or num_ops == 0:
        return x
    draws = draws.to(x.device)
    values = {name: op_value(name, magnitude, False, num_bins, H, W) for name in OPS}
    signed = torch.tensor([name in SIGNED for name in OPS], device=x.device)
    n_keys = 2 * len(OPS)
    for k in range(num_ops):
        ops, signs = draws[0, k], draws[1, k]
        if ops.min() < 0:  # (a host sync, as the bincount below)
            raise UserError("randaugment draws: op index < 0; use randaugment_draws")
        # key = 2 op + sign, the sign forced to 0 for unsigned ops (one call for all their images)
        key = 2 * ops + ((signs != 0) & signed[ops.clamp(max=len(OPS) - 1)]).long()  # (N,)
        counts = torch.bincount(key, minlength=n_keys).tolist()
        if len(counts) > n_keys:
            raise UserError(f"randaugment draws: op index >= {len(OPS)}; use randaugment_draws")
        if counts[0] == N:  # all Identity
            continue
        order = torch.argsort(key, stable=True)  # (N,) images grouped by key, keys ascending
        xs = x[order]
        parts, start = [], 0
        for g, count in enumerate(counts):
            if count == 0:
                continue
            name, negative = OPS[g // 2], g % 2 == 1
            v = -values[name] if negative else values[name]
            parts.append(apply_op(xs[start:start + count], name, v, fill))
            start += count
        out = torch.empty_like(x)
        out[order] = torch.cat(parts)
        x = out
    return x
