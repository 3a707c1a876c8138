"""HDF5 tables in the course's formats: validated reads, streaming reads, atomic writes.

Every table is a one-dimensional HDF5 dataset of a compound (structured) dtype. The layouts:

  FinalImage         ImageId '<i4', Image 'u1' (1024, 1024)         camera frames (axis 0 = x)
  Answer             SphereId '<u1', R '<f8', beta '<f8' (L,)       2 rows, smaller R first
                     (+ ImageId '<i4' first when a file answers several images)
  Truth              SphereId '<u1', R, sigma_R '<f8', beta '<f8' (L,)
  SimTruth           ImageId '<i4', SphereId '<u1', R, sigma_R '<f8', n_electrons '<i8', beta (L,)
                     (stored under the name 'Truth': the course's Truth plus two fields)
  GeneratedElectrons SphereId '<u1', ElectronId '<i4', r '<f8', cos_theta '<f8'
  DetectedElectrons  ImageId '<i4', ElectronId '<i8', x '<f8', z '<f8'

The course names the fields of GeneratedElectrons and DetectedElectrons but not their dtypes;
the dtypes and the spelling 'cos_theta' above are our choice.

Errors name the file, the table and the field, and say what was expected. Writes go to a
temporary file in the destination folder and are renamed into place, so a crash never leaves a
half-written result.
"""

from __future__ import annotations

import contextlib
import io
import os
import sys
from pathlib import Path
from typing import Iterator

import h5py
import numpy as np

from sevi.io.atomic import atomic_path

FRAME_SHAPE = (1024, 1024)


def answer_dtype(n_terms: int, with_image_id: bool = False) -> np.dtype:
    fields = [("SphereId", "<u1"), ("R", "<f8"), ("beta", "<f8", (n_terms,))]
    return np.dtype(([("ImageId", "<i4")] if with_image_id else []) + fields)


def truth_dtype(n_terms: int) -> np.dtype:
    return np.dtype([("SphereId", "<u1"), ("R", "<f8"), ("sigma_R", "<f8"), ("beta", "<f8", (n_terms,))])


def sim_truth_dtype(n_terms: int) -> np.dtype:
    return np.dtype([("ImageId", "<i4"), ("SphereId", "<u1"), ("R", "<f8"), ("sigma_R", "<f8"),
                     ("n_electrons", "<i8"), ("beta", "<f8", (n_terms,))])


FINAL_IMAGE_DTYPE = np.dtype([("ImageId", "<i4"), ("Image", "u1", FRAME_SHAPE)])
GENERATED_ELECTRONS_DTYPE = np.dtype([("SphereId", "<u1"), ("ElectronId", "<i4"), ("r", "<f8"), ("cos_theta", "<f8")])
# The one definition of DetectedElectrons: a simulated frame file's truth table has this layout, and
# an events file's is it less ElectronId (sevi.io.frame_files.EVENT_DTYPE). ElectronId (the row of the
# input hit list) is '<i8', as `sevi simulate-frames` has always written it; the course leaves it open.
DETECTED_ELECTRONS_DTYPE = np.dtype([("ImageId", "<i4"), ("ElectronId", "<i8"), ("x", "<f8"), ("z", "<f8")])


class TableError(ValueError):
    """A table is missing or does not have the expected layout or values."""


# -- validation ------------------------------------------------------------------------------
def _describe(dt: np.dtype) -> str:
    return ", ".join(f"{n} {dt.fields[n][0].base.str}{dt.fields[n][0].shape or ''}" for n in dt.names)


def check_layout(path, name: str, actual: np.dtype, expected: np.dtype, *, any_length: tuple[str, ...] = ()) -> None:
    """Raise TableError unless ``actual`` has ``expected``'s fields, dtypes and shapes.

    Fields named in ``any_length`` may have any 1-D length (beta: L is configurable).
    """
    if actual.names is None:
        raise TableError(f"{path}: table '{name}' is not a compound table; expected fields: {_describe(expected)}")
    for field in expected.names:
        if field not in actual.names:
            raise TableError(f"{path}: table '{name}' has no field '{field}'; expected fields: {_describe(expected)}")
        a, e = actual.fields[field][0], expected.fields[field][0]
        if a.base != e.base:
            raise TableError(f"{path}: field '{name}.{field}' has dtype {a.base.str}, expected {e.base.str}")
        if field in any_length:
            if len(a.shape) != 1:
                raise TableError(f"{path}: field '{name}.{field}' has shape {a.shape}, expected a 1-D array (L,)")
        elif a.shape != e.shape:
            raise TableError(f"{path}: field '{name}.{field}' has shape {a.shape}, expected {e.shape}")


