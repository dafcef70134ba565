"""Deterministic random streams: each named stream is a function of its integer keys alone.

A member's initial point, data and batch order must not depend on which other members share its
population (a member trained in a population equals the member trained alone), so every random draw
comes from a generator keyed by what it is for
("tick_train", data seed) or ("batches", data seed, model seed, block), never from a global RNG.
"""
import zlib

import numpy as np
import torch


def seed_of(name, *keys):
    """A 63-bit seed from a stream name and non-negative integer keys (numpy's SeedSequence hash)."""
    words = [zlib.crc32(name.encode())] + [int(k) for k in keys]
    return int(np.random.SeedSequence(words).generate_state(2, dtype=np.uint32).astype(np.uint64)
               @ np.array([1 << 31, 1], dtype=np.uint64))


def generator(name, *keys):
    """A CPU torch.Generator for the stream (name, *keys)."""
    return torch.Generator().manual_seed(seed_of(name, *keys))
