"""A shuffling sampler whose order is a function of (seed, epoch) alone, so a resumed run sees the same batches."""

from __future__ import annotations

from collections.abc import Iterator, Sized

import torch
from torch.utils.data import RandomSampler


class EpochShuffleSampler(RandomSampler):
    """``RandomSampler`` that draws epoch ``e``'s permutation from a generator seeded with ``seed + e``.

    A plain ``RandomSampler`` takes its seed from the global torch RNG, whose state after a restart depends on
    everything that ran before (sanity checks, worker start-up), so a resumed run would shuffle differently from an
    uninterrupted one. Lightning calls :meth:`set_epoch` before every epoch (and under DDP replaces this sampler
    by a ``DistributedSampler``, which is seeded the same way).
    """

    def __init__(self, data_source: Sized, seed: int = 0) -> None:
        super().__init__(data_source)
        self.seed = seed
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __iter__(self) -> Iterator[int]:
        generator = torch.Generator().manual_seed(self.seed + self.epoch)
        yield from torch.randperm(len(self.data_source), generator=generator).tolist()
