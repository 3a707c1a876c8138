"""HDF5 files of camera frames and of centroided events, in the course's layout.

Frame file (docs/formats.md):
    ``FinalImage``: compound table, fields ``ImageId`` '<i4' and ``Image`` 'u1' (1024, 1024);
    axis 0 of an image is x, axis 1 is z (sevi.camera.frames). 50,000 frames are ~50 GB, so frames are
    only ever read in chunks (:func:`iter_frame_chunks`), never whole.
    ``DetectedElectrons`` (optional, simulated files only): the truth, one row per electron that
    made a spot: ``ImageId`` '<i4', ``ElectronId`` '<i8' (row of the input hit list), ``x``, ``z``
    '<f8' detector units.

Events file (the output of centroiding):
    ``DetectedElectrons``: ``ImageId`` '<i4', ``x`` '<f8', ``z`` '<f8' (detector units): the
    course's table (sevi.io.tables.DETECTED_ELECTRONS_DTYPE) less ``ElectronId``, which a found spot lacks.
    ``AccumulatedImage``: '<i8' (grid, grid) counts of the events, the binning of
    ``np.histogram2d(x, z, bins=grid, range=[[-1, 1], [-1, 1]])``; attrs ``grid``, ``n_frames``.

Every write goes to a temporary file beside the target and is renamed over it (``os.replace``),
so a reader never sees half a file.
"""
from __future__ import annotations

import contextlib
import os
from pathlib import Path
from typing import Iterator

import h5py
import numpy as np

from sevi.io.tables import DETECTED_ELECTRONS_DTYPE, FINAL_IMAGE_DTYPE, FRAME_SHAPE, atomic_h5

__all__ = ["FRAME_DTYPE", "TRUTH_DTYPE", "EVENT_DTYPE", "FrameFileError", "frame_count", "read_frames",
           "iter_frame_chunks", "FrameWriter", "write_frames", "read_truth", "event_rows", "EventsWriter",
           "write_events", "read_events", "accumulate"]

# The table layouts are defined once, in sevi.io; these are their names in the frame and events files.
FRAME_DTYPE = FINAL_IMAGE_DTYPE
TRUTH_DTYPE = DETECTED_ELECTRONS_DTYPE
EVENT_DTYPE = np.dtype([(name, DETECTED_ELECTRONS_DTYPE.fields[name][0]) for name in ("ImageId", "x", "z")])


class FrameFileError(ValueError):
    """A frame or events file that is missing, malformed, truncated or corrupt."""


def _open(path: str | os.PathLike) -> h5py.File:
    from sevi.io.tables import open_h5
    return open_h5(path, FrameFileError, hint=" (truncated or corrupt?)")


def _final_image(f: h5py.File, path) -> h5py.Dataset:
    if "FinalImage" not in f:
        raise FrameFileError(f"{path}: no 'FinalImage' table (found: {sorted(f.keys())})")
    ds = f["FinalImage"]
    if not isinstance(ds, h5py.Dataset) or ds.dtype.names is None or ds.ndim != 1:
        raise FrameFileError(f"{path}: 'FinalImage' must be a 1-D compound table, got {ds}")
    names = ds.dtype.names
    for field in ("ImageId", "Image"):
        if field not in names:
            raise FrameFileError(f"{path}: 'FinalImage' has no field '{field}' (fields: {names})")
    iid = ds.dtype.fields["ImageId"][0]
    if iid != np.dtype("<i4"):
        raise FrameFileError(f"{path}: field 'FinalImage/ImageId' must be '<i4', got '{iid.str}'")
    img = ds.dtype.fields["Image"][0]
    if img.base != np.dtype("u1") or img.shape != FRAME_SHAPE:
        raise FrameFileError(f"{path}: field 'FinalImage/Image' must be 'u1' {FRAME_SHAPE}, got "
                             f"'{img.base.str}' {img.shape}")
    return ds


def frame_count(path: str | os.PathLike) -> int:
    """Number of frames in ``path``'s ``FinalImage`` (validates the table)."""
    with _open(path) as f:
        return int(_final_image(f, path).shape[0])


