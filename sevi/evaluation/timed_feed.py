"""A batch feed wrapped to time the training loop's waits (``tools/bench_train.py``, ``tools/gpu_check.py``)."""

from __future__ import annotations

import time


class TimedFeed:
    """Wraps a feed; records when each step's batch was asked for and how long it took."""

    def __init__(self, feed):
        self.feed, self.t_call, self.wait = feed, [], []

    def __call__(self, step):
        t0 = time.perf_counter()
        self.t_call.append(t0)
        out = self.feed(step)
        self.wait.append(time.perf_counter() - t0)
        return out

    def rate(self, batch_size: int, warmup: int) -> tuple[float, float]:
        """(images/s, wait fraction) over calls warmup .. last."""
        span = self.t_call[-1] - self.t_call[warmup]
        n = len(self.t_call) - 1 - warmup
        return n * batch_size / span, sum(self.wait[warmup:-1]) / span
