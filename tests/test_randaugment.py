"""data/randaugment.py: batched RandAugment equals torchvision's per-image RandAugment bit for bit,
the draws are reproducible and distributed as torchvision's (op uniform, sign 1/2)."""
import pytest
import torch
from torchvision.transforms import v2

from data.randaugment import OPS, SIGNED, magnitude_table, randaugment, randaugment_draws
from core.errors import UserError


def images(n, c, h, w, seed=0):
    """uint8 (n, c, h, w) noise, each image-channel squeezed into its own random range [lo, hi]
    (so autocontrast and equalize have work to do), plus a constant and an all-zero image."""
    g = torch.Generator().manual_seed(seed)
    u = torch.rand((n, c, h, w), generator=g)
    lo = torch.randint(0, 128, (n, c, 1, 1), generator=g).float()
    hi = lo + torch.randint(1, 128, (n, c, 1, 1), generator=g).float()
    x = (lo + u * (hi - lo)).round().to(torch.uint8)
    x[0] = 77
    x[1] = 0
    return x


def covering_draws(n, num_ops, seed=0):
    """Draws where, at every position, the first 28 images run through all 14 ops x 2 signs (in a
    different order per position); the rest random."""
    assert n >= 2 * len(OPS)
    d = randaugment_draws(n, num_ops, generator=torch.Generator().manual_seed(seed))
    i = torch.arange(2 * len(OPS))
    for k in range(num_ops):
        pair = (i * (2 * k + 1) + 5 * k) % (2 * len(OPS))  # 2k+1 is prime to 28: a permutation
        d[0, k, :len(i)], d[1, k, :len(i)] = pair // 2, pair % 2
    return d


def torchvision_one(img, ops, signs, num_ops, magnitude, num_bins, fill):
    """One image (C, H, W) through torchvision's own RandAugment code for the given draws: the
    table lookup and sign flip of `RandAugment.forward`, then its
    `_apply_image_or_video_transform`."""
    ra = v2.RandAugment(num_ops=num_ops, magnitude=magnitude, num_magnitude_bins=num_bins,
                        interpolation=v2.InterpolationMode.NEAREST, fill=fill)
    h, w = img.shape[-2:]
    for k in range(num_ops):
        name = OPS[int(ops[k])]
        magnitudes_fn, signed = ra._AUGMENTATION_SPACE[name]
        magnitudes = magnitudes_fn(num_bins, h, w)
        if magnitudes is not None:
            magnitude_k = float(magnitudes[magnitude])
            if signed and int(signs[k]) == 1:
                magnitude_k *= -1
        else:
            magnitude_k = 0.0
        img = ra._apply_image_or_video_transform(img, name, magnitude_k,
                                                 interpolation=ra.interpolation, fill=ra._fill)
    return img


def check_equal(x, draws, num_ops=2, magnitude=14, num_bins=31, fill=0, tv_fill=None):
    out = randaugment(x, draws, num_ops, magnitude, num_bins, fill)
    assert out.dtype == torch.uint8 and out.shape == x.shape
    for n in range(len(x)):
        want = torchvision_one(x[n], draws[0, :, n], draws[1, :, n], num_ops, magnitude,
                               num_bins, tv_fill)
        names = [OPS[int(o)] for o in draws[0, :, n]]
        assert torch.equal(out[n], want), f"image {n}: ops {names} signs {draws[1, :, n].tolist()}"
    return out


def test_private_torchvision_api_and_op_table():
    # the reference uses torchvision's private per-op method: fail clearly if it moved
    assert hasattr(v2.RandAugment, "_apply_image_or_video_transform")
    space = v2.RandAugment._AUGMENTATION_SPACE
    assert tuple(space) == OPS
    assert {name for name, (_, signed) in space.items() if signed} == set(SIGNED)
    for bins, h, w in [(31, 32, 32), (31, 28, 28), (10, 20, 36)]:
        mine = magnitude_table(bins, h, w)
        for name, (fn, _) in space.items():
            theirs = fn(bins, h, w)
            assert (mine[name] is None) == (theirs is None), name
            if theirs is not None:
                assert mine[name].dtype == theirs.dtype and torch.equal(mine[name], theirs), name


def test_equals_torchvision_rgb_32():
    x = images(64, 3, 32, 32)
    out = check_equal(x, covering_draws(64, 2))
    assert not torch.equal(out, x)


def test_equals_torchvision_grey_28():
    check_equal(images(64, 1, 28, 28, seed=1), covering_draws(64, 2, seed=1))


