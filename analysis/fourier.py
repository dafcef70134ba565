"""Frequency-band test sets (docs/protocol.md section 5, "Fourier features").

Per image and colour channel: 2D DFT, zero frequency shifted to the centre, band b = |k| + |l|
for the frequency (k, l) of each entry. A band group a-c keeps the entries with a <= b <= c and
inverts. For 32x32 the frequencies run -16..15 on each axis, so bands run 0..32 and the bands of
all groups covering 0..32 partition the spectrum: their band images sum to the original image.

    bands = parse_bands("0,1-8,9-24,25-32")
    for key, xb in band_test_sets(x_test_uint8, bands, mean, std):
        ...  # evaluate the model on xb, report accuracy under `key`

The band-split study (paper Fig. 16, the ViT appendix) moves the low/mid boundary s:
split_groups(s, 32, 32) -> 0, 1-s, (s+1)-24, 25-32. For display (paper Fig. 7), band_images gives
a group's band images and masked_log_spectrum its part of the log-amplitude spectrum.
"""
import re

import torch

from core.errors import UserError


def parse_bands(spec, flag="--bands"):
    """Band groups from a spec: "0,1-8,9-24,25-32" -> [("0", 0, 0), ("1-8", 1, 8), ...].

    The key is the group as written (spaces around it dropped), so results are reported under the
    names the user gave. `flag` only names the option in error messages.

    Groups are single bands "a" or ranges "a-c" of non-negative integers with a <= c; groups may not
    overlap (one band in two groups would be counted twice). Bad specs raise UserError.
    """
    if spec is None or not str(spec).strip():
        raise UserError(f"{flag} is empty: give comma-separated band groups, e.g. 0,1-8,9-24,25-32")
    groups = []
    for part in str(spec).split(","):
        key = part.strip()
        m = re.fullmatch(r"(\d+)(?:-(\d+))?", key, flags=re.ASCII)
        if m is None:
            raise UserError(f"{flag} {spec!r}: group {key!r} is not a band 'a' or a range 'a-c' of "
                            "non-negative integers, e.g. 0,1-8,9-24,25-32")
        lo, hi = int(m[1]), int(m[2] if m[2] is not None else m[1])
        if lo > hi:
            raise UserError(f"{flag} {spec!r}: group {key!r} runs backwards ({lo} > {hi})")
        for other, olo, ohi in groups:
            if lo <= ohi and olo <= hi:
                raise UserError(f"{flag} {spec!r}: groups {other!r} and {key!r} overlap; "
                                "each band may be in one group only")
        groups.append((key, lo, hi))
    return groups


PAPER_BANDS = "0,1-8,9-24,25-32"  # 32x32 images: background colour, low, mid, high (docs/protocol.md section 5)


def default_bands(h, w):
    """The default band groups for h x w images: the paper's for 32x32; for other sizes the same
    split scaled to the top band (|k| + |l| up to h // 2 + w // 2), e.g. 0,1-3,4-9,10-12 for 12x12."""
    top = h // 2 + w // 2
    if top == 32:
        return PAPER_BANDS
    edges = sorted({e for e in (round(top * 8 / 32), round(top * 24 / 32), top) if 1 <= e <= top})
    groups, lo = ["0"], 1
    for e in edges:
        groups.append(f"{lo}-{e}" if e > lo else f"{e}")
        lo = e + 1
    return ",".join(groups)


def _group_key(lo, hi):
    """A group's key as default_bands writes it: "a-c", or "a" for a single band."""
    return f"{lo}-{hi}" if hi > lo else f"{lo}"