def read_frames(path: str | os.PathLike, start: int, stop: int) -> tuple[np.ndarray, np.ndarray]:
    """Frames ``start:stop``: ``(ImageId (n,) int32, Image (n, 1024, 1024) uint8)``.

    Raises :class:`FrameFileError` naming the file and frame range if they cannot be read.
    """
    with _open(path) as f:
        ds = _final_image(f, path)
        n = ds.shape[0]
        if not 0 <= start <= stop <= n:
            raise FrameFileError(f"{path}: frames {start}..{stop} outside 0..{n}")
        try:
            rows = ds[start:stop]
        except (OSError, RuntimeError) as err:
            raise FrameFileError(f"{path}: frames {start}..{stop - 1} of FinalImage cannot be read "
                                 f"(truncated or corrupt file): {err}") from err
    return rows["ImageId"].astype(np.int32), rows["Image"]


def iter_frame_chunks(path: str | os.PathLike, chunk: int, start: int = 0,
                      stop: int | None = None) -> Iterator[tuple[int, np.ndarray, np.ndarray]]:
    """Stream ``(first_row, image_ids, images)`` in chunks of ``chunk`` frames (memory:
    ``chunk`` MB for the images)."""
    if chunk < 1:
        raise ValueError(f"chunk must be >= 1, got {chunk}")
    n = frame_count(path)
    stop = n if stop is None else min(stop, n)
    for a in range(start, stop, chunk):
        b = min(stop, a + chunk)
        ids, imgs = read_frames(path, a, b)
        yield a, ids, imgs


class FrameWriter:
    """Append frames (and truth) to a new frame file, atomically published on :meth:`close`.

    ``FinalImage`` is chunked one frame per HDF5 chunk with a Fletcher-32 checksum, so a
    damaged frame is reported when read instead of read as noise. Use as a context manager;
    an exception inside the ``with`` leaves no file behind.
    """

    def __init__(self, path: str | os.PathLike, truth: bool = True):
        self.path = Path(path)
        self._stack = contextlib.ExitStack()
        self._f = self._stack.enter_context(atomic_h5(self.path, stream=True))
        self._frames = self._f.create_dataset("FinalImage", shape=(0,), maxshape=(None,),
                                              dtype=FRAME_DTYPE, chunks=(1,), fletcher32=True)
        self._truth = (self._f.create_dataset("DetectedElectrons", shape=(0,), maxshape=(None,),
                                              dtype=TRUTH_DTYPE, chunks=(65536,)) if truth else None)

    def append(self, image_ids: np.ndarray, images: np.ndarray) -> None:
        images = np.asarray(images)
        if images.dtype != np.uint8 or images.shape[1:] != FRAME_SHAPE:
            raise ValueError(f"images must be uint8 (n, {FRAME_SHAPE[0]}, {FRAME_SHAPE[1]}), got "
                             f"{images.dtype} {images.shape}")
        rows = np.empty(len(images), FRAME_DTYPE)
        rows["ImageId"] = np.asarray(image_ids, dtype="<i4")
        rows["Image"] = images
        n = self._frames.shape[0]
        self._frames.resize((n + len(rows),))
        self._frames[n:] = rows

    def append_truth(self, image_id, electron_id, x, z) -> None:
        if self._truth is None:
            raise ValueError("FrameWriter(truth=False) has no DetectedElectrons table")
        rows = np.empty(len(x), TRUTH_DTYPE)
        rows["ImageId"], rows["ElectronId"], rows["x"], rows["z"] = image_id, electron_id, x, z
        n = self._truth.shape[0]
        self._truth.resize((n + len(rows),))
        self._truth[n:] = rows

    def close(self) -> None:
        """Publish the file (``sevi.io.tables.atomic_h5``: flushed, closed, renamed into place)."""
        self._stack.close()

    def abort(self) -> None:
        """Discard the file: nothing is published."""
        with contextlib.suppress(RuntimeError):
            self._stack.__exit__(RuntimeError, RuntimeError("aborted"), None)

    def __enter__(self) -> "FrameWriter":
        return self

    def __exit__(self, exc_type, exc, tb):
        return self._stack.__exit__(exc_type, exc, tb)  # publishes, or deletes the temporary


def write_frames(path, image_ids, images, truth: np.ndarray | None = None) -> None:
    """Write a whole frame file at once (small files: tests, examples)."""
    with FrameWriter(path, truth=truth is not None) as w:
        w.append(image_ids, images)
        if truth is not None:
            w.append_truth(truth["ImageId"], truth["ElectronId"], truth["x"], truth["z"])