def test_equals_torchvision_other_sizes_magnitudes_and_fill():
    # non-square (H != W catches a swapped translate), 3 ops, other magnitudes, a coloured fill
    x = images(40, 3, 20, 36, seed=2)
    check_equal(x, covering_draws(40, 3, seed=2), num_ops=3, magnitude=30)
    check_equal(x, covering_draws(40, 1, seed=3), num_ops=1, magnitude=0, num_bins=10)
    check_equal(x, covering_draws(40, 2, seed=4), magnitude=9, fill=(200, 100, 50),
                tv_fill=(200, 100, 50))
    check_equal(x, covering_draws(40, 2, seed=4), fill=None, tv_fill=None)


def test_equals_torchvision_random_draws():
    x = images(64, 3, 32, 32, seed=5)
    check_equal(x, randaugment_draws(64, generator=torch.Generator().manual_seed(5)))


def test_matches_torchvision_forward():
    """The draw semantics (op index into OPS, sign 1 = negated) are torchvision's: replay the
    global RNG the way RandAugment.forward consumes it and compare with its real output."""
    x = images(16, 3, 32, 32, seed=6)
    ra = v2.RandAugment(num_ops=2, magnitude=14)
    space = v2.RandAugment._AUGMENTATION_SPACE
    for n in range(len(x)):
        torch.manual_seed(100 + n)
        want = ra(x[n])
        torch.manual_seed(100 + n)
        d = torch.zeros((2, 2, 1), dtype=torch.long)
        for k in range(2):
            d[0, k, 0] = int(torch.randint(len(space), ()))
            if space[OPS[d[0, k, 0]]][1]:
                d[1, k, 0] = int(torch.rand(()) <= 0.5)
        assert torch.equal(randaugment(x[n:n + 1], d)[0], want), n


def test_grey_saturation_is_identity_as_torchvision():
    # torchvision (like PIL) returns a 1-channel image unchanged under adjust_saturation
    x = images(8, 1, 28, 28, seed=7)
    d = torch.zeros((2, 2, 8), dtype=torch.long)
    d[0] = OPS.index("Color")
    d[1, :, ::2] = 1
    assert torch.equal(check_equal(x, d), x)


def test_draws_reproducible_and_device():
    a = randaugment_draws(500, generator=torch.Generator().manual_seed(3))
    b = randaugment_draws(500, generator=torch.Generator().manual_seed(3), device="cpu")
    c = randaugment_draws(500, generator=torch.Generator().manual_seed(4))
    assert a.shape == (2, 2, 500) and a.dtype == torch.int64
    assert torch.equal(a, b) and not torch.equal(a, c)
    # the documented order: one randint (num_ops, n) for the ops, then one rand for the signs
    g = torch.Generator().manual_seed(3)
    ops = torch.randint(0, 14, (2, 500), generator=g)
    signs = (torch.rand((2, 500), generator=g) < 0.5).long()
    assert torch.equal(a, torch.stack([ops, signs]))
    x = images(500, 3, 32, 32)
    assert torch.equal(randaugment(x, a), randaugment(x, b))
    assert not torch.equal(randaugment(x, a), randaugment(x, c))
    assert torch.equal(x, images(500, 3, 32, 32))  # the input is left alone


def test_draw_distribution():
    # 7000 images x 2 positions = 14,000 draws: 1000 per op expected (sd ~30.5), 7000 signs 1
    d = randaugment_draws(7000, generator=torch.Generator().manual_seed(0))
    counts = torch.bincount(d[0].flatten(), minlength=len(OPS))
    assert len(counts) == len(OPS)
    assert ((counts - 1000).abs() <= 150).all(), counts.tolist()
    assert abs(int(d[1].sum()) - 7000) <= 300
    assert set(d[1].unique().tolist()) == {0, 1}


def test_edge_cases_and_bad_input():
    x = images(4, 3, 32, 32)
    g = torch.Generator().manual_seed(0)
    assert torch.equal(randaugment(x, randaugment_draws(4, 0, generator=g), num_ops=0), x)
    assert randaugment(x[:0], randaugment_draws(0, generator=g)).shape == (0, 3, 32, 32)
    d = randaugment_draws(4, generator=g)
    with pytest.raises(UserError, match="uint8"):
        randaugment(x.float(), d)
    with pytest.raises(UserError, match="uint8"):
        randaugment(torch.zeros((4, 4, 32, 32), dtype=torch.uint8), d)
    with pytest.raises(UserError, match="draws of shape"):
        randaugment(x, d[:, :1])
    with pytest.raises(UserError, match="magnitude"):
        randaugment(x, d, magnitude=31)
    with pytest.raises(UserError, match="op index"):
        randaugment(x, d + torch.tensor([14, 0]).view(2, 1, 1))
    with pytest.raises(UserError, match="num_ops"):
        randaugment_draws(4, num_ops=-1)
