"""The plant-history schema: one row per furnace run, as CSV or HDF5, with a validating loader.

Columns, in this order (docs/coating.md):
    furnace_no (text), cycle_id (int), run_in_cycle (int), date (ISO 8601),
    set_F1..set_F5, set_B1..set_B5 (nm), std_F1..std_F7, std_B1..std_B7 (monitor units),
    R_F_380..R_F_780, R_B_380..R_B_780 (reflectance in %, 5 nm steps),
    L_F, a_F, b_F, L_B, a_B, b_B.
``cycle_id`` and ``run_in_cycle`` may be left out when a cleaning log is given: then
``cycle_id = 1 + (number of cleanings at or before the run's date)`` and ``run_in_cycle`` counts
runs within a cycle in date order.

HDF5 layout: group ``/runs`` with one 1-D dataset per column, all of one length, named as above (text columns as
UTF-8 strings). A standard (target) file is CSV ``wavelength, R_F, R_B`` (nm, %, %).

The loader checks everything and raises one ``ValueError`` listing every problem with file,
column, row (1-based data row, and the furnace number when known) and the expected form. It
never drops or repairs a row. Writers are atomic (temporary file, then ``os.replace``).
"""
from __future__ import annotations

import datetime as _dt
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from sevi.io.atomic import atomic_path

__all__ = ["WAVELENGTHS_NM", "COLUMNS", "History", "Standard", "read_history", "write_history", "read_utf8",
           "read_standard", "write_standard", "read_cleaning_log", "cycles_from_cleaning_dates",
           "history_from_measurements"]

WAVELENGTHS_NM = np.arange(380, 781, 5)
SET_COLS = [f"set_F{i}" for i in range(1, 6)] + [f"set_B{i}" for i in range(1, 6)]
STD_COLS = [f"std_F{i}" for i in range(1, 8)] + [f"std_B{i}" for i in range(1, 8)]
RF_COLS = [f"R_F_{w}" for w in WAVELENGTHS_NM]
RB_COLS = [f"R_B_{w}" for w in WAVELENGTHS_NM]
LAB_COLS = ["L_F", "a_F", "b_F", "L_B", "a_B", "b_B"]
ID_COLS = ["furnace_no", "cycle_id", "run_in_cycle", "date"]
COLUMNS = ID_COLS + SET_COLS + STD_COLS + RF_COLS + RB_COLS + LAB_COLS
MAX_THICKNESS_NM = 500.0   # no layer of an AR stack is near this; larger values are typos
MAX_ERRORS_LISTED = 50


@dataclass(frozen=True)
class History:
    """Validated plant history, ``N`` runs. Shapes: ``settings (N, 10)``, ``std (N, 14)``,
    ``R_F``/``R_B`` ``(N, 81)`` percent, ``lab_F``/``lab_B`` ``(N, 3)``; ``date`` ISO strings."""
    furnace_no: np.ndarray
    cycle_id: np.ndarray
    run_in_cycle: np.ndarray
    date: np.ndarray
    settings: np.ndarray
    std: np.ndarray
    R_F: np.ndarray
    R_B: np.ndarray
    lab_F: np.ndarray
    lab_B: np.ndarray

    def __len__(self) -> int:
        return len(self.furnace_no)

    def columns(self) -> dict[str, np.ndarray]:
        """Column name -> 1-D array, in schema order."""
        cols = {"furnace_no": self.furnace_no, "cycle_id": self.cycle_id,
                "run_in_cycle": self.run_in_cycle, "date": self.date}
        for block, names in ((self.settings, SET_COLS), (self.std, STD_COLS), (self.R_F, RF_COLS),
                             (self.R_B, RB_COLS), (np.hstack([self.lab_F, self.lab_B]), LAB_COLS)):
            cols.update({n: block[:, i] for i, n in enumerate(names)})
        return cols


@dataclass(frozen=True)
class Standard:
    """Target curves on ``wavelength_nm`` (W,), reflectance ``R_F``, ``R_B`` (W,) in percent."""
    wavelength_nm: np.ndarray
    R_F: np.ndarray
    R_B: np.ndarray