def check_finite(path, name: str, rows: np.ndarray, fields, first_row: int = 0) -> None:
    """Raise TableError naming the first row whose field is NaN or infinite."""
    for field in fields:
        v = rows[field].reshape(len(rows), -1)
        bad = ~np.isfinite(v).all(axis=1)
        if bad.any():
            i = int(np.argmax(bad)) + first_row
            raise TableError(f"{path}: field '{name}.{field}' is NaN or infinite in row {i}")


def check_range(path, name: str, rows: np.ndarray, field: str, low=None, high=None, first_row: int = 0,
                what: str = "") -> None:
    """Raise TableError naming the first row whose field lies outside [low, high]."""
    v = rows[field].reshape(len(rows), -1)
    bad = np.zeros(len(rows), bool)
    if low is not None:
        bad |= (v < low).any(axis=1)
    if high is not None:
        bad |= (v > high).any(axis=1)
    if bad.any():
        i = int(np.argmax(bad))
        raise TableError(f"{path}: field '{name}.{field}' = {rows[field][i]} in row {i + first_row} is out of range; "
                         f"expected {what or f'[{low}, {high}]'}")


def h5_reason(err: OSError) -> str:
    """h5py's reason for not opening a file, without its C-library detail: "Unable to synchronously
    open file (file signature not found)" -> "file signature not found"."""
    text = str(err)
    start = text.find("(")
    return text[start + 1:text.rfind(")")].split(";")[0].strip() if start >= 0 else text


def open_h5(path, error: type[Exception] = None, hint: str = "") -> h5py.File:
    """``h5py.File(path, "r")``, or ``error`` (default TableError) naming the file and saying why:
    no such file, a directory, or not a readable HDF5 file (``hint`` is added to the last)."""
    error = error or TableError
    path = Path(path)
    if not path.exists():
        raise error(f"{path}: no such file")
    if path.is_dir():
        raise error(f"{path}: is a directory; expected an HDF5 file")
    try:
        return h5py.File(path, "r")
    except OSError as e:
        raise error(f"{path}: not a readable HDF5 file{hint} ({h5_reason(e)})") from e


@contextlib.contextmanager
def open_table(path, name: str):
    """Open ``path`` and yield its dataset ``name``, with errors that name the file and table."""
    path = Path(path)
    with open_h5(path) as f:
        if name not in f:
            raise TableError(f"{path}: no table '{name}' (found: {', '.join(f.keys()) or 'nothing'})")
        ds = f[name]
        if not isinstance(ds, h5py.Dataset) or ds.ndim != 1:
            raise TableError(f"{path}: '{name}' must be a 1-D table of rows")
        yield ds


def iter_rows(path, name: str, expected: np.dtype, chunk_rows: int, *, any_length=()) -> Iterator[tuple[int, np.ndarray]]:
    """Stream a table in chunks of rows: yields (first_row_index, rows). Never reads it whole."""
    if chunk_rows < 1:
        raise ValueError("chunk_rows must be >= 1")
    with open_table(path, name) as ds:
        check_layout(path, name, ds.dtype, expected, any_length=any_length)
        for start in range(0, ds.shape[0], chunk_rows):
            try:
                rows = ds[start:start + chunk_rows]
            except (OSError, ValueError) as e:
                raise TableError(f"{path}: table '{name}' is truncated or corrupt at rows "
                                 f"{start}..{start + chunk_rows - 1} ({e})") from e
            yield start, rows


def read_rows(path, name: str, expected: np.dtype, *, any_length=()) -> np.ndarray:
    """Read a (small) table whole, checking its layout."""
    parts = [rows for _, rows in iter_rows(path, name, expected, 1 << 20, any_length=any_length)]
    return np.concatenate(parts) if parts else np.zeros(0, expected)


