"""The Ray runner of `sevi frames`: each chunk of the frame file is one Ray task.

sevi/camera/centroid_file.py does the rest (chunking, the per-chunk work, resume, the merge) and takes
this runner when Ray is asked for (``sevi frames`` without ``--no-ray``)::

    centroid_file(FRAMES.h5, EVENTS.h5, runner=RayChunkRunner(gpus_per_task=0.25))

A task reads its own frames from the file (nothing large travels through Ray) and writes its part
file; ``num_gpus`` is fractional where the cluster has GPUs.
"""
from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Callable

from sevi.camera.centroid_file import GPUS_PER_TASK, Chunk, process_chunk

__all__ = ["RayChunkRunner"]


@dataclasses.dataclass(frozen=True)
class RayChunkRunner:
    """A chunk runner (sevi.camera.centroid_file.ChunkRunner) that runs each chunk as a Ray task,
    starting Ray (``ray.init()``) if it is not running."""
    gpus_per_task: float = GPUS_PER_TASK   # Ray num_gpus per task where the cluster has GPUs
    max_in_flight: int | None = None       # tasks submitted at once; None: 2 x CPUs (bounds memory)

    def __call__(self, chunks: list[Chunk], finished: Callable[[int], None]):
        """Run ``chunks``; returns (the first FrameFileError or None, chunks run at once)."""
        import ray

        from sevi.io.frame_files import FrameFileError

        if not ray.is_initialized():
            ray.init()
        gpus = ray.cluster_resources().get("GPU", 0) > 0
        task = ray.remote(num_cpus=1, num_gpus=self.gpus_per_task if gpus else 0)(process_chunk)
        limit = self.max_in_flight or max(2, 2 * int(ray.cluster_resources().get("CPU", 1)))
        workers = max(1, min(limit, int(ray.cluster_resources().get("CPU", 1))))
        pending: dict = {}
        queue = list(chunks)
        failure = None
        try:
            while queue or pending:
                while queue and failure is None and len(pending) < limit:
                    c = queue.pop(0)
                    # absolute paths: a task's working directory need not be the driver's
                    ref = task.remote(str(Path(c.frames).resolve()), c.start, c.stop, str(Path(c.part).resolve()),
                                      c.config, c.device)
                    pending[ref] = c
                if failure is not None and not pending:
                    break
                ready, _ = ray.wait(list(pending), num_returns=1)
                c = pending.pop(ready[0])
                try:
                    ray.get(ready[0])
                    finished(c.stop - c.start)
                except Exception as err:  # RayTaskError wraps the task's exception
                    cause = getattr(err, "cause", None) or err
                    if isinstance(cause, FrameFileError) or isinstance(err, FrameFileError):
                        failure = failure or cause
                        queue.clear()        # let running chunks finish, start no more
                    else:
                        raise
        except KeyboardInterrupt:
            for ref in pending:
                ray.cancel(ref)
            raise
        return failure, workers