def history_from_measurements(measurements) -> History:
    """Records of ``coating.line.plant.step`` -> ``History``."""
    ms = list(measurements)
    return History(
        furnace_no=np.array([m.furnace_no for m in ms], dtype=object),
        cycle_id=np.array([m.cycle_id for m in ms], dtype=np.int64),
        run_in_cycle=np.array([m.run_in_cycle for m in ms], dtype=np.int64),
        date=np.array([m.date for m in ms], dtype=object),
        settings=np.array([m.settings for m in ms], dtype=np.float64).reshape(-1, 10),
        std=np.array([m.std for m in ms], dtype=np.float64).reshape(-1, 14),
        R_F=np.array([m.R_F for m in ms], dtype=np.float64).reshape(-1, 81),
        R_B=np.array([m.R_B for m in ms], dtype=np.float64).reshape(-1, 81),
        lab_F=np.array([m.lab_F for m in ms], dtype=np.float64).reshape(-1, 3),
        lab_B=np.array([m.lab_B for m in ms], dtype=np.float64).reshape(-1, 3))


# --- atomic writing ------------------------------------------------------------------------
def _atomic(path, write) -> None:
    """``write(tmp)`` fills a temporary file that then replaces ``path`` (``sevi.io.atomic``)."""
    with atomic_path(path) as tmp:
        write(str(tmp))


def _fmt(x) -> str:
    return x if isinstance(x, str) else repr(float(x)) if isinstance(x, float) else str(x)


def write_history(history: History, path) -> None:
    """Write ``history`` as CSV (``.csv``) or HDF5 (``.h5``/``.hdf5``), atomically."""
    cols = history.columns()
    suffix = Path(path).suffix.lower()
    if suffix == ".csv":
        def write(tmp):
            with open(tmp, "w", newline="", encoding="utf-8") as f:
                f.write(",".join(COLUMNS) + "\n")
                for i in range(len(history)):
                    f.write(",".join(_fmt(cols[c][i].item() if hasattr(cols[c][i], "item") else cols[c][i])
                                     for c in COLUMNS) + "\n")
    elif suffix in (".h5", ".hdf5"):
        import h5py

        from sevi.io.tables import atomic_h5

        with atomic_h5(path) as f:  # closed safely after a write error (a full disk), then removed
            g = f.create_group("runs")
            for c in COLUMNS:
                v = cols[c]
                if v.dtype == object:
                    g.create_dataset(c, data=np.array([str(x) for x in v], dtype=object),
                                     dtype=h5py.string_dtype("utf-8"))
                else:
                    g.create_dataset(c, data=v)
        return
    else:
        raise ValueError(f"{path}: unknown history format {suffix!r}; expected .csv, .h5 or .hdf5")
    _atomic(path, write)


def write_standard(standard: Standard, path) -> None:
    """Write a standard file ``wavelength,R_F,R_B`` atomically."""
    def write(tmp):
        with open(tmp, "w", encoding="utf-8") as f:
            f.write("wavelength,R_F,R_B\n")
            for w, a, b in zip(standard.wavelength_nm, standard.R_F, standard.R_B):
                f.write(f"{float(w):g},{float(a)!r},{float(b)!r}\n")
    _atomic(path, write)


# --- reading and validation ----------------------------------------------------------------
class _Problems:
    def __init__(self, path):
        self.path, self.items = str(path), []

    def add(self, msg: str) -> None:
        self.items.append(msg)

    def raise_if_any(self) -> None:
        if len(self.items) == 1:  # one problem, one line
            raise ValueError(f"{self.path}: {self.items[0]}")
        if self.items:
            shown = self.items[:MAX_ERRORS_LISTED]
            more = len(self.items) - len(shown)
            raise ValueError(f"{self.path}: {len(self.items)} problem(s):\n  - " + "\n  - ".join(shown)
                             + (f"\n  - ... and {more} more" if more else ""))


