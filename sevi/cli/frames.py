"""`sevi frames`: centroid a frame file into an events file, in chunks, resumably.

    sevi frames FRAMES.h5 --out EVENTS.h5 [--chunk N] [--grid G] [--no-ray] [--fast]

The work is :func:`sevi.camera.centroid_file.centroid_file`; this module parses the options and
picks the chunk runner: one by one in this process (``--no-ray``), or each chunk a Ray task
(``ray_jobs.frames_job.RayChunkRunner``, imported only then: the library runs without Ray).
"""

from __future__ import annotations

import argparse

from sevi.camera.centroid_file import (
    DEFAULT_CHUNK,
    DEFAULT_GRID,
    GPUS_PER_TASK,
    ChunkRunner,
    centroid_file,
    run_in_process,
)
from sevi.runtime.errors import InputError


def add_parser(subparsers) -> argparse.ArgumentParser:
    p = subparsers.add_parser("frames", help="centroid a FinalImage frame file into events (streamed, "
                              "parallel chunks, resumable)")
    p.add_argument("frames", help="input HDF5 with a FinalImage table")
    p.add_argument("--out", required=True, help="output events HDF5 (DetectedElectrons, AccumulatedImage)")
    p.add_argument("--chunk", type=int, default=DEFAULT_CHUNK,
                   help=f"frames per task (default {DEFAULT_CHUNK}, ~{DEFAULT_CHUNK} MB read)")
    p.add_argument("--grid", type=int, default=DEFAULT_GRID,
                   help=f"accumulated image side (default {DEFAULT_GRID})")
    p.add_argument("--no-ray", action="store_true", help="run chunks in this process, one by one")
    p.add_argument("--fast", action="store_true",
                   help="skip the joint refit of clusters of 3+ spots: ~25%% faster, ~3 points less "
                        "recall on crowded frames (BENCHMARKS.md)")
    p.add_argument("--device", default=None, help="torch device (default: cuda if available, else cpu)")
    p.add_argument("--gpus-per-task", type=float, default=GPUS_PER_TASK,
                   help=f"Ray num_gpus per task where the cluster has GPUs (default {GPUS_PER_TASK})")
    p.add_argument("--max-in-flight", type=int, default=None,
                   help="Ray tasks submitted at once (default: 2 x CPUs, bounds memory)")
    p.set_defaults(func=run)
    return p


def run(args: argparse.Namespace) -> int:
    """Run `sevi frames` (errors and interrupts: ``sevi.cli.policy``)."""
    problem = next((text for bad, text in (
        (args.max_in_flight is not None and args.max_in_flight < 1,
         f"--max-in-flight: got {args.max_in_flight}; expected >= 1 tasks"),
        (not args.gpus_per_task >= 0, f"--gpus-per-task: got {args.gpus_per_task}; expected >= 0"),
    ) if bad), None)
    if problem:
        raise InputError(problem)
    runner = chunk_runner(not args.no_ray, gpus_per_task=args.gpus_per_task, max_in_flight=args.max_in_flight)
    done = centroid_file(args.frames, args.out, chunk=args.chunk, grid=args.grid, device=args.device,
                         fast=getattr(args, "fast", False), runner=runner, quiet=getattr(args, "quiet", False))
    print(f"sevi frames: {done.events} events from {done.n_frames} frames -> {done.out}")
    print(f"sevi frames: {done.rate}")
    return 0


def chunk_runner(use_ray: bool, *, gpus_per_task: float = GPUS_PER_TASK,
                 max_in_flight: int | None = None) -> ChunkRunner:
    """:func:`run_in_process`, or with ``use_ray`` the Ray runner (``gpus_per_task`` num_gpus per
    task where the cluster has GPUs; ``max_in_flight`` tasks submitted at once, None: 2 x CPUs)."""
    if not use_ray:
        return run_in_process
    from ray_jobs.frames_job import RayChunkRunner

    return RayChunkRunner(gpus_per_task=gpus_per_task, max_in_flight=max_in_flight)