def mid_high_boundary(h, w):
    """The last band of the mid group for h x w images: 24 for 32x32, as default_bands scales it
    (round(24 top / 32) with top = h // 2 + w // 2 the highest band, e.g. 21 for 28x28, 9 for 12x12)."""
    return round((h // 2 + w // 2) * 24 / 32)


def parse_band_splits(spec, h, w, flag="--band_splits"):
    """Low/mid splits from a spec: "4,6,8,10" -> [4, 6, 8, 10] (sorted, duplicates dropped).

    Each split s must be an integer with 1 <= s < M, M = mid_high_boundary(h, w) (24 for 32x32), so
    that the low group 1..s and the mid group s+1..M are both non-empty. Bad specs raise UserError.
    """
    m = mid_high_boundary(h, w)
    what = f"give integers s with 1 <= s < {m}, e.g. 4,6,8,10 ({h}x{w} images: low group 1..s, mid s+1..{m})"
    if spec is None or not str(spec).strip():
        raise UserError(f"{flag} is empty: {what}")
    if m < 2:
        raise UserError(f"{flag} {spec!r}: {h}x{w} images have too few bands for a low/mid split")
    splits = set()
    for part in str(spec).split(","):
        part = part.strip()
        if re.fullmatch(r"[+-]?\d+", part, flags=re.ASCII) is None or not 1 <= int(part) < m:
            raise UserError(f"{flag} {spec!r}: split {part!r} is not an integer in 1..{m - 1}; {what}")
        splits.add(int(part))
    return sorted(splits)


def split_groups(s, h, w):
    """The band groups of low/mid split s for h x w images: 0, 1-s (low), (s+1)-M (mid), (M+1)-top
    (high; absent when M == top, for tiny images), M = mid_high_boundary(h, w), top = h//2 + w//2.
    For 32x32: 0, 1-s, (s+1)-24, 25-32. Returns [(key, lo, hi)] as parse_bands does; they partition
    bands 0..top, and the 0 and high groups are the same for every s (computed once when merged)."""
    m, top = mid_high_boundary(h, w), h // 2 + w // 2
    if not 1 <= s < m:
        raise ValueError(f"split {s} is outside 1..{m - 1} for {h}x{w} images")
    groups = [("0", 0, 0), (_group_key(1, s), 1, s), (_group_key(s + 1, m), s + 1, m)]
    if m < top:
        groups.append((_group_key(m + 1, top), m + 1, top))
    return groups


def band_index(h, w, device=None):
    """LongTensor (h, w): band |k| + |l| of each entry of the centred (fftshift-ed) spectrum.

    After fftshift the entry at index i holds frequency i - n // 2 (torch/numpy convention, odd or
    even n), so for 32x32 the centre (16, 16) is band 0 and the corner (0, 0) = (-16, -16) is band 32.
    """
    k = torch.arange(h, device=device) - h // 2
    l = torch.arange(w, device=device) - w // 2
    return k.abs()[:, None] + l.abs()[None, :]


def band_filter(x, lo, hi, chunk=2048):
    """Keep bands lo..hi of every image and channel of x (N, C, H, W) float; float32, same shape.

    fft2 over the last two axes, fftshift, zero the entries whose band is outside [lo, hi],
    ifftshift, ifft2, real part; not clipped. The mask is symmetric under (k, l) -> (-k, -l) (also on
    the unpaired -H/2 row and -W/2 column, which alias onto themselves), so the imaginary part
    dropped is rounding only. Float64 input is transformed in float64, anything else in float32;
    `chunk` images at a time bound the complex temporaries (2048 x 3 x 32 x 32 complex64 = 50 MB).
    """
    if x.dim() != 4 or not x.is_floating_point():
        raise ValueError(f"band_filter wants float images (N, C, H, W), got {x.dtype} {tuple(x.shape)}")
    keep = band_mask(x.shape[-2], x.shape[-1], lo, hi, device=x.device)  # (H, W) bool, broadcast over N, C
    out = torch.empty(x.shape, dtype=torch.float32, device=x.device)
    for i in range(0, x.shape[0], chunk):
        f = centred_spectrum(x[i:i + chunk]) * keep
        out[i:i + chunk] = torch.fft.ifft2(torch.fft.ifftshift(f, dim=(-2, -1))).real
    return out


def band_mask(h, w, lo, hi, device=None):
    """BoolTensor (h, w): the entries of the centred spectrum whose band is in lo..hi."""
    b = band_index(h, w, device=device)
    return (b >= lo) & (b <= hi)


def centred_spectrum(x):
    """fftshift(fft2(x)) over the last two axes: complex, zero frequency at (H // 2, W // 2), as
    band_index numbers the entries. Float64 input is transformed in float64, anything else in float32."""
    work = torch.float64 if x.dtype == torch.float64 else torch.float32
    return torch.fft.fftshift(torch.fft.fft2(x.to(work)), dim=(-2, -1))


# ---------------------------------------------------------------- display (paper Fig. 7)

def band_images(x, bands):
    """[(key, band images (N, C, H, W) float32)] for each (key, lo, hi) in `bands`: the un-normalised
    band images of x (uint8, scaled by 1/255, or float in [0, 1]), as band_test_sets makes them but
    without the mean/std normalisation of the band-0 group. UserError for a group above the top band."""
    xf = x.float() / 255 if x.dtype == torch.uint8 else x
    top = int(band_index(x.shape[-2], x.shape[-1]).max())
    out = []
    for key, lo, hi in bands:
        if lo > top:
            raise UserError(f"band group {key!r} is empty: {tuple(x.shape[-2:])} images have bands 0..{top}")
        out.append((key, band_filter(xf, lo, hi)))
    return out


def display_scale(x, eps=1e-5):
    """Each image and channel of x (N, C, H, W) mapped to [0, 1] by (x - min) / (max - min), for display.

    A channel that is constant to within eps (the band-0 image: the channel's mean colour, plus FFT
    rounding that scaling would blow up into noise) keeps its value, clipped to [0, 1]."""
    lo = x.amin(dim=(-2, -1), keepdim=True)
    span = x.amax(dim=(-2, -1), keepdim=True) - lo
    flat = span <= eps
    return torch.where(flat, x.clamp(0, 1), (x - lo) / torch.where(flat, torch.ones_like(span), span))


def log_spectrum(x):
    """log(1 + |F|) of the centred spectrum of x (N, C, H, W) (uint8 scaled by 1/255, or float),
    summed over channels: (N, H, W) float32."""
    xf = x.float() / 255 if x.dtype == torch.uint8 else x
    return torch.log1p(centred_spectrum(xf).abs()).sum(dim=1).float()


def masked_log_spectrum(x, lo, hi):
    """log_spectrum(x) (N, H, W) with every entry outside bands lo..hi set to zero."""
    s = log_spectrum(x)
    return s * band_mask(s.shape[-2], s.shape[-1], lo, hi, device=s.device)


def band_test_sets(x, bands, mean, std, chunk=2048):
    """Yield (key, images) for each (key, lo, hi) in `bands`: the band images a model is fed.

    x: (N, C, H, W) uint8 (scaled by 1/255) or float already in [0, 1]. Band images are made from
    these un-normalised images. A group with lo == 0 holds the zero frequency, i.e. the mean colour,
    and gets the usual per-channel (x - mean) / std like the regular test set ("0-32" reproduces it).
    Groups with lo > 0 have zero mean per image and channel and go in raw and unclipped: subtracting
    the dataset mean would put a band-0 component back into them. Yields one group at a time so
    only one band copy of the test set is alive (10000 x 3 x 32 x 32 float32 = 123 MB). A group
    starting above the top band of the image size (32 for 32x32) raises UserError: it would be blank.
    """
    xf = x.float() / 255 if x.dtype == torch.uint8 else x
    mean = torch.as_tensor(mean, dtype=torch.float32, device=x.device).view(1, -1, 1, 1)
    std = torch.as_tensor(std, dtype=torch.float32, device=x.device).view(1, -1, 1, 1)
    top = int(band_index(x.shape[-2], x.shape[-1]).max())
    for key, lo, hi in bands:
        if lo > top:                                       # would be an all-zero test set
            raise UserError(f"band group {key!r} is empty: {tuple(x.shape[-2:])} images have bands 0..{top}")
        xb = band_filter(xf, lo, hi, chunk=chunk)
        yield key, ((xb - mean) / std if lo == 0 else xb)