def _rows(idx, furnace=None, limit=5) -> str:
    idx = list(idx)
    parts = [f"{i + 1}" + (f" (furnace_no {furnace[i]})" if furnace is not None and furnace[i] else "")
             for i in idx[:limit]]
    return ("row " if len(idx) == 1 else "rows ") + ", ".join(parts) + (f" and {len(idx) - limit} more"
                                                                       if len(idx) > limit else "")


def read_utf8(path) -> str:
    """The text of ``path``, decoded as UTF-8. A UTF-8 byte-order mark (Excel's "CSV UTF-8"
    export) is accepted and dropped; other encodings (a latin-1 / Windows-1252 byte, UTF-16)
    raise ValueError naming the file and the line, rather than being guessed."""
    path = Path(path)
    if path.is_dir():
        raise ValueError(f"{path}: is a folder; expected a UTF-8 text file")
    data = path.read_bytes()
    if data.startswith((b"\xff\xfe", b"\xfe\xff")):
        raise ValueError(f"{path}: UTF-16 text; expected UTF-8 (a spreadsheet: save as 'CSV UTF-8')")
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        line = data[:e.start].count(b"\n") + 1
        raise ValueError(f"{path}: line {line}: byte 0x{data[e.start]:02x} is not UTF-8 (a latin-1 or Windows "
                         f"export?); expected UTF-8 text (a spreadsheet: save as 'CSV UTF-8')") from None


def _read_csv_columns(path) -> dict[str, list[str]]:
    import csv
    import io
    text = read_utf8(path)
    reader = csv.reader(line for line in io.StringIO(text, newline="") if not line.startswith("#"))
    try:
        header = [h.strip() for h in next(reader)]
    except StopIteration:
        raise ValueError(f"{path}: empty file; expected a header row with {len(COLUMNS)} columns") from None
    if any(";" in h for h in header):
        raise ValueError(f"{path}: line 1: the header is semicolon-separated; expected commas (export the "
                         f"file as comma-separated CSV with '.' as the decimal point)")
    # Blank lines (a trailing newline too many, as editors and spreadsheets leave) are no rows.
    rows = [r for r in reader if any(x.strip() for x in r)]
    cols = {h: [] for h in header}
    bad = [i for i, r in enumerate(rows) if len(r) != len(header)]
    if bad:
        raise ValueError(f"{path}: {_rows(bad)}: expected {len(header)} comma-separated fields "
                         f"(as in the header), got {len(rows[bad[0]])}")
    for r in rows:
        for h, v in zip(header, r):
            cols[h].append(v.strip())
    if len(set(header)) != len(header):
        dup = sorted({h for h in header if header.count(h) > 1})
        raise ValueError(f"{path}: duplicate column names {dup}")
    return cols


def _read_h5_columns(path) -> dict[str, list]:
    import h5py
    try:
        f = h5py.File(path, "r")
    except OSError as e:
        raise ValueError(f"{path}: not a readable HDF5 file ({e}); expected a history written as .h5") from None
    with f:
        if "runs" not in f:
            raise ValueError(f"{path}: no group '/runs'; expected one dataset per schema column there")
        g = f["runs"]
        out = {}
        for name, ds in g.items():
            if not isinstance(ds, h5py.Dataset) or ds.ndim != 1:
                raise ValueError(f"{path}: /runs/{name}: expected a 1-D dataset (one value per run), got "
                                 + (f"shape {ds.shape}" if isinstance(ds, h5py.Dataset) else "a group"))
            v = ds[()]
            out[name] = [x.decode() if isinstance(x, bytes) else x for x in v]
    return out


def _grid_problem(names: list[str], prefix: str) -> str | None:
    found = [n for n in names if n.startswith(prefix)]
    try:
        wl = sorted(int(n[len(prefix):]) for n in found)
    except ValueError:
        return f"columns {found[:3]}...: expected {prefix}<wavelength in nm>"
    if wl != list(WAVELENGTHS_NM):
        return (f"wavelength grid of {prefix}* columns does not match: expected 380..780 nm in 5 nm "
                f"steps (81 columns), found {len(wl)} columns"
                + (f" from {wl[0]} to {wl[-1]} nm" if wl else "")
                + (f" (steps {sorted(set(np.diff(wl)))[:3]} nm)" if len(wl) > 1 else ""))
    return None


