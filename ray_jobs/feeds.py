"""The pool's batch feed for a training loop: ``feed(step) -> batch``, pulled from the shared pool.

It serves the same batches as the in-process feed (``sevi.regressor.batches.StreamBatches``): the
seed of a step is ``sevi.regressor.batches.stream_seed(base, step, rank, world)``, a pure function
(the one the training loop's own batches use), which is also what makes a resumed run continue the
same stream of data.
"""

from __future__ import annotations

from typing import Iterator

import numpy as np
import torch

from sevi.regressor.batches import stream_seed


def to_torch(batch: dict) -> dict[str, torch.Tensor]:
    # Pool batches arrive as read-only zero-copy numpy views; training needs writable tensors.
    return {k: torch.from_numpy(np.array(v)) for k, v in batch.items()}


class PoolFeed:
    """Pulls from the shared pool, several requests in flight, in step order.

    Asking for the step after the last one continues the stream; asking for any other step (a
    resume, a restart) starts a new stream there.
    """

    def __init__(self, client, recipe: str, params: dict, base_seed: int, rank: int = 0, world: int = 1,
                 max_steps: int = 1 << 40):
        self.client = client
        self.recipe, self.params = recipe, dict(params)
        self.base_seed, self.rank, self.world, self.max_steps = base_seed, rank, world, max_steps
        self._stream: Iterator | None = None
        self._next_step = None
        self.wait_s = 0.0  # time the consumer spent blocked on the pool

    def _open(self, step: int) -> None:
        seeds = (stream_seed(self.base_seed, s, self.rank, self.world) for s in range(step, self.max_steps))
        self._stream = self.client.stream(self.recipe, self.params, seeds)
        self._next_step = step

    def __call__(self, step: int) -> dict:
        if self._stream is None or step != self._next_step:
            self._open(step)
        seed, batch, wait = next(self._stream)
        assert seed == stream_seed(self.base_seed, step, self.rank, self.world)
        self._next_step = step + 1
        self.wait_s += wait
        return {**to_torch(batch), "seed": seed}  # the loop records which batches the weights have seen
