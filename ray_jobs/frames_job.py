"""`sevi frames` and `sevi simulate-frames`: centroid a frame file in parallel chunks.

    sevi frames FRAMES.h5 --out EVENTS.h5 [--chunk N] [--grid G] [--no-ray]
    sevi simulate-frames FRAMES.h5 --frames N [--per-frame 100] [--hits disc|disc:R|shells|prior|HITS.h5]

`frames` streams FRAMES.h5 in chunks of ``--chunk`` frames (never whole: 50,000 frames are
~50 GB). Each chunk is one Ray task (``num_gpus`` fractional where the cluster has GPUs) that
reads its own frames from the file, centroids them (sevi.centroid) and writes
``EVENTS.h5.parts/chunk_<start>_<stop>.h5`` atomically. A re-run skips chunks whose part file
exists, so an interrupted run resumes; when all are done the parts are merged into EVENTS.h5
(atomically) and the parts directory is removed. A chunk that cannot be read (truncated or
corrupt input) stops the run with a message naming the frames; finished parts are kept.
Resuming is keyed on content: each part records a digest of the frames it was made from and the
centroider settings. While the input's path, size and mtime are those in ``manifest.json`` the
parts are trusted; otherwise (the input was repaired, replaced or moved) every finished part is
checked against the input's frames, and only those whose frames changed are centroided again.
``--no-ray`` runs the chunks in this process (tests; the GPU box, which has no Ray).

Wiring (the lead's sevi/cli.py)::

    from ray_jobs.frames_job import add_frames_parser, add_simulate_frames_parser
    add_frames_parser(subparsers); add_simulate_frames_parser(subparsers)
    # each sets args.func (run_frames / run_simulate_frames)
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import os
import shutil
import sys
import time
from pathlib import Path

__all__ = ["add_frames_parser", "run_frames", "add_simulate_frames_parser", "run_simulate_frames",
           "process_chunk", "chunk_ranges"]


# --------------------------------------------------------------------------------------------
# sevi frames

def add_frames_parser(subparsers) -> argparse.ArgumentParser:
    p = subparsers.add_parser("frames", help="centroid a FinalImage frame file into events (streamed, "
                              "parallel chunks, resumable)")
    p.add_argument("frames", help="input HDF5 with a FinalImage table")
    p.add_argument("--out", required=True, help="output events HDF5 (DetectedElectrons, AccumulatedImage)")
    p.add_argument("--chunk", type=int, default=256, help="frames per task (default 256, ~256 MB read)")
    p.add_argument("--grid", type=int, default=1024, help="accumulated image side (default 1024)")
    p.add_argument("--no-ray", action="store_true", help="run chunks in this process, one by one")
    p.add_argument("--fast", action="store_true",
                   help="skip the joint refit of clusters of 3+ spots: ~25%% faster, ~3 points less "
                        "recall on crowded frames (BENCHMARKS.md)")
    p.add_argument("--device", default=None, help="torch device (default: cuda if available, else cpu)")
    p.add_argument("--gpus-per-task", type=float, default=0.25,
                   help="Ray num_gpus per task where the cluster has GPUs (default 0.25)")
    p.add_argument("--max-in-flight", type=int, default=None,
                   help="Ray tasks submitted at once (default: 2 x CPUs, bounds memory)")
    p.set_defaults(func=run_frames)
    return p


def centroid_config(fast: bool = False):
    """The centroider settings of ``sevi frames``: the defaults, or with ``fast`` the joint
    cluster refit off (``CentroidConfig.cluster_max = 0``)."""
    from sevi.centroid import CentroidConfig
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
    import h5py
    import numpy as np
    import torch

    from sevi.centroid import CentroidConfig, centroid_frames
    from sevi.frames import default_device
    from sevi.atomic import atomic_path
    from sevi.frames_io import EVENT_DTYPE, read_frames

    dev = torch.device(device) if device else default_device()
    cfg = CentroidConfig(**(config or {}))
    ids, imgs = read_frames(frames_path, start, stop)
    res = centroid_frames(torch.from_numpy(imgs).to(dev), cfg)
    rows = np.empty(len(res), EVENT_DTYPE)
    rows["ImageId"] = ids[res.frame.cpu().numpy()]
    rows["x"] = res.x.cpu().numpy()
    rows["z"] = res.z.cpu().numpy()
    with atomic_path(part_path) as tmp, h5py.File(tmp, "w") as f:
        f.create_dataset("DetectedElectrons", data=rows)
        f.create_dataset("ImageId", data=ids)  # every frame's id, events or not (duplicate check at merge)
        f.attrs["start"], f.attrs["stop"] = start, stop
        f.attrs["frames_digest"] = frames_digest(ids, imgs)
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


# What makes finished parts reusable: the chunk layout and the centroider. The input's path, size
# and mtime are only a fast path: when they differ (the input was moved, repaired or replaced),
# each finished part is checked against the input's frames by its digest instead.
_IDENTITY = ("n_frames", "chunk", "centroid")


def _manifest(frames_path: Path, n_frames: int, chunk: int, config: dict) -> dict:
    st = frames_path.stat()
    return {"frames": str(frames_path.resolve()), "size": st.st_size, "mtime_ns": st.st_mtime_ns,
            "n_frames": n_frames, "chunk": chunk, "centroid": config}


def _stale_parts(frames_path: Path, parts: Path, done, config: dict) -> list[tuple[int, int]]:
    """The finished chunks whose part no longer matches the input's frames or the centroider
    (or is unreadable, or predates digests). Reads those frames again: I/O of the finished part."""
    import h5py

    from sevi.frames_io import read_frames

    stale = []
    for a, b in done:
        try:
            with h5py.File(_part_path(parts, a, b), "r") as f:
                digest, centroid = f.attrs.get("frames_digest"), f.attrs.get("centroid")
        except OSError:
            digest = centroid = None
        if (digest is None or centroid != json.dumps(config, sort_keys=True)
                or digest != frames_digest(*read_frames(frames_path, a, b))):
            stale.append((a, b))
    return stale


def _prepare_resume(frames_path: Path, parts: Path, ranges, manifest: dict) -> int | None:
    """Check the parts folder before a run; returns an exit status to stop with, or None to go on.

    A manifest of another chunk layout or centroider stops the run (delete the folder to start
    over). A damaged manifest is reported and replaced. When the manifest does not vouch for the
    input (another path, size or mtime; damaged; missing), finished parts are checked by content
    and the stale ones deleted, to be centroided again. Then the manifest is written (atomically)."""
    from sevi.atomic import write_json
    from sevi.frames_io import FrameFileError

    mpath = parts / "manifest.json"
    old = None
    if mpath.exists():
        try:
            old = json.loads(mpath.read_text())
            if not isinstance(old, dict):
                raise ValueError("not a JSON object")
        except (ValueError, UnicodeDecodeError):
            print(f"sevi frames: warning: {mpath}: damaged (not a JSON object); replaced, and the finished "
                  f"chunks checked against the input by content", file=sys.stderr)
            old = None
        else:
            if any(old.get(k) != manifest[k] for k in _IDENTITY):
                print(f"sevi frames: {parts}: holds parts of a different run (frame count, chunk or centroid "
                      f"settings changed); expected the same settings, or delete the folder to start over",
                      file=sys.stderr)
                return 2
    done = [(a, b) for a, b in ranges if _part_path(parts, a, b).exists()]
    same_file = old is not None and all(old.get(k) == manifest[k] for k in ("frames", "size", "mtime_ns"))
    if done and not same_file:
        try:
            stale = _stale_parts(frames_path, parts, done, manifest["centroid"])
        except FrameFileError as err:
            print(f"sevi frames: {err}; finished chunks cannot be checked against it; expected a readable "
                  f"input", file=sys.stderr)
            return 2
        for a, b in stale:
            _part_path(parts, a, b).unlink()
        print(f"sevi frames: the input is not the file the finished chunks were made from (path, size or "
              f"time differ); {len(done)} finished chunks checked by content: {len(done) - len(stale)} kept, "
              f"{len(stale)} to centroid again", file=sys.stderr)
    write_json(mpath, manifest)
    return None


def _merge(parts: Path, ranges, out: Path, grid: int, n_frames: int, manifest: dict) -> int:
    """Concatenate the part files in frame order into the events file (atomic), streaming."""
    import h5py
    import numpy as np

    from sevi.atomic import atomic_path
    from sevi.frames_io import EVENT_DTYPE

    image = np.zeros((grid, grid), np.int64)
    total = 0
    ids = []
    with atomic_path(out) as tmp, h5py.File(tmp, "w") as f:
        ds = f.create_dataset("DetectedElectrons", shape=(0,), maxshape=(None,), dtype=EVENT_DTYPE,
                              chunks=(65536,))
        for a, b in ranges:
            with h5py.File(_part_path(parts, a, b), "r") as p:
                rows = p["DetectedElectrons"][...]
                if "ImageId" in p:
                    ids.append(p["ImageId"][...])
            ds.resize((total + len(rows),))
            ds[total:] = rows
            total += len(rows)
            h, _, _ = np.histogram2d(rows["x"], rows["z"], bins=grid, range=[[-1, 1], [-1, 1]])
            image += h.astype(np.int64)
        d = f.create_dataset("AccumulatedImage", data=image, compression="gzip", compression_opts=4)
        d.attrs["grid"] = grid
        d.attrs["n_frames"] = n_frames
        d.attrs["axes"] = "axis 0 = x, axis 1 = z, bins of [-1, 1]"
        f.attrs["source"] = manifest["frames"]
        f.attrs["centroid_config"] = json.dumps(manifest["centroid"])
    if ids:  # warned, not refused: the events are right, only their ImageIds are ambiguous
        uniq, seen = np.unique(np.concatenate(ids), return_counts=True)
        if (seen > 1).any():
            print(f"sevi frames: warning: {manifest['frames']}: FinalImage.ImageId {uniq[seen > 1][0]} is used by "
                  f"{seen[seen > 1][0]} frames ({int((seen > 1).sum())} ImageIds repeated); expected one frame per "
                  f"ImageId: the events of those frames share one ImageId in DetectedElectrons", file=sys.stderr)
    return total


def run_frames(args: argparse.Namespace) -> int:
    """Run `sevi frames`; returns the process exit code (0 ok, 2 input error, 130 interrupted)."""
    from tqdm import tqdm

    from sevi.frames_io import FrameFileError, frame_count
    from sevi.generator import pick_device
    from sevi.paths import OutputIsInputError, refuse_output_over_input

    frames_path, out = Path(args.frames), Path(args.out)
    problem = next((text for bad, text in (
        (args.chunk < 1, f"--chunk: got {args.chunk}; expected >= 1 frames per task"),
        (args.grid < 1, f"--grid: got {args.grid}; expected >= 1 pixels per side"),
        (args.max_in_flight is not None and args.max_in_flight < 1,
         f"--max-in-flight: got {args.max_in_flight}; expected >= 1 tasks"),
        (not args.gpus_per_task >= 0, f"--gpus-per-task: got {args.gpus_per_task}; expected >= 0"),
    ) if bad), None)
    try:
        if problem:
            raise ValueError(problem)
        if args.device:
            pick_device(args.device)  # an unknown device fails here, not inside every task
        refuse_output_over_input({"--out": out}, {"FRAMES": frames_path})
        n_frames = frame_count(frames_path)
        if n_frames == 0:
            raise FrameFileError(f"{frames_path}: table 'FinalImage' has no rows; expected camera frames")
    except (ValueError, OutputIsInputError) as err:  # FrameFileError is a ValueError
        print(f"sevi frames: {err}", file=sys.stderr)
        return 2
    config = dataclasses.asdict(centroid_config(getattr(args, "fast", False)))
    ranges = chunk_ranges(n_frames, args.chunk)
    parts = out.with_name(out.name + ".parts")
    parts.mkdir(parents=True, exist_ok=True)
    manifest = _manifest(frames_path, n_frames, args.chunk, config)
    code = _prepare_resume(frames_path, parts, ranges, manifest)
    if code is not None:
        return code

    todo = [(a, b) for a, b in ranges if not _part_path(parts, a, b).exists()]
    done_frames = n_frames - sum(b - a for a, b in todo)
    bar = tqdm(total=n_frames, initial=done_frames, unit="frame", desc="centroiding",
               disable=getattr(args, "quiet", False) or None)
    failure = None
    t_start = time.perf_counter()
    workers = [1]                                # chunks run at once (set by _run_ray)
    done_at: list[tuple[float, int]] = []        # (time, frames) per finished chunk, for the rate

    def finished(n: int) -> None:
        bar.update(n)
        done_at.append((time.perf_counter(), n))
    try:
        if args.no_ray:
            for a, b in todo:
                try:
                    process_chunk(str(frames_path), a, b, str(_part_path(parts, a, b)), config, args.device)
                except FrameFileError as err:
                    failure = err
                    break
                finished(b - a)
        else:
            failure = _run_ray(args, frames_path, parts, todo, finished, workers, config)
    except KeyboardInterrupt:
        bar.close()
        print(f"sevi frames: interrupted; finished chunks kept in {parts}, re-run to resume",
              file=sys.stderr)
        return 130
    bar.close()
    if failure is not None:
        left = sum(1 for a, b in ranges if not _part_path(parts, a, b).exists())
        print(f"sevi frames: {failure}; stopped: {len(ranges) - left} of {len(ranges)} "
              f"chunks finished and kept in {parts}; fix or replace the input and re-run to resume",
              file=sys.stderr)
        return 2
    total = _merge(parts, ranges, out, args.grid, n_frames, manifest)
    shutil.rmtree(parts)
    print(f"sevi frames: {total} events from {n_frames} frames -> {out}")
    print(f"sevi frames: {_rate_summary(t_start, done_at, workers[0])}")
    return 0


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


def _run_ray(args, frames_path: Path, parts: Path, todo, finished, workers: list, config: dict):
    """Run the chunks as Ray tasks; returns the first FrameFileError, or None."""
    import ray

    from sevi.frames_io import FrameFileError

    if not ray.is_initialized():
        ray.init()
    gpus = ray.cluster_resources().get("GPU", 0) > 0
    task = ray.remote(num_cpus=1, num_gpus=args.gpus_per_task if gpus else 0)(process_chunk)
    limit = args.max_in_flight or max(2, 2 * int(ray.cluster_resources().get("CPU", 1)))
    workers[0] = max(1, min(limit, int(ray.cluster_resources().get("CPU", 1))))
    pending: dict = {}
    queue = list(todo)
    failure = None
    try:
        while queue or pending:
            while queue and failure is None and len(pending) < limit:
                a, b = queue.pop(0)
                ref = task.remote(str(frames_path.resolve()), a, b, str(_part_path(parts, a, b).resolve()),
                                  config, args.device)
                pending[ref] = (a, b)
            if failure is not None and not pending:
                break
            ready, _ = ray.wait(list(pending), num_returns=1)
            a, b = pending.pop(ready[0])
            try:
                ray.get(ready[0])
                finished(b - a)
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
    return failure


# --------------------------------------------------------------------------------------------
# sevi simulate-frames

def add_simulate_frames_parser(subparsers) -> argparse.ArgumentParser:
    p = subparsers.add_parser("simulate-frames",
                              help="simulate camera frames (FinalImage) plus the detected-electron truth")
    p.add_argument("out", help="output frame file (FinalImage, DetectedElectrons truth)")
    p.add_argument("--frames", type=int, default=10, help="number of frames (default 10)")
    p.add_argument("--per-frame", type=float, default=100.0,
                   help="mean detected electrons per frame (default 100); hits drawn = this / 0.9")
    p.add_argument("--hits", default="disc",
                   help="'disc' (uniform, radius 0.95), 'disc:R' (uniform, radius R), 'shells' (two fixed "
                        "Newton spheres), 'prior' "
                        "(a measurement from the notes' prior every 10 frames), or an HDF5 "
                        "file with a table (DetectedElectrons or GeneratedElectrons) with ImageId, x, z")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--batch", type=int, default=16, help="frames rendered at once (default 16)")
    p.add_argument("--device", default=None, help="torch device (default: cuda if available, else cpu)")
    p.set_defaults(func=run_simulate_frames)
    return p


def _disc_radius(hits: str) -> float:
    """``disc`` -> 0.95; ``disc:R`` -> R (detector units, in (0, 1])."""
    if hits == "disc":
        return 0.95
    try:
        r = float(hits.split(":", 1)[1])
    except ValueError:
        r = -1.0
    if not 0.0 < r <= 1.0:
        raise SystemExit(f"sevi simulate-frames --hits {hits}: expected disc:R with R in (0, 1], detector units")
    return r


HITS_NAMES = ("disc", "disc:R", "shells", "prior")


def _given_hits(path: str):
    import numpy as np

    from sevi.io import open_h5

    if not Path(path).exists():  # most often a misspelt name, not a missing file
        raise ValueError(f"--hits {path}: not one of {', '.join(HITS_NAMES)}, and no such file; expected one of "
                         f"those or an HDF5 file with a DetectedElectrons or GeneratedElectrons table")
    with open_h5(path) as f:
        for name in ("DetectedElectrons", "GeneratedElectrons"):
            if name in f and all(k in (f[name].dtype.names or ()) for k in ("ImageId", "x", "z")):
                rows = f[name][...]
                break
        else:
            raise ValueError(f"{path}: no DetectedElectrons/GeneratedElectrons table with ImageId, x, z")
    for k in ("x", "z"):
        bad = ~np.isfinite(rows[k])
        if bad.any():
            raise ValueError(f"{path}: field '{name}.{k}' is {rows[k][bad][0]} in row {int(np.argmax(bad))}; "
                             f"expected finite detector coordinates")
    if len(rows) == 0:
        raise ValueError(f"{path}: table '{name}' has no rows; expected electron hits")
    ids = rows["ElectronId"] if "ElectronId" in rows.dtype.names else np.arange(len(rows))
    uniq, frame = np.unique(rows["ImageId"], return_inverse=True)
    return rows["x"].astype(np.float64), rows["z"].astype(np.float64), frame, uniq.astype(np.int32), ids


def run_simulate_frames(args: argparse.Namespace) -> int:
    import numpy as np
    import torch
    from tqdm import tqdm

    from sevi.frames import FrameModel, default_device, draw_disc_hits, draw_prior_hits, draw_shell_hits, render_frames
    from sevi.frames_io import FrameWriter
    from sevi.paths import refuse_output_over_input

    from sevi.generator import pick_device

    given = args.hits not in ("disc", "shells", "prior") and not args.hits.startswith("disc:")
    refuse_output_over_input({"OUT": args.out}, {"--hits": args.hits if given else None})
    for bad, text in ((args.frames < 1, f"--frames: got {args.frames}; expected >= 1 frames"),
                      (not 0 < args.per_frame < 1e5,  # also false for NaN; 1e5 spots would cover a frame
                       f"--per-frame: got {args.per_frame}; expected a mean count of electrons in (0, 1e5)"),
                      (args.batch < 1, f"--batch: got {args.batch}; expected >= 1 frames")):
        if bad:
            raise ValueError(text)
    dev = pick_device(args.device) if args.device else default_device()
    model = FrameModel()
    gen = torch.Generator(device=dev)
    gen.manual_seed(args.seed)
    n_hits = args.per_frame / model.detect_prob
    if args.hits in ("disc", "shells", "prior") or args.hits.startswith("disc:"):
        if args.hits == "prior":
            x, z, fr = draw_prior_hits(args.frames, n_hits, generator=gen, seed=args.seed)
        elif args.hits == "shells":
            x, z, fr = draw_shell_hits(args.frames, n_hits, generator=gen)
        else:
            x, z, fr = draw_disc_hits(args.frames, n_hits, radius=_disc_radius(args.hits), generator=gen)
        x, z, fr = x.cpu().numpy(), z.cpu().numpy(), fr.cpu().numpy()
        image_ids = np.arange(args.frames, dtype=np.int32)
        eids = np.arange(len(x))
    else:
        x, z, fr, image_ids, eids = _given_hits(args.hits)
    n_frames = len(image_ids)
    with FrameWriter(args.out) as w:
        for a in tqdm(range(0, n_frames, args.batch), unit="batch", desc="rendering", disable=None):
            b = min(n_frames, a + args.batch)
            sel = (fr >= a) & (fr < b)
            frames, det = render_frames(torch.from_numpy(x[sel]), torch.from_numpy(z[sel]),
                                        torch.from_numpy(fr[sel] - a), b - a, model, generator=gen)
            det = det.cpu().numpy()
            w.append(image_ids[a:b], frames.cpu().numpy())
            w.append_truth(image_ids[fr[sel][det]], eids[sel][det], x[sel][det], z[sel][det])
    print(f"sevi simulate-frames: {n_frames} frames -> {args.out}")
    return 0


def main(argv=None) -> int:
    """Stand-alone entry with the same commands as ``sevi frames`` and ``sevi simulate-frames``: python -m ray_jobs.frames_job ..."""
    ap = argparse.ArgumentParser(prog="sevi")
    sub = ap.add_subparsers(required=True)
    add_frames_parser(sub)
    add_simulate_frames_parser(sub)
    args = ap.parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    os.environ.setdefault("RAY_ENABLE_UV_RUN_RUNTIME_ENV", "0")
    sys.exit(main())