def _parse_date(s: str):
    try:
        return _dt.datetime.fromisoformat(str(s))
    except ValueError:
        return None


def _validate(cols: dict[str, list], path, cleaning_dates=None) -> History:
    p = _Problems(path)
    names = list(cols)
    derive = cleaning_dates is not None
    required = [c for c in COLUMNS if not (derive and c in ("cycle_id", "run_in_cycle"))]
    for prefix in ("R_F_", "R_B_"):
        msg = _grid_problem(names, prefix)
        if msg:
            p.add(msg)
    grid_bad = bool(p.items)
    missing = [c for c in required if c not in cols and not (grid_bad and c[:4] in ("R_F_", "R_B_"))]
    extra = [c for c in names if c not in COLUMNS and not (grid_bad and c[:4] in ("R_F_", "R_B_"))]
    if missing:
        p.add(f"missing column(s): {missing}")
    if extra:
        p.add(f"unexpected column(s): {extra}; the schema has exactly: furnace_no, cycle_id, "
              f"run_in_cycle, date, set_F1..set_B5, std_F1..std_B7, R_F_380..R_F_780, "
              f"R_B_380..R_B_780, L_F..b_B")
    p.raise_if_any()
    n = len(cols["furnace_no"])
    # An HDF5 file can hold columns of different lengths (a CSV cannot): a short column would
    # otherwise leave NaN rows that nothing flags, and a NaN recommendation downstream.
    uneven = [f"{c!r} has {len(v)}" for c, v in cols.items() if len(v) != n]
    if uneven:
        p.add(f"columns differ in length: 'furnace_no' has {n} rows, " + ", ".join(uneven[:5])
              + (f" and {len(uneven) - 5} more" if len(uneven) > 5 else "")
              + "; expected one value per run in every column")
        p.raise_if_any()
    if n == 0:
        p.add("no data rows")
        p.raise_if_any()
    furnace = [str(x).strip() for x in cols["furnace_no"]]

    empty = [i for i, f in enumerate(furnace) if f == "" or f.lower() == "nan"]
    if empty:
        p.add(f"column 'furnace_no', {_rows(empty)}: empty; expected a text furnace number")
    seen: dict[str, int] = {}
    for i, f in enumerate(furnace):
        if f in seen and f:
            p.add(f"column 'furnace_no', row {i + 1}: duplicate furnace number {f!r} (first at row {seen[f] + 1})")
        seen.setdefault(f, i)

    dates = [_parse_date(x) for x in cols["date"]]
    bad = [i for i, d in enumerate(dates) if d is None]
    if bad:
        p.add(f"column 'date', {_rows(bad, furnace)}: expected an ISO 8601 date such as "
              f"2024-01-08 or 2024-01-08T06:00:00, got {cols['date'][bad[0]]!r}")
    else:
        aware = {d.tzinfo is not None for d in dates}
        if len(aware) > 1:
            p.add("column 'date': mixes dates with and without a time zone")
        else:
            back = [i for i in range(1, n) if dates[i] < dates[i - 1]]
            if back:
                i = back[0]
                p.add(f"column 'date', {_rows(back, furnace)}: runs out of date order "
                      f"(row {i + 1} {cols['date'][i]} is before row {i} {cols['date'][i - 1]}); "
                      f"rows must be sorted by date")

    def numeric(col, integer=False):
        out = np.full(n, np.nan)
        bad_parse, nan = [], []
        for i, v in enumerate(cols[col]):
            try:
                x = float(v)
            except (TypeError, ValueError):
                bad_parse.append(i)
                continue
            if not np.isfinite(x):
                nan.append(i)
            elif integer and x != int(x):
                bad_parse.append(i)
            out[i] = x
        if bad_parse:
            p.add(f"column {col!r}, {_rows(bad_parse, furnace)}: expected "
                  f"{'an integer' if integer else 'a number'}, got {cols[col][bad_parse[0]]!r}")
        if nan:
            p.add(f"column {col!r}, {_rows(nan, furnace)}: missing value (NaN/inf/empty)")
        return out

    def block(names, lo, hi, what):
        arr = np.stack([numeric(c) for c in names], axis=1)
        for j, c in enumerate(names):
            v = arr[:, j]
            bad = np.flatnonzero(np.isfinite(v) & ((v < lo) | (v > hi)))
            if len(bad):
                p.add(f"column {c!r}, {_rows(bad, furnace)}: {what}, got {float(v[bad[0]]):g}")
        return arr

    settings = block(SET_COLS, 1e-9, MAX_THICKNESS_NM,
                     f"expected a thickness in nm, > 0 and <= {MAX_THICKNESS_NM:g}")
    std = block(STD_COLS, 0.0, np.inf, "expected a non-negative sensor std")
    R_F = block(RF_COLS, -1.0, 100.0, "expected reflectance in percent, -1..100")
    R_B = block(RB_COLS, -1.0, 100.0, "expected reflectance in percent, -1..100")
    for side, R in (("R_F", R_F), ("R_B", R_B)):
        fin = np.isfinite(R).all(axis=1)
        if fin.any() and np.nanmax(R[fin]) <= 1.0 and np.nanmax(R[fin]) > 0 and np.nanmean(R[fin]) < 0.05:
            p.add(f"columns {side}_380..{side}_780: all values <= 1 and mean {np.nanmean(R[fin]):.3g}: "
                  f"these look like fractions; expected percent (multiply by 100)")
    lab = np.stack([numeric(c) for c in LAB_COLS], axis=1)
    for j, c in enumerate(LAB_COLS):
        lo, hi = (0.0, 100.0) if c.startswith("L") else (-200.0, 200.0)
        bad = np.flatnonzero(np.isfinite(lab[:, j]) & ((lab[:, j] < lo) | (lab[:, j] > hi)))
        if len(bad):
            p.add(f"column {c!r}, {_rows(bad, furnace)}: expected {lo:g}..{hi:g}, got {float(lab[bad[0], j]):g}")

    if derive:
        if "cycle_id" in cols or "run_in_cycle" in cols:
            p.add("both a cleaning log and cycle_id/run_in_cycle columns were given; use one")
        p.raise_if_any()
        cycle_id, run_in_cycle = cycles_from_cleaning_dates(dates, cleaning_dates)
    else:
        cycle_id = numeric("cycle_id", integer=True)
        run_in_cycle = numeric("run_in_cycle", integer=True)
        # Cycles and runs count from 1: the cleaning-log rule, the simulator and recommend's runs file.
        for col, v in (("cycle_id", cycle_id), ("run_in_cycle", run_in_cycle)):
            bad = np.flatnonzero(np.isfinite(v) & (v < 1))
            if len(bad):
                p.add(f"column {col!r}, {_rows(bad, furnace)}: expected an integer >= 1")
        fin = np.isfinite(cycle_id)
        back = [i for i in range(1, n) if fin[i] and fin[i - 1] and cycle_id[i] < cycle_id[i - 1]]
        if back:
            p.add(f"column 'cycle_id', {_rows(back, furnace)}: cycle_id decreases although rows "
                  f"are in date order")
    p.raise_if_any()
    return History(
        furnace_no=np.array(furnace, dtype=object), cycle_id=np.asarray(cycle_id, dtype=np.int64),
        run_in_cycle=np.asarray(run_in_cycle, dtype=np.int64),
        date=np.array([str(x) for x in cols["date"]], dtype=object),
        settings=settings, std=std, R_F=R_F, R_B=R_B, lab_F=lab[:, :3], lab_B=lab[:, 3:])


