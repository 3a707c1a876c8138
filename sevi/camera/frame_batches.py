"""A measurement's frames summed whole and in K contiguous batches, streamed frame by frame.

The batches give the answer's error bars from the measurement's own spread
(``sevi.fit.batch_spread``): frame ``i`` of ``N`` belongs to batch ``i * K // N``, so every batch
holds ``N // K`` or ``N // K + 1`` consecutive frames (a slow drift of the source lands in the
spread, as it should). Each batch's sum is kept at a coarser ``grid`` (block sums, exact: the fit
reads the frame sum at 256^2, ``sevi.fit.direct_fit.REFINE_GRID``), so K = 100 batches cost
K * grid^2 * 8 bytes (52 MB at 256^2); the whole sum stays at the frames' grid.

Sums are exact integers: each frame is added to an int32 buffer (255 * frames per batch < 2^31
for up to 8.4 million frames in one batch), flushed into int64 sums at each batch's end. The
frames may live on any torch device (the renderer's) or be numpy arrays (a frame file's chunks).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

__all__ = ["BatchedSum", "FrameBatcher"]

_INT32_FRAMES = (2**31 - 1) // 255  # 8.4 million uint8 frames fit an int32 sum


@dataclass(frozen=True)
class BatchedSum:
    """total: (G, G) int64, the sum of all frames; n_frames; batch_sums: (K, g, g) int64, each
    batch's sum block-summed to g (None without batches); batch_frames: (K,) int64 frames per batch."""
    total: np.ndarray
    n_frames: int
    batch_sums: np.ndarray | None
    batch_frames: np.ndarray | None


class FrameBatcher:
    """``FrameBatcher(n_frames, batches, grid)``: ``add`` the frames in order (chunks (m, G, G)), then
    ``result()``. ``batches`` 0: the whole sum only. Raises ValueError for ``batches`` outside
    0..n_frames, a grid that does not divide the frames', or more frames than announced."""

    def __init__(self, n_frames: int, batches: int = 0, grid: int = 256, device="cpu"):
        if n_frames < 1:
            raise ValueError(f"n_frames must be >= 1, got {n_frames}")
        if not 0 <= batches <= n_frames:
            raise ValueError(f"batches: got {batches}; expected 0 (none) to {n_frames} (one frame each) for "
                             f"{n_frames} frames")
        self.n_frames, self.batches, self.grid = n_frames, batches, grid
        self.device = torch.device(device)
        self.done = 0
        self._current = None  # int32 (G, G): the running batch (or, without batches, the running chunk)
        self._batch = 0
        self._in_current = 0  # frames in the running buffer
        self.total = None
        self.sums = None
        self.frames = np.zeros(batches, dtype=np.int64)

    def _start(self, G: int) -> None:
        if self.batches and G % self.grid:
            raise ValueError(f"a {G} x {G} frame does not block-sum to the batches' {self.grid} x {self.grid} grid")
        self._current = torch.zeros((G, G), dtype=torch.int32, device=self.device)
        self.total = torch.zeros((G, G), dtype=torch.int64, device=self.device)
        if self.batches:
            self.sums = torch.zeros((self.batches, self.grid, self.grid), dtype=torch.int64, device=self.device)

    def _flush(self) -> None:
        """The running buffer into the whole sum and, with batches, into its batch's sum."""
        if not self._in_current:
            return
        cur = self._current.to(torch.int64)
        self.total += cur
        if self.batches:
            g, k = self.grid, cur.shape[0] // self.grid
            self.sums[self._batch] += cur.reshape(g, k, g, k).sum(dim=(1, 3))
        self._current.zero_()
        self._in_current = 0

    def add(self, frames) -> None:
        """Frames (m, G, G) of any integer type, the next m of the measurement."""
        frames = torch.as_tensor(frames, device=self.device)
        if self._current is None:
            self._start(frames.shape[-1])
        if self.done + len(frames) > self.n_frames:
            raise ValueError(f"more than the {self.n_frames} frames announced")
        for f in frames:
            b = self.done * self.batches // self.n_frames if self.batches else 0
            if b != self._batch or self._in_current == _INT32_FRAMES:
                self._flush()
                self._batch = b
            if self.batches:
                self.frames[b] += 1
            self._current.add_(f)
            self._in_current += 1
            self.done += 1

    def result(self) -> BatchedSum:
        """The sums (raises ValueError when fewer frames came than announced)."""
        if self.done != self.n_frames:
            raise ValueError(f"{self.done} frames of the {self.n_frames} announced")
        self._flush()
        sums = self.sums.cpu().numpy() if self.batches else None
        return BatchedSum(self.total.cpu().numpy(), self.n_frames, sums, self.frames.copy() if self.batches else None)