# -- atomic writing --------------------------------------------------------------------------
@contextlib.contextmanager
def atomic_h5(path, mode: str = "w", stream: bool = False):
    """Yield an h5py.File on a temporary file beside ``path``; rename into place on success.

    By default the file is built in memory and written out at the end in one plain write: a full
    disk is then an ordinary OSError (``sevi.io.atomic`` makes it an OutputError naming ``path``)
    and never reaches HDF5. ``stream`` writes straight to the temporary file instead, for files
    larger than memory (``sevi simulate``'s counts, frame and events files); then a write error
    must surface in a flush, not in a close: an HDF5 close that fails leaves the file half closed,
    and closing it again, or HDF5's own clean-up at exit, crashed the process (a segmentation
    fault). So the file is flushed before it is closed, and after a failure closed through
    :func:`close_failed_h5`, without another write. A streaming writer must hold every object it
    creates until the ``with`` ends: h5py reports a write that fails while it releases an object
    only to ``sys.unraisablehook`` (kept here and raised at the end), and HDF5 does not recover."""
    if not stream and mode == "w":
        with atomic_path(path) as tmp:
            buf = io.BytesIO()
            f = h5py.File(buf, "w")
            try:
                yield f
            finally:
                f.close()            # to memory: nothing to fail for want of disk
            with open(tmp, "wb") as out:
                out.write(buf.getbuffer())
        return
    from sevi.io.atomic import disk_errno

    swallowed: list[BaseException] = []
    hook = sys.unraisablehook

    def keep(u):
        if disk_errno(u.exc_value):
            if not swallowed:
                _to_devnull(f)  # what HDF5 writes from now on cannot fail again
            swallowed.append(u.exc_value)
        else:
            hook(u)

    with atomic_path(path) as tmp:
        f = h5py.File(tmp, mode)
        sys.unraisablehook = keep
        try:
            try:
                yield f
            except BaseException:
                close_failed_h5(f)
                raise
            if swallowed:  # HDF5 cannot close this file any more (it crashed trying): report it
                raise swallowed[0]
            try:
                f.flush()  # a write error surfaces here, while the file can still be closed safely
            except BaseException:
                close_failed_h5(f)
                raise
            f.close()
        finally:
            sys.unraisablehook = hook


def close_failed_h5(f: h5py.File) -> None:
    """Close ``f``, an HDF5 file being written to a temporary that will be deleted, after a
    failure. Its file descriptor is first pointed at /dev/null, so what HDF5 still flushes on
    closing goes nowhere and cannot fail again. Errors of the close are ignored, since the file
    is discarded."""
    _to_devnull(f)
    with contextlib.suppress(Exception):
        f.close()


def _to_devnull(f: h5py.File) -> None:
    """Point the file descriptor under ``f`` at /dev/null (reads give zeros, writes succeed)."""
    try:
        fd = f.id.get_vfd_handle() if f.id.valid else None
    except Exception:  # noqa: BLE001 - another driver, or already closed
        fd = None
    if fd is not None:
        null = os.open(os.devnull, os.O_RDWR)
        try:
            os.dup2(null, fd)
        finally:
            os.close(null)


def write_tables(path, tables: dict[str, np.ndarray], attrs: dict | None = None) -> None:
    """Write named arrays (tables or plain datasets) to a new HDF5 file, atomically."""
    with atomic_h5(path) as f:
        for name, arr in tables.items():
            f.create_dataset(name, data=arr)
        for k, v in (attrs or {}).items():
            f.attrs[k] = v


# -- the course's tables -------------------------------------------------------------------------
def _n_terms(ds_dtype: np.dtype) -> int:
    return ds_dtype.fields["beta"][0].shape[0]


def read_sim_truth(path) -> np.ndarray:
    """The Truth table of ``sevi simulate`` input/output, validated.

    At least one image; two rows per image (SphereId 0 and 1); finite values; 0 < R <= 1 and
    0 <= sigma_R < 1 (detector units: the field of view is [-1, 1], so a larger shell would miss
    the detector); n_electrons >= 0 per shell and > 0 per image (an image needs electrons).
    """
    with open_table(path, "Truth") as ds:
        n_terms = _n_terms(ds.dtype) if ds.dtype.names and "beta" in ds.dtype.names else 12
    rows = read_rows(path, "Truth", sim_truth_dtype(n_terms), any_length=("beta",))
    if len(rows) == 0:
        raise TableError(f"{path}: table 'Truth' has no rows; expected two rows (SphereId 0 and 1) per image")
    check_finite(path, "Truth", rows, ("R", "sigma_R", "beta"))
    check_range(path, "Truth", rows, "R", low=1e-12, high=1.0, what="0 < R <= 1 (detector units; the field of view is [-1, 1])")
    check_range(path, "Truth", rows, "sigma_R", low=0.0, high=1.0 - 1e-12, what="0 <= sigma_R < 1 (detector units)")
    check_range(path, "Truth", rows, "n_electrons", low=0, what="n_electrons >= 0")
    check_range(path, "Truth", rows, "SphereId", high=1, what="SphereId 0 or 1")
    ids, counts = np.unique(rows["ImageId"], return_counts=True)
    if (counts != 2).any():
        bad = ids[counts != 2][0]
        raise TableError(f"{path}: table 'Truth' has {counts[counts != 2][0]} rows for ImageId {bad}; "
                         f"expected exactly 2 (one per shell, SphereId 0 and 1)")
    for image_id in ids:
        spheres = np.sort(rows["SphereId"][rows["ImageId"] == image_id])
        if not np.array_equal(spheres, [0, 1]):
            raise TableError(f"{path}: table 'Truth' rows of ImageId {image_id} have SphereId {spheres.tolist()}, "
                             f"expected [0, 1]")
        if rows["n_electrons"][rows["ImageId"] == image_id].sum() == 0:
            raise TableError(f"{path}: field 'Truth.n_electrons' is 0 in both rows of ImageId {image_id}; "
                             f"expected electrons in at least one shell")
    return rows