def read_history(path, cleaning_log=None) -> History:
    """Read and validate a history (``.csv`` or ``.h5``/``.hdf5``).

    ``cleaning_log``: optional path of a cleaning log (see ``read_cleaning_log``); when given,
    the file must not have ``cycle_id``/``run_in_cycle`` and they are derived from it.
    Raises ValueError naming file, column, row and the expected form of every problem.
    """
    path = Path(path)
    if not path.exists():
        raise ValueError(f"{path}: no such file")
    suffix = path.suffix.lower()
    if suffix == ".csv":
        cols = _read_csv_columns(path)
    elif suffix in (".h5", ".hdf5"):
        cols = _read_h5_columns(path)
    else:
        raise ValueError(f"{path}: unknown history format {suffix!r}; expected .csv, .h5 or .hdf5")
    cleaning = read_cleaning_log(cleaning_log) if cleaning_log is not None else None
    return _validate(cols, path, cleaning)


def read_cleaning_log(path) -> list:
    """A CSV with one column ``cleaning_date`` (ISO 8601), one row per big cleaning."""
    cols = _read_csv_columns(path)
    if list(cols) != ["cleaning_date"]:
        raise ValueError(f"{path}: expected exactly one column 'cleaning_date', got {list(cols)}")
    out = []
    for i, v in enumerate(cols["cleaning_date"]):
        d = _parse_date(v)
        if d is None:
            raise ValueError(f"{path}: column 'cleaning_date', row {i + 1}: expected an ISO 8601 date, got {v!r}")
        out.append(d)
    return sorted(out)


