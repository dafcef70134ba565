"""Frequency-band test sets (PROTOCOL.md section 5, "Fourier features").

Per image and colour channel: 2D DFT, zero frequency shifted to the centre, band b = |k| + |l|
for the frequency (k, l) of each entry. A band group a-c keeps the entries with a <= b <= c and
inverts. For 32x32 the frequencies run -16..15 on each axis, so bands run 0..32 and the bands of
all groups covering 0..32 partition the spectrum: their band images sum to the original image.

    bands = parse_bands("0,1-8,9-24,25-32")
    for key, xb in band_test_sets(x_test_uint8, bands, mean, std):
        ...  # evaluate the model on xb, report accuracy under `key`
"""
import re

import torch

from utils.args import UserError


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


PAPER_BANDS = "0,1-8,9-24,25-32"  # 32x32 images: background colour, low, mid, high (PROTOCOL.md section 5)


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
    work = torch.float64 if x.dtype == torch.float64 else torch.float32
    keep = band_index(x.shape[-2], x.shape[-1], device=x.device)
    keep = (keep >= lo) & (keep <= hi)                     # (H, W) bool, broadcast over N and C
    out = torch.empty(x.shape, dtype=torch.float32, device=x.device)
    for i in range(0, x.shape[0], chunk):
        f = torch.fft.fftshift(torch.fft.fft2(x[i:i + chunk].to(work)), dim=(-2, -1))
        f = f * keep
        out[i:i + chunk] = torch.fft.ifft2(torch.fft.ifftshift(f, dim=(-2, -1))).real
    return out


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
