"""`sevi frames`: centroid a frame file into an events file, in chunks, resumably.

    sevi frames FRAMES.h5 --out EVENTS.h5 [--chunk N] [--grid G] [--no-ray]
    centroid_file(FRAMES.h5, EVENTS.h5, chunk=256, grid=1024, runner=run_in_process) -> exit status

FRAMES.h5 is streamed in chunks of ``chunk`` frames (never whole: 50,000 frames are ~50 GB). Each
chunk is centroided (sevi.camera.centroid) by :func:`process_chunk`, which reads its own frames from the
file and writes ``EVENTS.h5.parts/chunk_<start>_<stop>.h5`` atomically. A re-run skips chunks
whose part file exists, so an interrupted run resumes; when all are done the parts are merged into
EVENTS.h5 (atomically) and the parts directory is removed. A chunk that cannot be read (truncated
or corrupt input) stops the run with a message naming the frames; finished parts are kept.
Resuming is keyed on content: each part records a digest of the frames it was made from, a
digest of a sample of them (its first, middle and last frame) and the centroider settings. On
every resume the sample of each finished part is read again and compared (three frames per
chunk: ~1 % of the input's bytes): a part whose sample changed is centroided again. Beyond that,
while the input is the very file the manifest names (path, size and mtime, and also its device,
inode and ctime: ``cp -p`` keeps the size and mtime of what it copies, but the kernel sets the
ctime of every file written), the parts are trusted; otherwise (the input was repaired, replaced
or moved) every finished part is checked against all of its frames, and only those whose frames
changed are centroided again. Temporaries a killed run left in the parts folder are removed.

Who runs the chunks is a *chunk runner*: ``runner(chunks, finished) -> (failure, workers)`` runs
each :class:`Chunk` through :func:`process_chunk`, calls ``finished(n_frames)`` as each one ends,
and returns the first FrameFileError (None if none; running chunks may finish, no more start) and
how many chunks ran at once. :func:`run_in_process` runs them one by one here (tests; the GPU box,
which has no Ray); ``ray_jobs.frames_job.RayChunkRunner`` fans them out as Ray tasks, and is
imported only when asked for (:func:`chunk_runner`), so this module runs without Ray.
"""
from __future__ import annotations

import dataclasses
import json
import shutil
import time
import warnings
from pathlib import Path
from typing import Callable

from sevi.io.frame_files import FrameFileError
from sevi.runtime.errors import InputError, InputWarning


__all__ = ["centroid_file", "CentroidSummary", "Chunk", "ChunkRunner", "run_in_process", "process_chunk", "chunk_ranges",
           "centroid_config", "frames_digest", "sample_rows", "sample_digest", "MAX_GRID", "DEFAULT_CHUNK",
           "DEFAULT_GRID", "GPUS_PER_TASK"]

DEFAULT_CHUNK = 256    # frames per chunk: ~256 MB read per task
DEFAULT_GRID = 1024    # accumulated image side: the camera's pixels
GPUS_PER_TASK = 0.25   # Ray num_gpus per chunk task where the cluster has GPUs: four share a GPU
MAX_GRID = 8192        # AccumulatedImage side at most: 8 bins per camera pixel (512 MiB of int64 counts)


@dataclasses.dataclass(frozen=True)
class Chunk:
    """One chunk's work: the arguments of :func:`process_chunk`, in its order."""
    frames: str            # the frame file
    start: int             # first frame (row of FinalImage)
    stop: int              # one past the last frame
    part: str              # the part file to write
    config: dict           # CentroidConfig fields
    device: str | None     # torch device; None: sevi.runtime.device.pick_device()


@dataclasses.dataclass(frozen=True)
class CentroidSummary:
    """What :func:`centroid_file` made: events written, frames read, the events file, the rate."""
    events: int
    n_frames: int
    out: str
    rate: str              # frames/s overall and in steady state, one line


# (chunks, finished) -> (first FrameFileError or None, chunks run at once)
ChunkRunner = Callable[[list, Callable[[int], None]], tuple]


# --------------------------------------------------------------------------------------------
# the command


# --------------------------------------------------------------------------------------------
# the pipeline

def centroid_config(fast: bool = False):
    """The centroider settings of ``sevi frames``: the defaults, or with ``fast`` the joint
    cluster refit off (``CentroidConfig.cluster_max = 0``)."""
    from sevi.camera.centroid_config import CentroidConfig
    return CentroidConfig(cluster_max=0) if fast else CentroidConfig()