def truth_warnings(rows: np.ndarray, path) -> list[str]:
    """Lines worth a warning about valid SimTruth rows: shells far wider than any measured one
    (sigma_R > 0.1, against the prior's 0.005-0.009: often a unit slip, e.g. a width in percent)."""
    wide = np.flatnonzero(rows["sigma_R"] > 0.1)
    return [f"{path}: field 'Truth.sigma_R' = {rows['sigma_R'][i]} in row {i} (ImageId {rows['ImageId'][i]}) is far "
            f"above the prior's 0.005-0.009; a shell that wide is a blur (are the units detector units?)"
            for i in wide[:3]]


def sim_truth_rows(image_ids: np.ndarray, R, sigma_R, n_electrons, beta) -> np.ndarray:
    """Build SimTruth rows from (n, 2) arrays and beta (n, 2, L); SphereId = shell index."""
    n, _, n_terms = np.shape(beta)
    rows = np.zeros(2 * n, sim_truth_dtype(n_terms))
    rows["ImageId"] = np.repeat(np.asarray(image_ids, np.int32), 2)
    rows["SphereId"] = np.tile([0, 1], n)
    rows["R"] = np.asarray(R, np.float64).reshape(-1)
    rows["sigma_R"] = np.asarray(sigma_R, np.float64).reshape(-1)
    rows["n_electrons"] = np.asarray(n_electrons, np.int64).reshape(-1)
    rows["beta"] = np.asarray(beta, np.float64).reshape(2 * n, n_terms)
    return rows


def truth_to_arrays(rows: np.ndarray) -> dict[str, np.ndarray]:
    """SimTruth rows -> image_ids (n,), R, sigma_R, n_electrons (n, 2), beta (n, 2, L).

    Images in ascending ImageId, shells in SphereId order (call ``read_sim_truth`` first: it
    checks there are exactly two rows per image)."""
    r = rows[np.lexsort((rows["SphereId"], rows["ImageId"]))]
    n = len(r) // 2
    return {
        "image_ids": r["ImageId"][::2].astype(np.int32),
        "R": r["R"].reshape(n, 2), "sigma_R": r["sigma_R"].reshape(n, 2),
        "n_electrons": r["n_electrons"].reshape(n, 2), "beta": r["beta"].reshape(n, 2, -1),
    }


def answer_rows(R: np.ndarray, beta: np.ndarray, image_ids=None) -> np.ndarray:
    """Answer rows from R (n, k) and beta (n, k, L), shells sorted by R per image: k rows per image
    (the course's k = 2; ``sevi fit`` writes 1 to 4).

    Without image_ids, n must be 1 (the course's two-row Answer)."""
    R, beta = np.asarray(R, np.float64), np.asarray(beta, np.float64)
    n, k, n_terms = beta.shape
    if image_ids is None and n != 1:
        raise ValueError("an Answer without ImageId holds exactly one image; pass image_ids")
    order = np.argsort(R, axis=1)
    R = np.take_along_axis(R, order, 1)
    beta = np.take_along_axis(beta, order[..., None], 1)
    rows = np.zeros(k * n, answer_dtype(n_terms, image_ids is not None))
    if image_ids is not None:
        rows["ImageId"] = np.repeat(np.asarray(image_ids, np.int32), k)
    rows["SphereId"] = np.tile(np.arange(k), n)
    rows["R"] = R.reshape(-1)
    rows["beta"] = beta.reshape(k * n, n_terms)
    return rows


def read_answer(path) -> np.ndarray:
    """An Answer table, validated (with or without ImageId)."""
    with open_table(path, "Answer") as ds:
        dt = ds.dtype
    if dt.names is None or "beta" not in dt.names:
        raise TableError(f"{path}: table 'Answer' has no field 'beta'; expected fields: {_describe(answer_dtype(12))}")
    expected = answer_dtype(_n_terms(dt), "ImageId" in dt.names)
    rows = read_rows(path, "Answer", expected, any_length=("beta",))
    check_finite(path, "Answer", rows, ("R", "beta"))
    if len(rows) % 2:
        raise TableError(f"{path}: table 'Answer' has {len(rows)} rows; expected two per image")
    return rows