def read_truth(path: str | os.PathLike) -> np.ndarray:
    """The ``DetectedElectrons`` truth table of a simulated frame file (TRUTH_DTYPE rows)."""
    with _open(path) as f:
        if "DetectedElectrons" not in f:
            raise FrameFileError(f"{path}: no 'DetectedElectrons' table")
        return f["DetectedElectrons"][...]


def accumulate(x: np.ndarray, z: np.ndarray, grid: int) -> np.ndarray:
    """(grid, grid) int64 counts, axis 0 = x, binning of np.histogram2d on [-1, 1]^2."""
    h, _, _ = np.histogram2d(x, z, bins=grid, range=[[-1, 1], [-1, 1]])
    return h.astype(np.int64)


def event_rows(image_id, x, z) -> np.ndarray:
    """``DetectedElectrons`` rows (EVENT_DTYPE) of an events file."""
    rows = np.empty(len(x), EVENT_DTYPE)
    rows["ImageId"], rows["x"], rows["z"] = image_id, x, z
    return rows


class EventsWriter:
    """Stream events into a new events file, atomically published when the ``with`` ends.

    ``DetectedElectrons`` grows by :meth:`append` (chunks of 65536 rows), and ``image`` counts the
    events as :func:`accumulate` does; on a clean exit ``AccumulatedImage`` is written from
    ``image`` (replace it first to store another), with attrs ``grid``, ``n_frames`` and ``axes``,
    and ``attrs`` become file attributes. An exception inside the ``with`` leaves no file behind.
    """

    def __init__(self, path: str | os.PathLike, *, grid: int, n_frames: int, attrs: dict | None = None):
        self.grid, self.n_frames, self.attrs = grid, n_frames, dict(attrs or {})
        self.image = np.zeros((grid, grid), np.int64)
        self.count = 0
        self._stack = contextlib.ExitStack()
        self._f = self._stack.enter_context(atomic_h5(path, stream=True))
        self._rows = self._f.create_dataset("DetectedElectrons", shape=(0,), maxshape=(None,),
                                            dtype=EVENT_DTYPE, chunks=(65536,))

    def append(self, image_id, x, z) -> None:
        rows = event_rows(image_id, x, z)
        self._rows.resize((self.count + len(rows),))
        self._rows[self.count:] = rows
        self.count += len(rows)
        self.image += accumulate(rows["x"], rows["z"], self.grid)

    def __enter__(self) -> "EventsWriter":
        return self

    def __exit__(self, exc_type, exc, tb):
        if exc_type is None:
            d = self._f.create_dataset("AccumulatedImage", data=self.image.astype("<i8"), compression="gzip",
                                       compression_opts=4)
            d.attrs["grid"] = self.grid
            d.attrs["n_frames"] = self.n_frames
            d.attrs["axes"] = "axis 0 = x, axis 1 = z, bins of [-1, 1]"
            for k, v in self.attrs.items():
                self._f.attrs[k] = v
        return self._stack.__exit__(exc_type, exc, tb)  # closes the file, then publishes or deletes it


def write_events(path: str | os.PathLike, image_id: np.ndarray, x: np.ndarray, z: np.ndarray,
                 *, grid: int, n_frames: int, image: np.ndarray | None = None,
                 attrs: dict | None = None) -> None:
    """Write an events file at once (atomically). ``image`` defaults to :func:`accumulate` of x, z."""
    with EventsWriter(path, grid=grid, n_frames=n_frames, attrs=attrs) as w:
        w.append(image_id, x, z)
        if image is not None:
            w.image = np.asarray(image)


def read_events(path: str | os.PathLike) -> tuple[np.ndarray, np.ndarray]:
    """``(DetectedElectrons rows, AccumulatedImage)`` of an events file."""
    with _open(path) as f:
        for name in ("DetectedElectrons", "AccumulatedImage"):
            if name not in f:
                raise FrameFileError(f"{path}: no '{name}' in the events file")
        rows = f["DetectedElectrons"][...]
        if rows.dtype.names is None or not all(n in rows.dtype.names for n in EVENT_DTYPE.names):
            raise FrameFileError(f"{path}: 'DetectedElectrons' must have fields {EVENT_DTYPE.names}, "
                                 f"got {rows.dtype.names}")
        return rows, f["AccumulatedImage"][...]