def cycles_from_cleaning_dates(run_dates, cleaning_dates) -> tuple[np.ndarray, np.ndarray]:
    """``cycle_id = 1 + #(cleanings at or before the run)``; ``run_in_cycle`` from 1 in order.

    ``run_dates`` must be sorted (the loader checks that first).
    """
    cleaning = sorted(cleaning_dates)
    cycle = np.array([1 + sum(c <= d for c in cleaning) for d in run_dates], dtype=np.int64)
    run = np.ones(len(cycle), dtype=np.int64)
    for i in range(1, len(cycle)):
        run[i] = run[i - 1] + 1 if cycle[i] == cycle[i - 1] else 1
    return cycle, run


def read_standard(path, wavelength_nm=WAVELENGTHS_NM) -> Standard:
    """Read and validate a standard file ``wavelength,R_F,R_B`` (nm, %, %) on the given grid."""
    path = Path(path)
    if not path.exists():
        raise ValueError(f"{path}: no such file")
    cols = _read_csv_columns(path)
    if list(cols) != ["wavelength", "R_F", "R_B"]:
        raise ValueError(f"{path}: expected columns ['wavelength', 'R_F', 'R_B'], got {list(cols)}")
    out = {}
    for c in cols:
        vals = []
        for i, v in enumerate(cols[c]):
            try:
                x = float(v)
            except ValueError:
                x = np.nan
            if not np.isfinite(x):
                raise ValueError(f"{path}: column {c!r}, row {i + 1}: expected a number, got {v!r}")
            if c != "wavelength" and not -1.0 <= x <= 100.0:
                raise ValueError(f"{path}: column {c!r}, row {i + 1}: expected reflectance in percent "
                                 f"-1..100, got {x!r}")
            vals.append(x)
        out[c] = np.array(vals)
    grid = np.asarray(wavelength_nm, dtype=np.float64)
    if out["wavelength"].shape != grid.shape or not np.allclose(out["wavelength"], grid):
        raise ValueError(f"{path}: column 'wavelength': grid does not match: expected {grid[0]:g}..{grid[-1]:g} nm "
                         f"({len(grid)} points), got {len(out['wavelength'])} points"
                         + (f" {out['wavelength'][0]:g}..{out['wavelength'][-1]:g} nm" if len(out['wavelength']) else ""))
    if max(out["R_F"].max(), out["R_B"].max()) <= 1.0 and out["R_F"].mean() < 0.05:
        raise ValueError(f"{path}: columns 'R_F', 'R_B': all values <= 1: these look like fractions; "
                         f"expected percent")
    return Standard(out["wavelength"], out["R_F"], out["R_B"])
