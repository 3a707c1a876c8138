"""Write-behind: a file's writes on one background thread while the caller computes the next batch.

A streamed writer (``sevi simulate``'s counts, the frame files) alternates compute (render a batch)
and I/O (hand the batch to HDF5). Both cost the same order of CPU per image on the project's box
(BENCHMARKS.md, "Busy machine": 512^2 images, about 8 ms to render and 6 ms to write, most of it the
kernel's first touch of the file's pages). HDF5 runs with Python's lock released for most of a
write, so a write on a second thread overlaps the next batch's compute.

Rules that keep this safe:

* **One write at a time, in order.** Writes run on one thread in the order they were submitted,
  and at most one is pending: ``submit`` first waits for the previous write. Memory is then two
  batches, whatever the file's length.
* **Nothing silent.** A write's exception is raised in the caller, at the next ``submit``, at
  ``wait`` or when the ``with`` block ends.
* **The file outlives its writes.** Leaving the ``with`` block waits for the pending write, also
  when the block raised (then the write's own error, if any, is secondary and not raised), so the
  file is never closed under a running write.
* The caller hands over arrays it no longer changes (each batch a fresh array).
"""

from __future__ import annotations

from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor

__all__ = ["WriteBehind"]


class WriteBehind:
    """``with WriteBehind() as w: w.submit(dataset.__setitem__, slice, array)`` - see the module."""

    def __init__(self) -> None:
        self._pool: ThreadPoolExecutor | None = None
        self._pending: Future | None = None

    def __enter__(self) -> WriteBehind:  # noqa: PYI034
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="write-behind")
        return self

    def submit(self, write: Callable, *args) -> None:
        """Run ``write(*args)`` on the writer thread, after the previous write has finished."""
        if self._pool is None:
            raise RuntimeError("WriteBehind.submit outside its with block")
        self.wait()
        self._pending = self._pool.submit(write, *args)

    def wait(self) -> None:
        """Wait for the pending write; raise its exception, if it had one."""
        pending, self._pending = self._pending, None
        if pending is not None:
            pending.result()

    def __exit__(self, exc_type, exc, tb) -> None:
        pool, self._pool = self._pool, None
        try:
            if exc_type is None:
                self.wait()
            elif self._pending is not None:  # the block failed: finish the write, keep the first error
                self._pending.exception()
                self._pending = None
        finally:
            pool.shutdown(wait=True)