def chunk_ranges(n_frames: int, chunk: int) -> list[tuple[int, int]]:
    """``[(start, stop), ...]`` covering ``0..n_frames`` in chunks of ``chunk`` frames."""
    if chunk < 1:
        raise ValueError(f"--chunk must be >= 1, got {chunk}")
    return [(a, min(n_frames, a + chunk)) for a in range(0, n_frames, chunk)]


def _part_path(parts: Path, start: int, stop: int) -> Path:
    return parts / f"chunk_{start:09d}_{stop:09d}.h5"


def process_chunk(frames_path: str, start: int, stop: int, part_path: str,
                  config: dict | None = None, device: str | None = None) -> int:
    """Centroid frames ``start:stop`` of ``frames_path`` into the part file ``part_path``.

    Pure with respect to its inputs: reads its own frames (nothing large travels through Ray),
    writes atomically, returns the number of events. Raises FrameFileError on unreadable frames.
    """
    import torch

    from sevi.camera.centroid import centroid_frames
    from sevi.camera.centroid_config import CentroidConfig
    from sevi.io.frame_files import event_rows, read_frames
    from sevi.io.tables import atomic_h5
    from sevi.runtime.device import pick_device

    dev = torch.device(device) if device else pick_device()
    cfg = CentroidConfig(**(config or {}))
    ids, imgs = read_frames(frames_path, start, stop)
    res = centroid_frames(torch.from_numpy(imgs).to(dev), cfg)
    rows = event_rows(ids[res.frame.cpu().numpy()], res.x.cpu().numpy(), res.z.cpu().numpy())
    with atomic_h5(part_path) as f:
        f.create_dataset("DetectedElectrons", data=rows)
        f.create_dataset("ImageId", data=ids)  # every frame's id, events or not (duplicate check at merge)
        f.attrs["start"], f.attrs["stop"] = start, stop
        f.attrs["frames_digest"] = frames_digest(ids, imgs)
        f.attrs["sample_digest"] = frames_digest(*(x[sample_rows(0, len(ids))] for x in (ids, imgs)))
        f.attrs["centroid"] = json.dumps(config or {}, sort_keys=True)
    return len(rows)


def frames_digest(ids, imgs) -> str:
    """BLAKE2b of a chunk's ImageIds and pixels: what a finished chunk was made from (~1 GB/s)."""
    import hashlib

    import numpy as np

    h = hashlib.blake2b(digest_size=16)
    h.update(np.ascontiguousarray(ids, dtype="<i4").tobytes())
    h.update(np.ascontiguousarray(imgs, dtype="u1").tobytes())
    return h.hexdigest()


