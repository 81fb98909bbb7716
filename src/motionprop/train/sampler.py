"""An iteration-based sampler: the paper counts iterations, not epochs.

The sample stream is a pure function of (seed, position): position ``p`` is
item ``p mod N`` of the ``p // N``-th seeded permutation of the dataset, drawn
for the ``p // N``-th time. Iteration ``it`` of a run with ``world_size``
processes, batch ``B`` per process and ``accum`` micro-batches per step uses
positions ``[it * G, (it + 1) * G)``, ``G = B * world_size * accum``; process
``r`` takes micro-batch ``m`` at offset ``(m * world_size + r) * B``. So a
restart at iteration ``it`` continues with exactly the next samples, and one
process accumulating ``k`` micro-batches sees the same samples as ``k``
processes.
"""

from __future__ import annotations

from typing import Iterator

import numpy as np
from torch.utils.data import Sampler


class IterationSampler(Sampler):
    """Yields ``(index, draw)`` keys for one process, from ``start_iter`` to ``total_iter``."""

    def __init__(self, dataset_size: int, total_iter: int, batch_size: int, world_size: int = 1, rank: int = 0,
                 accum: int = 1, seed: int = 0, start_iter: int = 0):
        if dataset_size < 1:
            raise ValueError("the dataset is empty")
        self.dataset_size = dataset_size
        self.total_iter = total_iter
        self.batch_size = batch_size
        self.world_size = world_size
        self.rank = rank
        self.accum = accum
        self.seed = seed
        self.start_iter = start_iter
        self._permutations: dict[int, np.ndarray] = {}

    def __len__(self) -> int:
        return max(0, self.total_iter - self.start_iter) * self.accum * self.batch_size

    def _permutation(self, epoch: int) -> np.ndarray:
        if epoch not in self._permutations:
            self._permutations = {epoch: np.random.default_rng([self.seed, epoch]).permutation(self.dataset_size)}
        return self._permutations[epoch]

    def key(self, position: int) -> tuple[int, int]:
        """The (index, draw) of a global stream position."""
        epoch, offset = divmod(position, self.dataset_size)
        return int(self._permutation(epoch)[offset]), epoch

    def __iter__(self) -> Iterator[tuple[int, int]]:
        global_batch = self.batch_size * self.world_size * self.accum
        for it in range(self.start_iter, self.total_iter):
            for micro in range(self.accum):
                first = it * global_batch + (micro * self.world_size + self.rank) * self.batch_size
                for position in range(first, first + self.batch_size):
                    yield self.key(position)
