"""Calibrate the simulated plant's noise against the closed-loop targets' reference simulator.

The closed-loop targets were set on one independent simulator of such a line: with the settings left unchanged the
next run's CIEDE2000 has a median of about 1.4, and physics least squares (fit the last run's
thicknesses, re-solve the settings) about 0.8. Both baselines use no learned model, so they
calibrate the plant itself: how much of a run's colour error is drift between runs (which
unchanged settings suffer and a run-to-run correction removes) and how much is the run's own
deposition error (which nothing removes).

For every point of a small grid over ``PlantParams`` fields this runs the closed-loop protocol
of ``coating.recommend.closed_loop`` with the model-free methods only (unchanged, physics least
squares, and the hidden-truth references oracle and oracle_last) on the same plants, and prints
the medians and the distance to the reference, ``|log(unchanged / 1.4)| + |log(physics_ls /
0.8)|``. ``oracle_last`` (the machine known exactly as it was at the last run) says whether the
closed-loop targets can be met at a point at all: no planner that learns from measured runs can
expect to beat it. Writes ``DIR/calibration.json``.

    python tools/calibrate_plant.py --grid kappa=0.02,0.01 run_scale_sd=0.005,0.0025 \
        tooling_trend_sd=1e-4,3e-4 [--plants 2] [--cycles 2] [--out DIR]
"""
from __future__ import annotations

import argparse
import dataclasses
import itertools
import json
import time
import typing
from pathlib import Path

import numpy as np
import torch

from coating.line import plant
from coating.recommend.closed_loop import run_cycle, summarise
from sevi.io.atomic import atomic_text
from sevi.runtime.overrides import parse_value

REFERENCE = {"unchanged": 1.4, "physics_ls": 0.8}
METHODS = ("unchanged", "physics_ls", "oracle", "oracle_last")


def evaluate(params: plant.PlantParams, plants: int, cycles: int, fit_runs: int, loop_runs: int) -> dict:
    """Medians and p90s of the model-free methods on ``plants`` x ``cycles`` cycles."""
    results = {m: [] for m in METHODS}
    for seed in range(plants):
        state = plant.init(params, seed)
        rng = np.random.default_rng([seed, 1])
        for _ in range(cycles):
            state, rng, res, _ = run_cycle(state, rng, params, fit_runs, loop_runs, None, None,
                                           log=lambda s: None, methods=METHODS)
            for k, v in res.items():
                results[k] += v
    return summarise(results)


def distance(summary: dict) -> float:
    return float(sum(abs(np.log(summary[m]["median"] / ref)) for m, ref in REFERENCE.items()))


def _grid(items: list[str]) -> list[dict]:
    fields = typing.get_type_hints(plant.PlantParams)
    axes = []
    for item in items:
        name, _, values = item.partition("=")
        if name not in fields:
            raise SystemExit(f"--grid {item}: unknown PlantParams field {name!r}")
        try:  # each value typed like its field, by the suite's one override parser
            axes.append([(name, parse_value(name, fields[name], v)) for v in values.split(",")])
        except ValueError as e:
            raise SystemExit(f"--grid {item}: {e}") from None
    return [dict(point) for point in itertools.product(*axes)]


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--grid", nargs="+", required=True, metavar="FIELD=V1,V2,...")
    ap.add_argument("--plants", type=int, default=2)
    ap.add_argument("--cycles", type=int, default=2)
    ap.add_argument("--fit-runs", type=int, default=30)
    ap.add_argument("--loop-runs", type=int, default=20)
    ap.add_argument("--out", default="calibration_out")
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    rows = []
    print(f"{'point':<60} {'unchanged':>9} {'phys_ls':>8} {'oracle':>7} {'or_last':>7} {'dist':>6}")
    for point in _grid(args.grid):
        t0 = time.time()
        params = dataclasses.replace(plant.PlantParams(), **point)
        s = evaluate(params, args.plants, args.cycles, args.fit_runs, args.loop_runs)
        d = distance(s)
        rows.append({"point": point, "summary": s, "distance": d, "wall_s": time.time() - t0})
        label = " ".join(f"{k}={v:g}" for k, v in point.items())
        print(f"{label:<60} {s['unchanged']['median']:9.3f} {s['physics_ls']['median']:8.3f} "
              f"{s['oracle']['median']:7.3f} {s['oracle_last']['median']:7.3f} {d:6.3f}", flush=True)
    best = min(rows, key=lambda r: r["distance"])
    print("closest to the reference (unchanged 1.4, physics LS 0.8):",
          " ".join(f"{k}={v:g}" for k, v in best["point"].items()))
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    atomic_text(out / "calibration.json", json.dumps({"reference": REFERENCE, "args": vars(args), "rows": rows}, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
