"""Frequency bands: known answers (partition of the spectrum, the DC band, pure cosines, band specs,
the band-split study's groups, the display helpers of the band-images figure)."""
import math

import pytest
import torch

from core.errors import UserError
from analysis.fourier import (band_filter, band_images, band_index, band_test_sets, default_bands, display_scale,
                           log_spectrum, masked_log_spectrum, mid_high_boundary, parse_band_splits, parse_bands,
                           split_groups)


def _images(n=4, c=3, h=32, w=32, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.rand(n, c, h, w, generator=g)


def _cosine(k, l, h=32, w=32):
    """cos(2 pi (k i / h + l j / w)) as a (1, 1, h, w) image: all its energy at (k, l) and (-k, -l)."""
    i = torch.arange(h, dtype=torch.float64)[:, None]
    j = torch.arange(w, dtype=torch.float64)[None, :]
    return torch.cos(2 * math.pi * (k * i / h + l * j / w))[None, None]


# ---- parse_bands

def test_parse_bands_default_split():
    assert parse_bands("0,1-8,9-24,25-32") == [("0", 0, 0), ("1-8", 1, 8), ("9-24", 9, 24), ("25-32", 25, 32)]


def test_parse_bands_vit_split_and_spaces():
    assert parse_bands("0, 1-6 ,7-24") == [("0", 0, 0), ("1-6", 1, 6), ("7-24", 7, 24)]
    assert parse_bands("5") == [("5", 5, 5)]
    assert parse_bands("3-3") == [("3-3", 3, 3)]


@pytest.mark.parametrize("spec", ["", "  ", None, "0,,1-8", "a", "1-x", "1.5", "-3", "1--3", "1-2-3",
                                  "8-1", "0,0", "0-8,8-16", "1-8,3", "0-32,5-6", "²"])
def test_parse_bands_rejects(spec):
    with pytest.raises(UserError):
        parse_bands(spec)


# ---- band_index

def test_band_index_32():
    b = band_index(32, 32)
    assert b.shape == (32, 32) and b.dtype == torch.long
    assert b[16, 16] == 0 and b[0, 0] == 32 and b.max() == 32
    assert b[16, 0] == 16 and b[0, 16] == 16 and b[17, 15] == 2
    # symmetric about the centre wherever the mirror index exists (rows/cols 1..31)
    assert torch.equal(b[1:, 1:], b[1:, 1:].flip(0, 1))
    assert int((b == 1).sum()) == 4 and int((b == 0).sum()) == 1


@pytest.mark.parametrize("h,w,top", [(28, 28, 28), (28, 20, 24), (7, 9, 7)])
def test_band_index_other_sizes(h, w, top):
    b = band_index(h, w)
    assert b.shape == (h, w)
    assert b[h // 2, w // 2] == 0 and b.min() == 0 and b.max() == top


# ---- band_filter

@pytest.mark.parametrize("h,w", [(32, 32), (28, 28), (28, 20)])
def test_bands_sum_to_image(h, w):
    x = _images(h=h, w=w)
    top = int(band_index(h, w).max())
    parts = torch.stack([band_filter(x, b, b) for b in range(top + 1)])
    assert parts.dtype == torch.float32 and parts.shape[1:] == x.shape
    torch.testing.assert_close(parts.sum(0), x, atol=1e-5, rtol=0)
    torch.testing.assert_close(band_filter(x, 0, top), x, atol=1e-5, rtol=0)
    # the default four groups also partition the 32x32 spectrum
    if (h, w) == (32, 32):
        groups = sum(band_filter(x, lo, hi) for _, lo, hi in parse_bands("0,1-8,9-24,25-32"))
        torch.testing.assert_close(groups, x, atol=1e-5, rtol=0)


def test_band0_is_channel_mean():
    x = _images(n=3, c=3)
    expected = x.mean(dim=(-2, -1), keepdim=True).expand_as(x)
    torch.testing.assert_close(band_filter(x, 0, 0), expected, atol=1e-6, rtol=0)


@pytest.mark.parametrize("k,l", [(3, 5), (-7, 2), (0, 9), (1, 0), (-16, 3), (-16, -16)])
def test_cosine_lands_in_its_band(k, l):
    x = _cosine(k, l)
    band = abs(k) + abs(l)
    torch.testing.assert_close(band_filter(x, band, band), x.float(), atol=1e-5, rtol=0)
    others = [band_filter(x, b, b) for b in range(33) if b != band]
    assert max(o.abs().max().item() for o in others) < 1e-5
    # a range containing the band keeps it; one just missing it loses it
    torch.testing.assert_close(band_filter(x, max(band - 2, 0), band + 2), x.float(), atol=1e-5, rtol=0)
    assert band_filter(x, band + 1, 40).abs().max() < 1e-5


def test_band_filter_chunks_and_float64():
    x = _images(n=5).double()
    one = band_filter(x, 1, 8)
    assert one.dtype == torch.float32
    torch.testing.assert_close(band_filter(x, 1, 8, chunk=2), one, atol=0, rtol=0)
    torch.testing.assert_close(band_filter(x.float(), 1, 8), one, atol=1e-6, rtol=0)


def test_band_filter_rejects_non_float():
    with pytest.raises(ValueError):
        band_filter(torch.zeros(1, 3, 32, 32, dtype=torch.uint8), 0, 0)
    with pytest.raises(ValueError):
        band_filter(torch.zeros(3, 32, 32), 0, 0)


# ---- band_test_sets

def test_band_test_sets_normalisation():
    g = torch.Generator().manual_seed(1)
    x8 = torch.randint(0, 256, (3, 3, 32, 32), generator=g, dtype=torch.uint8)
    mean, std = (0.49, 0.48, 0.45), (0.25, 0.24, 0.26)
    out = dict(band_test_sets(x8, parse_bands("0,1-8,9-32"), mean, std))
    assert list(out) == ["0", "1-8", "9-32"]
    out.update(band_test_sets(x8, parse_bands("0-32"), mean, std))
    xf = x8.float() / 255
    m = torch.tensor(mean).view(1, 3, 1, 1)
    s = torch.tensor(std).view(1, 3, 1, 1)
    # groups holding frequency 0 are normalised like the regular test set ...
    torch.testing.assert_close(out["0"], (band_filter(xf, 0, 0) - m) / s, atol=1e-5, rtol=0)
    torch.testing.assert_close(out["0-32"], (xf - m) / s, atol=1e-4, rtol=0)
    # ... the others are raw and unclipped (negative values survive)
    torch.testing.assert_close(out["1-8"], band_filter(xf, 1, 8), atol=0, rtol=0)
    assert out["9-32"].min() < 0
    # float input in [0, 1] gives the same as uint8
    again = dict(band_test_sets(xf, parse_bands("1-8"), mean, std))
    torch.testing.assert_close(again["1-8"], out["1-8"], atol=0, rtol=0)


def test_band_test_sets_rejects_blank_group():
    with pytest.raises(UserError):
        list(band_test_sets(_images(n=1), parse_bands("0,33-40"), (0.5,) * 3, (0.25,) * 3))


@pytest.mark.parametrize("h, w", [(32, 32), (12, 12), (28, 28), (16, 24), (5, 3), (2, 2), (1, 1), (64, 64)])
def test_default_bands_partition_every_size(h, w):
    """The default groups of any image size cover bands 0..top exactly once (the paper's at 32x32)."""
    groups = parse_bands(default_bands(h, w))
    covered = [b for _, lo, hi in groups for b in range(lo, hi + 1)]
    assert covered == list(range(int(band_index(h, w).max()) + 1))
    assert (default_bands(h, w) == "0,1-8,9-24,25-32") == ((h, w) == (32, 32))


# ---- the band-split study (paper Fig. 16)

@pytest.mark.parametrize("h, w", [(32, 32), (28, 28), (16, 24), (12, 12), (64, 64), (5, 3), (2, 2)])
def test_split_groups_partition_every_size(h, w):
    """Every valid split's groups cover bands 0..top exactly once, and the mid/high boundary is the
    default groups' (so the 0 and high groups are the default ones)."""
    top = int(band_index(h, w).max())
    m = mid_high_boundary(h, w)
    default = parse_bands(default_bands(h, w))
    assert m == default[2][2] if len(default) > 2 else m == top
    assert m >= 2
    for s in range(1, m):
        groups = split_groups(s, h, w)
        covered = [b for _, lo, hi in groups for b in range(lo, hi + 1)]
        assert covered == list(range(top + 1)), (s, groups)
        assert groups[0] == ("0", 0, 0) and groups[1][1:] == (1, s) and groups[2][1:] == (s + 1, m)
        assert groups[3:] == ([default[-1]] if m < top else [])   # the high group, shared by every split
        assert parse_bands(",".join(k for k, _, _ in groups)) == groups  # keys as --bands would write them
    for bad in (0, m, m + 1, -1):
        with pytest.raises(ValueError):
            split_groups(bad, h, w)


def test_split_groups_32():
    assert split_groups(4, 32, 32) == [("0", 0, 0), ("1-4", 1, 4), ("5-24", 5, 24), ("25-32", 25, 32)]
    assert split_groups(8, 32, 32) == parse_bands(default_bands(32, 32))
    assert [k for k, _, _ in split_groups(1, 32, 32)] == ["0", "1", "2-24", "25-32"]
    assert [k for k, _, _ in split_groups(23, 32, 32)] == ["0", "1-23", "24", "25-32"]
    assert mid_high_boundary(32, 32) == 24 and mid_high_boundary(28, 28) == 21


@pytest.mark.parametrize("h, w", [(32, 32), (12, 12)])
def test_split_band_images_sum_to_image(h, w):
    x = _images(n=2, h=h, w=w)
    for s in range(1, mid_high_boundary(h, w)):
        torch.testing.assert_close(sum(band_filter(x, lo, hi) for _, lo, hi in split_groups(s, h, w)), x,
                                   atol=1e-5, rtol=0)


def test_parse_band_splits():
    assert parse_band_splits("4,6,8,10", 32, 32) == [4, 6, 8, 10]
    assert parse_band_splits(" 10, 4,4 ,+6", 32, 32) == [4, 6, 10]
    assert parse_band_splits("1,23", 32, 32) == [1, 23]
    assert parse_band_splits("20", 28, 28) == [20]
    assert parse_band_splits("1", 2, 2) == [1]


@pytest.mark.parametrize("spec, h, w", [("", 32, 32), (None, 32, 32), ("0", 32, 32), ("24", 32, 32),
                                        ("25", 32, 32), ("-1", 32, 32), ("4.5", 32, 32), ("4,,6", 32, 32),
                                        ("a", 32, 32), ("1e1", 32, 32), ("4-6", 32, 32), ("²", 32, 32),
                                        ("21", 28, 28), ("1", 1, 1), ("1", 1, 2)])
def test_parse_band_splits_rejects(spec, h, w):
    with pytest.raises(UserError) as e:
        parse_band_splits(spec, h, w)
    assert "--band_splits" in str(e.value) and "\n" not in str(e.value)


# ---- display helpers of the band-images figure (paper Fig. 7)

def test_band_images_are_the_unnormalised_band_filters():
    g = torch.Generator().manual_seed(2)
    x8 = torch.randint(0, 256, (3, 3, 32, 32), generator=g, dtype=torch.uint8)
    out = band_images(x8, parse_bands("0,1-8,9-24,25-32"))
    assert [k for k, _ in out] == ["0", "1-8", "9-24", "25-32"]
    for (key, b), (_, lo, hi) in zip(out, parse_bands("0,1-8,9-24,25-32")):
        torch.testing.assert_close(b, band_filter(x8.float() / 255, lo, hi), atol=0, rtol=0)
    torch.testing.assert_close(sum(b for _, b in out), x8.float() / 255, atol=1e-5, rtol=0)
    with pytest.raises(UserError):
        band_images(x8, parse_bands("33-40"))


@pytest.mark.parametrize("c", [1, 3])
def test_display_scale_maps_every_band_image_into_unit_range(c):
    g = torch.Generator().manual_seed(3)
    x8 = torch.randint(0, 256, (4, c, 32, 32), generator=g, dtype=torch.uint8)
    x8[1] = 77                                               # a flat image: every band image is constant
    for key, b in band_images(x8, parse_bands("0,1-8,9-24,25-32") + parse_bands("3") + parse_bands("0-32")):
        d = display_scale(b)
        assert d.shape == b.shape and d.min() >= 0 and d.max() <= 1, key
        lo, hi = d.amin(dim=(-2, -1)), d.amax(dim=(-2, -1))  # (n, C)
        varies = (b.amax(dim=(-2, -1)) - b.amin(dim=(-2, -1))) > 1e-5
        # channels that vary span exactly [0, 1]; constant ones (band 0, the flat image) keep their value
        assert torch.all(lo[varies] == 0) and torch.allclose(hi[varies], torch.ones_like(hi[varies]))
        if key == "0":
            assert not varies.any()
            torch.testing.assert_close(d, b.clamp(0, 1), atol=0, rtol=0)   # the mean colour
        if key in ("1-8", "9-24", "25-32", "3"):
            assert not varies[1].any() and d[1].abs().max() < 1e-5    # a flat image has no AC content
    # the formula itself, per image and channel
    b = dict(band_images(x8, parse_bands("1-8")))["1-8"]
    mn, mx = b.amin(dim=(-2, -1), keepdim=True), b.amax(dim=(-2, -1), keepdim=True)
    torch.testing.assert_close(display_scale(b)[[0, 2, 3]], ((b - mn) / (mx - mn))[[0, 2, 3]], atol=1e-6, rtol=0)


def test_log_spectrum_known_answer():
    x = _images(n=2, c=3)
    f = torch.fft.fftshift(torch.fft.fft2(x.double()), dim=(-2, -1))
    torch.testing.assert_close(log_spectrum(x), torch.log1p(f.abs()).sum(1).float(), atol=1e-4, rtol=1e-5)
    # a cosine at (k, l): its two conjugate entries at the shifted positions, nothing elsewhere
    s = log_spectrum(_cosine(3, 5))
    assert s.shape == (1, 32, 32)
    hot = (s[0] > 1e-3).nonzero().tolist()
    assert sorted(hot) == sorted([[16 + 3, 16 + 5], [16 - 3, 16 - 5]])


@pytest.mark.parametrize("c,h,w", [(1, 32, 32), (3, 32, 32), (3, 28, 20)])
def test_masked_spectrum_is_zero_outside_the_group(c, h, w):
    x8 = torch.randint(0, 256, (3, c, h, w), generator=torch.Generator().manual_seed(4), dtype=torch.uint8)
    full = log_spectrum(x8)
    b = band_index(h, w)
    for _, lo, hi in parse_bands(default_bands(h, w)) + [("5", 5, 5), ("3-40", 3, 40)]:
        m = masked_log_spectrum(x8, lo, hi)
        inside = (b >= lo) & (b <= hi)
        assert m.shape == (3, h, w)
        assert torch.all(m[:, ~inside] == 0)
        torch.testing.assert_close(m[:, inside], full[:, inside], atol=0, rtol=0)
        assert torch.all(m[:, inside] > 0)   # log(1 + |F|) > 0 wherever a random image has energy
