"""``coating recommend``'s output: the per-run report text and its file name, the
``recommendations.csv`` table, and the checks made before anything is written (an ``OUT``
folder the command may replace, no non-finite plan). Settings in nm, as the plant enters them."""
from __future__ import annotations

import csv
import io
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from coating.recommend.uncertainty import CARE_TEXT

if TYPE_CHECKING:  # annotations only
    from coating.recommend.optimise_settings import Recommendation
    from coating.recommend.uncertainty import Interval

__all__ = ["REPORT_COLUMNS", "TABLE_NAME", "format_report", "report_file_name", "report_file_names",
           "check_out_folder", "check_finite", "format_table"]


def format_report(furnace_no: str, cycle: int, rec: Recommendation, kind: str, interval: Interval | None = None,
                  care: tuple = (), n_runs: int | None = None) -> str:
    """The per-run report: the settings, the predicted dE00, how sure (``interval``: the next
    run's dE00 with its 90 % interval; ``care``: keys of ``uncertainty.CARE_TEXT``; ``n_runs``:
    the cycle's runs behind the model)."""
    names = [f"F{i}" for i in range(1, 6)] + [f"B{i}" for i in range(1, 6)]
    lines = [f"furnace_no {furnace_no}: recommended settings (cycle {cycle} {kind} model"
             + (f", brought up to date on {n_runs} runs of the cycle" if n_runs is not None else "") + ")", "",
             f"{'layer':>6} {'current nm':>11} {'recommended':>12} {'change nm':>10}"]
    for n, c, s, d in zip(names, rec.current, rec.settings, rec.change):
        lines.append(f"{n:>6} {c:11.2f} {s:12.2f} {d:+10.2f}")
    lines += ["", f"predicted dE00 front {rec.dE00[0]:.3f}  back {rec.dE00[1]:.3f}  "
              f"(with the current settings: front {rec.dE00_current[0]:.3f}  back {rec.dE00_current[1]:.3f})"]
    if interval is not None:
        pct = f"{100 * interval.level:g} %"
        lines.append(f"next run, with its own deposition errors and the machine's drift: dE00 front "
                     f"{interval.median[0]:.3f} ({pct} interval {interval.lo[0]:.3f}-{interval.hi[0]:.3f})  back "
                     f"{interval.median[1]:.3f} ({pct} interval {interval.lo[1]:.3f}-{interval.hi[1]:.3f})")
        if interval.gain is not None:
            g = interval.gain
            lines.append(f"gain over the current settings, front + back, on the same draws: dE00 {g.median:+.3f} "
                         f"({pct} interval {g.lo:+.3f} to {g.hi:+.3f}; positive: the change helps); chance it makes "
                         f"the run worse than keeping the settings: {100 * g.p_worse:.0f} %")
    else:
        lines.append(f"next run: no interval ({kind} has no noise model)")
    lines.append("treat with care: " + ("; ".join(CARE_TEXT[c] for c in care) if care else "no"))
    lines += ["constraint: front and back changes of a layer never have opposite signs", ""]
    return "\n".join(lines)


REPORT_COLUMNS = ["furnace_no"] + [f"set_{n}" for n in [f"F{i}" for i in range(1, 6)] +
                                     [f"B{i}" for i in range(1, 6)]] + ["dE00_F", "dE00_B"] + \
    ["next_dE00_F", "next_dE00_F_lo", "next_dE00_F_hi", "next_dE00_B", "next_dE00_B_lo", "next_dE00_B_hi", "care"] + \
    ["gain", "gain_lo", "gain_hi", "p_worse"]
TABLE_NAME = "recommendations.csv"


def report_file_name(furnace_no: str) -> str:
    """``<furnace_no>.txt`` with every character other than a letter, digit, ``-``, ``_`` or
    ``.`` replaced by ``_`` (so ``A/1`` cannot name a sub-folder)."""
    return "".join(ch if ch.isalnum() or ch in "-_." else "_" for ch in furnace_no) + ".txt"


def report_file_names(furnace_nos, where) -> dict[str, str]:
    """furnace_no -> report file name; refuses two furnace numbers that map to one name (also
    when they differ only in case: a case-insensitive file system keeps one of the two)."""
    names, taken = {}, {}
    for fno in furnace_nos:
        name = report_file_name(fno)
        key = name.lower()
        if key in taken:
            raise ValueError(f"{where}: column 'furnace_no': {taken[key]!r} and {fno!r} would both be "
                             f"reported in {name}; expected furnace numbers that differ in a letter, "
                             f"digit, '-', '_' or '.' (other characters become '_')")
        taken[key] = fno
        names[fno] = name
    return names


def check_out_folder(out: Path) -> None:
    """``OUT`` is replaced as a whole, so it must be new, empty or an earlier ``coating
    recommend`` output (only ``*.txt`` files and ``recommendations.csv``): never a folder of
    other files, which the swap would delete."""
    if out.exists() and not out.is_dir():
        raise ValueError(f"--out {out}: exists and is not a folder; expected a new or earlier output folder")
    if out.is_dir():
        foreign = [p.name for p in sorted(out.iterdir())
                   if not (p.is_file() and not p.is_symlink() and (p.suffix == ".txt" or p.name == TABLE_NAME))]
        if foreign:
            raise ValueError(f"--out {out}: holds {foreign[:3]}{' ...' if len(foreign) > 3 else ''}, which "
                             f"coating recommend did not write and would delete; expected a new, empty or "
                             f"earlier recommend output folder")


def check_finite(furnace_no: str, rec: Recommendation) -> None:
    """Refuse a recommendation with a non-finite setting or prediction (never report NaN as a plan)."""
    for what, v in (("settings", rec.settings), ("predicted dE00", rec.dE00),
                    ("predicted dE00 with the current settings", rec.dE00_current), ("current settings", rec.current)):
        if not np.all(np.isfinite(v)):
            raise ValueError(f"furnace_no {furnace_no}: the {what} came out non-finite ({v}); nothing written. "
                             f"Check the history and the cycle's model (a NaN in the inputs reaches the plan)")


def format_table(rows) -> str:
    """``recommendations.csv`` text: ``REPORT_COLUMNS``, one row per ``(furnace_no,
    Recommendation[, Interval or None, care])``: the settings, the predicted dE00, the next run's
    dE00 median and 90 % interval (empty without one), the care flags (``;``-separated keys
    of ``uncertainty.CARE_TEXT``, empty when none) and the predicted gain over the current
    settings with its 90 % interval (``gain``, ``gain_lo``, ``gain_hi``: dE00, front + back) and
    the model's chance that the change makes the run worse (``p_worse``, 0-1); empty without one. Written by the csv module, so a furnace
    number with a comma or quote is quoted."""
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(REPORT_COLUMNS)
    for row in rows:
        fno, rec = row[0], row[1]
        interval = row[2] if len(row) > 2 else None
        care = row[3] if len(row) > 3 else ()
        nxt = [""] * 6 if interval is None else \
            [f"{v:.4f}" for s in (0, 1) for v in (interval.median[s], interval.lo[s], interval.hi[s])]
        gain = [""] * 4 if interval is None or interval.gain is None else \
            [f"{v:.4f}" for v in (interval.gain.median, interval.gain.lo, interval.gain.hi, interval.gain.p_worse)]
        w.writerow([fno] + [f"{v:.2f}" for v in rec.settings] + [f"{rec.dE00[0]:.4f}", f"{rec.dE00[1]:.4f}"]
                   + nxt + [";".join(care)] + gain)
    return buf.getvalue()
