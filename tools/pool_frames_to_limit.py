"""The figures of several ``tools/frames_to_limit.py`` runs pooled: their measurements taken as one set.

    python tools/pool_frames_to_limit.py runs/limit_calib_gls runs/limit_calib_b_gls

Reads each folder's ``frames_to_limit.json`` (runs of one model, one estimator and one way of
making the error bars, ``--batches``; refused otherwise, as the figures would mix two answers), puts their rows together (a measurement, by its
seed and frames, counted once) and prints what ``frames_to_limit.py`` prints for one run: the ratios
of medians, the worst ratio, and the error bars' calibration over all fits, the fits not named
misfits, and those whose shells are resolved (``sevi.evaluation.frames_benchmark.summarise``).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path


def pooled_rows(folders: list[str]) -> tuple[list[dict], str, str]:
    """(the rows of every folder's frames_to_limit.json, each measurement once; the model; the estimator
    and the error bars' batches, e.g. "gls, 100 batches")."""
    rows, seen, kinds = [], set(), set()
    for folder in folders:
        path = Path(folder) / "frames_to_limit.json"
        if not path.exists():
            raise ValueError(f"{path}: not found; expected the OUT folder of a tools/frames_to_limit.py run")
        doc = json.loads(path.read_text())
        kinds.add((doc.get("model"), doc.get("estimator", "wls"), doc.get("batches", 0)))
        for r in doc["rows"]:
            if (r["seed"], r["frames"]) not in seen:
                seen.add((r["seed"], r["frames"]))
                rows.append(r)
    if len(kinds) != 1:
        raise ValueError(f"the runs differ in model, estimator or batches ({sorted(map(str, kinds))}); pool runs of "
                         f"one of each")
    (model, estimator, batches), = kinds
    return rows, model, f"{estimator}, error bars from {f'{batches} batches' if batches else 'the model'}"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("folders", nargs="+", help="OUT folders of tools/frames_to_limit.py")
    a = ap.parse_args(argv)

    from sevi.evaluation.frames_benchmark import summarise

    rows, model, estimator = pooled_rows(a.folders)
    s = summarise(rows)
    print(f"{len(rows)} measurements from {len(a.folders)} runs, model {model}, estimator {estimator}")
    x = s["all"]
    print(f"all: ratio of medians {x['ratio_of_medians']:.3f}, worst ratio {x['worst_ratio']:.2f}, "
          f"flagged {x['flagged']}")
    for which in ("calibration", "calibration_unflagged", "calibration_unflagged_resolved"):
        for g, c in (s.get(which) or {}).items():
            print(f"{which} {g:10s} z std {c['z_std']:.2f}  within 68%: {c['within_68']:.3f}  within 95%: "
                  f"{c['within_95']:.3f}  (n={c['n']})")
    return 0


if __name__ == "__main__":
    from sevi.cli.policy import run_command

    sys.exit(run_command("pool_frames_to_limit", None, main))
