"""``coating recommend``'s runs file (NEW.csv): the furnace runs to plan, one row each, with an
optional just-measured run in the plant-history schema's columns (``coating.line.schema``)."""
from __future__ import annotations

import csv
import io
from pathlib import Path

from coating.line import schema

__all__ = ["read_runs"]


def read_runs(path):
    """NEW.csv: ``furnace_no`` required; ``cycle_id``, ``run_in_cycle``, ``date`` optional; when
    a row carries a full measurement (all history columns filled) it is returned as measured.

    Returns a list of dicts: ``furnace_no``, ``cycle_id`` (int or None), ``run_in_cycle``
    (int or None), ``date`` (str or None), ``measured`` (a one-row ``History`` or None).
    """
    path = Path(path)
    if not path.exists():
        raise ValueError(f"{path}: no such file")
    text = schema.read_utf8(path)   # a UTF-8 BOM is accepted; another encoding is named, not guessed
    lines = list(csv.reader(line for line in io.StringIO(text, newline="") if not line.startswith("#")))
    lines = [r for r in lines if any(x.strip() for x in r)]  # blank lines (a trailing one) are no rows
    header = [h.strip() for h in lines[0]] if lines else []
    if any(";" in h for h in header):
        raise ValueError(f"{path}: line 1: the header is semicolon-separated; expected commas (export the "
                         f"file as comma-separated CSV)")
    if len(lines) < 2 or "furnace_no" not in header:
        raise ValueError(f"{path}: expected a header with at least 'furnace_no' and one data row")
    for i, r in enumerate(lines[1:]):
        if len(r) != len(header):
            raise ValueError(f"{path}: row {i + 1}: expected {len(header)} comma-separated fields (as in the "
                             f"header), got {len(r)}")
    rows = [dict(zip(header, r)) for r in lines[1:]]
    known = set(schema.COLUMNS)
    extra = [c for c in rows[0] if c not in known]
    if extra:
        raise ValueError(f"{path}: unexpected column(s) {extra}; allowed: the history schema's columns")
    out = []
    first_row: dict[str, int] = {}
    for i, r in enumerate(rows):
        where = f"{path}: row {i + 1}"
        fno = (r.get("furnace_no") or "").strip()
        if not fno:
            raise ValueError(f"{where}: empty furnace_no")
        if fno in first_row:  # two plans for one run: which one the operator gets would be an accident
            raise ValueError(f"{where}: column 'furnace_no': duplicate furnace number {fno!r} (first at row "
                             f"{first_row[fno]}); expected one row per furnace run")
        first_row[fno] = i + 1

        def opt_int(name):
            v = (r.get(name) or "").strip()
            if not v:
                return None
            try:
                x = float(v)
            except ValueError:
                raise ValueError(f"{where}: column {name!r}: expected an integer, got {v!r}") from None
            if not x.is_integer() or x < 1:
                raise ValueError(f"{where}: column {name!r}: expected an integer >= 1, got {v!r}")
            return int(x)
        rec = {"furnace_no": fno, "cycle_id": opt_int("cycle_id"), "run_in_cycle": opt_int("run_in_cycle"),
               "date": (r.get("date") or "").strip() or None, "measured": None}
        meas_cols = schema.SET_COLS + schema.STD_COLS + schema.RF_COLS + schema.RB_COLS
        filled = [c for c in meas_cols if (r.get(c) or "").strip()]
        if filled and len(filled) < len(meas_cols):
            raise ValueError(f"{where} (furnace_no {fno}): a measured run needs all of set_*, std_*, "
                             f"R_F_*, R_B_*; {len(meas_cols) - len(filled)} are missing or empty")
        if filled:
            cols = {c: [r.get(c, "")] for c in schema.COLUMNS}
            cols["furnace_no"] = [fno]
            cols["cycle_id"] = [str(rec["cycle_id"] or 1)]
            cols["run_in_cycle"] = [str(rec["run_in_cycle"] or 1)]
            cols["date"] = [rec["date"] or "2000-01-01"]
            for c in schema.LAB_COLS:
                if not (r.get(c) or "").strip():
                    cols[c] = ["50"]  # Lab is recomputed from the curves where not given
            rec["measured"] = schema._validate(cols, f"{path} row {i + 1}")
        out.append(rec)
    return out
