"""Mini-batch order as a pure function of (stream seeds, step).

Each data stream (for the synthetic sweep: one (data seed, model seed) pair) shuffles its training
set once per epoch and walks through it in batches, dropping the last incomplete batch. The
permutation of epoch e comes from a generator keyed by the stream and the block of epochs that
holds e, so the order at any step can be rebuilt without replaying earlier steps (resume) and does
not depend on which other streams share the population.
"""
import torch

from core.seeding import generator

EPOCH_BLOCK = 64  # epochs drawn per generator call


def _epoch_perms(stream, stage, block, n):
    g = generator("batches", stage, *stream, block)
    return torch.rand(EPOCH_BLOCK, n, generator=g).argsort(dim=1)  # (EPOCH_BLOCK, n)


def batch_indices(streams, stage, start, steps, n, batch_size):
    """Indices of the samples in each batch: (len(streams), steps, batch_size) int64.

    streams: list of tuples of non-negative ints (the stream's seeds); stage: int salt so that
    pre-training and fine-tuning shuffle differently; start: first global step; n: training-set size.
    """
    per_epoch = n // batch_size
    if per_epoch < 1:
        raise ValueError(f"batch size {batch_size} exceeds the training-set size {n}")
    first_epoch, last_epoch = start // per_epoch, (start + steps - 1) // per_epoch
    out = []
    for stream in streams:
        blocks = range(first_epoch // EPOCH_BLOCK, last_epoch // EPOCH_BLOCK + 1)
        perms = torch.cat([_epoch_perms(stream, stage, b, n) for b in blocks])
        perms = perms[:, : per_epoch * batch_size].reshape(-1, batch_size)  # all batches in blocks
        offset = blocks[0] * EPOCH_BLOCK * per_epoch
        out.append(perms[start - offset: start - offset + steps])
    return torch.stack(out)