def sample_rows(start: int, stop: int) -> list[int]:
    """The frames of ``start:stop`` whose digest is checked on every resume: first, middle, last."""
    return sorted({start, (start + stop - 1) // 2, stop - 1})


def sample_digest(frames_path, start: int, stop: int) -> str:
    """:func:`frames_digest` of the :func:`sample_rows` of ``start:stop``, read from the file."""
    import numpy as np

    from sevi.io.frame_files import read_frames

    rows = [read_frames(frames_path, r, r + 1) for r in sample_rows(start, stop)]
    return frames_digest(np.concatenate([i for i, _ in rows]), np.concatenate([m for _, m in rows]))


def run_in_process(chunks: list[Chunk], finished: Callable[[int], None]):
    """The chunk runner of ``--no-ray``: the chunks one by one in this process."""

    for c in chunks:
        try:
            process_chunk(c.frames, c.start, c.stop, c.part, c.config, c.device)
        except FrameFileError as err:
            return err, 1
        finished(c.stop - c.start)
    return None, 1


# What makes finished parts reusable: the chunk layout and the centroider. The input file's
# identity is only a fast path: when it differs (the input was moved, repaired or replaced), each
# finished part is checked against the input's frames by its digest instead. The identity is the
# path, size and mtime, and the device, inode and ctime: `cp -p` and `touch -r` give a replaced
# file the old size and mtime, but no user can set the ctime, which every write moves.
_IDENTITY = ("n_frames", "chunk", "centroid")
_SAME_FILE = ("frames", "size", "mtime_ns", "dev", "ino", "ctime_ns")


def _manifest(frames_path: Path, n_frames: int, chunk: int, config: dict) -> dict:
    st = frames_path.stat()
    return {"frames": str(frames_path.resolve()), "size": st.st_size, "mtime_ns": st.st_mtime_ns,
            "dev": st.st_dev, "ino": st.st_ino, "ctime_ns": st.st_ctime_ns,
            "n_frames": n_frames, "chunk": chunk, "centroid": config}


def _part_attrs(parts: Path, a: int, b: int) -> dict:
    import h5py

    try:
        with h5py.File(_part_path(parts, a, b), "r") as f:
            return {k: f.attrs.get(k) for k in ("frames_digest", "sample_digest", "centroid")}
    except OSError:
        return {}


def _stale_parts(frames_path: Path, parts: Path, done, config: dict, whole: bool) -> list[tuple[int, int]]:
    """The finished chunks whose part no longer matches the input's frames or the centroider (or
    is unreadable, or predates digests). ``whole``: check all of each chunk's frames (reads the
    finished chunks again); else the sample (:func:`sample_rows`) only."""
    from sevi.io.frame_files import read_frames

    stale = []
    for a, b in done:
        at = _part_attrs(parts, a, b)
        if at.get("frames_digest") is None or at.get("centroid") != json.dumps(config, sort_keys=True):
            stale.append((a, b))
        elif whole or at.get("sample_digest") is None:
            if at["frames_digest"] != frames_digest(*read_frames(frames_path, a, b)):
                stale.append((a, b))
        elif at["sample_digest"] != sample_digest(frames_path, a, b):
            stale.append((a, b))
    return stale


def _prepare_resume(frames_path: Path, parts: Path, ranges, manifest: dict) -> None:
    """Check the parts folder before a run; raises InputError (or FrameFileError) to stop it.

    A manifest of another chunk layout or centroider stops the run (delete the folder to start
    over). A damaged manifest is reported and replaced. Every finished part's sample of frames is
    checked; when the manifest does not vouch for the input (another file, or the same file
    written since; damaged; missing), every finished part is checked by all of its frames. Stale
    parts are deleted, to be centroided again, and said so. Then the manifest is written
    (atomically)."""
    from sevi.io.atomic import write_json
    from sevi.io.paths import clean_temporaries

    clean_temporaries(parts, folder=True)  # a killed run's (or Ray task's) half-written parts
    mpath = parts / "manifest.json"
    old = None
    if mpath.exists():
        try:
            old = json.loads(mpath.read_text())
            if not isinstance(old, dict):
                raise ValueError("not a JSON object")
        except (ValueError, UnicodeDecodeError):
            warnings.warn(f"{mpath}: damaged (not a JSON object); replaced, and the finished chunks checked "
                          f"against the input by content", InputWarning)
            old = None
        else:
            if any(old.get(k) != manifest[k] for k in _IDENTITY):
                raise InputError(f"{parts}: holds parts of a different run (frame count, chunk or centroid "
                                 f"settings changed); expected the same settings, or delete the folder to start over")
    done = [(a, b) for a, b in ranges if _part_path(parts, a, b).exists()]
    same_file = old is not None and all(old.get(k) == manifest[k] for k in _SAME_FILE)
    if done:
        try:
            stale = _stale_parts(frames_path, parts, done, manifest["centroid"], whole=not same_file)
        except FrameFileError as err:
            raise FrameFileError(f"{err}; finished chunks cannot be checked against it; expected a readable "
                                 f"input") from None
        for a, b in stale:
            _part_path(parts, a, b).unlink()
        if not same_file:
            warnings.warn(f"{frames_path}: not the file the finished chunks were made from (another file, or "
                          f"written since); {len(done)} finished chunks checked by content: "
                          f"{len(done) - len(stale)} kept, {len(stale)} to centroid again", InputWarning)
        elif stale:
            warnings.warn(f"{frames_path}: the frames of {len(stale)} of {len(done)} finished chunks changed "
                          f"(their sampled frames differ), though the file's size and times did not; those "
                          f"chunks will be centroided again", InputWarning)
    write_json(mpath, manifest)
    return None


def _merge(parts: Path, ranges, out: Path, grid: int, n_frames: int, manifest: dict) -> int:
    """Concatenate the part files in frame order into the events file (atomic), streaming."""
    import h5py
    import numpy as np

    from sevi.io.frame_files import EventsWriter

    ids = []
    attrs = {"source": manifest["frames"], "centroid_config": json.dumps(manifest["centroid"])}
    with EventsWriter(out, grid=grid, n_frames=n_frames, attrs=attrs) as w:
        for a, b in ranges:
            with h5py.File(_part_path(parts, a, b), "r") as p:
                rows = p["DetectedElectrons"][...]
                if "ImageId" in p:
                    ids.append(p["ImageId"][...])
            w.append(rows["ImageId"], rows["x"], rows["z"])
    if ids:  # warned, not refused: the events are right, only their ImageIds are ambiguous
        uniq, seen = np.unique(np.concatenate(ids), return_counts=True)
        if (seen > 1).any():
            warnings.warn(f"{manifest['frames']}: FinalImage.ImageId {uniq[seen > 1][0]} is used by "
                          f"{seen[seen > 1][0]} frames ({int((seen > 1).sum())} ImageIds repeated); expected one frame "
                          f"per ImageId: the events of those frames share one ImageId in DetectedElectrons",
                          InputWarning)
    return w.count


def centroid_file(frames, out, *, chunk: int = DEFAULT_CHUNK, grid: int = DEFAULT_GRID,
                  device: str | None = None, fast: bool = False, runner: ChunkRunner = run_in_process,
                  quiet: bool = False) -> CentroidSummary:
    """Centroid the frame file ``frames`` into the events file ``out``, the chunks run by ``runner``.

    ``chunk`` frames per chunk; ``grid`` the AccumulatedImage side; ``device`` a torch device name
    (None: sevi.runtime.device.pick_device()); ``fast`` the joint cluster refit off; ``quiet`` no
    progress bar. Returns a :class:`CentroidSummary`. Raises InputError (FrameFileError,
    OutputIsInputError) for bad input or a chunk that cannot be read (finished chunks kept), and
    KeyboardInterrupt, saying where the finished chunks are kept, when interrupted."""
    from tqdm import tqdm

    from sevi.io.frame_files import frame_count
    from sevi.io.paths import check_outputs
    from sevi.runtime.device import pick_device

    frames_path, out = Path(frames), Path(out)
    problem = next((text for bad, text in (
        (chunk < 1, f"--chunk: got {chunk}; expected >= 1 frames per task"),
        (not 1 <= grid <= MAX_GRID, f"--grid: got {grid}; expected 1..{MAX_GRID} pixels per side of the "
                                    f"AccumulatedImage (the camera has 1024; {MAX_GRID} is 8 bins per pixel)"),
    ) if bad), None)
    if problem:
        raise InputError(problem)
    if device:
        pick_device(device)  # an unknown device fails here, not inside every task
    check_outputs({"--out": out}, {"FRAMES": frames_path})
    n_frames = frame_count(frames_path)
    if n_frames == 0:
        raise FrameFileError(f"{frames_path}: table 'FinalImage' has no rows; expected camera frames")
    config = dataclasses.asdict(centroid_config(fast))
    ranges = chunk_ranges(n_frames, chunk)
    parts = out.with_name(out.name + ".parts")
    parts.mkdir(parents=True, exist_ok=True)
    manifest = _manifest(frames_path, n_frames, chunk, config)
    _prepare_resume(frames_path, parts, ranges, manifest)

    todo = [Chunk(str(frames_path), a, b, str(_part_path(parts, a, b)), config, device)
            for a, b in ranges if not _part_path(parts, a, b).exists()]
    done_frames = n_frames - sum(c.stop - c.start for c in todo)
    bar = tqdm(total=n_frames, initial=done_frames, unit="frame", desc="centroiding", disable=quiet or None)
    t_start = time.perf_counter()
    done_at: list[tuple[float, int]] = []        # (time, frames) per finished chunk, for the rate

    def finished(n: int) -> None:
        bar.update(n)
        done_at.append((time.perf_counter(), n))
    try:
        failure, workers = runner(todo, finished)
    except KeyboardInterrupt:
        bar.close()
        raise KeyboardInterrupt(f"finished chunks kept in {parts}, re-run to resume") from None
    bar.close()
    if failure is not None:
        left = sum(1 for a, b in ranges if not _part_path(parts, a, b).exists())
        raise FrameFileError(f"{failure}; stopped: {len(ranges) - left} of {len(ranges)} chunks finished and "
                             f"kept in {parts}; fix or replace the input and re-run to resume")
    total = _merge(parts, ranges, out, grid, n_frames, manifest)
    shutil.rmtree(parts)
    return CentroidSummary(events=total, n_frames=n_frames, out=str(out),
                           rate=_rate_summary(t_start, done_at, workers))


def _rate_summary(t_start: float, done_at: list[tuple[float, int]], workers: int = 1) -> str:
    """Frames/s overall, and in steady state: the frames of chunks finished after the first
    ``workers`` chunks (those ran alongside Ray's and the workers' start-up) over the time since
    then; the figure a long file approaches."""
    if not done_at:
        return "nothing to do (all chunks were finished before)"
    t_end = done_at[-1][0]
    total = sum(n for _, n in done_at)
    text = f"{total} frames centroided in {t_end - t_start:.1f} s ({total / max(t_end - t_start, 1e-9):.1f} frames/s)"
    if len(done_at) > workers + 1 and t_end > done_at[workers - 1][0]:
        steady = sum(n for _, n in done_at[workers:])
        text += (f"; steady state {steady / (t_end - done_at[workers - 1][0]):.1f} frames/s "
                 f"(chunks after the first {workers})")
    return text
