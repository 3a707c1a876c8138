"""``coating recommend`` and ``sevi simulate`` timed as users run them, on a quiet machine and
beside two CPU-bound processes this tool starts itself (BENCHMARKS.md, "Busy machine").

    python tools/bench_busy.py --out DIR [--models DIR] [--conditions idle,busy] [--what recommend1,recommend10,...]
        [--worst-case] [--growth 60,100,150,200] [--repeat 1]

Inputs, made in ``DIR`` unless given: the 60-run cycle (the first 60 runs of ``coating simulate
--cycles 1 --seed 5``, which simulates a 77-run cycle), its standard, and the models of
``python -m ray_jobs.coating_tune --num-samples 2`` on it (``--models`` reuses a registry).
``--worst-case`` also times the search space's most expensive grey box (20 epochs, a 32-wide,
2-deep residual; fitted here, seed 0) in ``DIR/models_worst``.

Per condition (``idle``: nothing started; ``busy``: two ``python -c "while True: pass"``):

* ``recommend1``: ``coating recommend`` of one run (N61) with the shipped defaults;
* ``recommend10``: ten runs (N61-N70, runs 61-70 of the cycle) in one call (side by side in
  processes, the default); ``recommend10t``: the same with ``--parallel threads``;
* ``simulate``: ``sevi simulate --random 200 --grid 512 --electrons 100000 --device cpu``,
  its images per second (start-up included) against the notes' numpy method
  (``sevi.evaluation.generator_timing.time_numpy``, 6 images, timed in a subprocess under the
  same condition).

``--growth N1,N2,...`` times ``coating recommend`` of the next run on cycles of N runs (the
first N of a 200-run simulated cycle, seed 5; a grey box with the default hyperparameters
fitted on its first 60 runs), idle, and measures in this process where the time goes (the refit
and the optimisation) at each N.

Every figure carries the load average before and during its run (``os.getloadavg``); prints a
table with the targets and writes ``DIR/bench_busy.json``.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

from sevi.evaluation.busy_timing import busy, load_now, time_command

TARGETS = {"recommend1": ("<=", 20.0, "s"), "recommend10": ("<=", 60.0, "s"), "recommend10t": ("<=", 60.0, "s"),
           "simulate": (">=", 10.0, "x numpy")}
BIN = Path(sys.executable).parent


def _run(cmd, cwd=None):
    r = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True)
    if r.returncode:
        raise SystemExit(f"bench_busy: {' '.join(map(str, cmd))} failed ({r.returncode}):\n{r.stderr[-3000:]}")
    return r.stdout


def prepare(d: Path, models: str | None, worst: bool) -> dict:
    d.mkdir(parents=True, exist_ok=True)
    if not (d / "hist60.csv").exists():
        _run([BIN / "coating", "simulate", "--cycles", "1", "--seed", "5", "--out", d / "hist_seed5.csv",
              "--standard-out", d / "std.csv"])
        lines = (d / "hist_seed5.csv").read_text().splitlines()
        (d / "hist60.csv").write_text("\n".join(lines[:61]) + "\n")
    (d / "new1.csv").write_text("furnace_no,cycle_id\nN61,1\n")
    (d / "new10.csv").write_text("furnace_no,cycle_id,run_in_cycle\n" + "".join(f"N{r},1,{r}\n" for r in range(61, 71)))
    if models is None:
        models = str(d / "models")
        if not (Path(models) / "cycle_0001" / "greybox" / "model.json").exists():
            env = {**os.environ, "RAY_AUTH_MODE": os.environ.get("RAY_AUTH_MODE", "disabled")}
            t0 = time.perf_counter()
            r = subprocess.run([sys.executable, "-m", "ray_jobs.coating_tune", "--history", str(d / "hist60.csv"),
                                "--models", models, "--num-samples", "2", "--storage-path", str(d / "tune")],
                               capture_output=True, text=True, env=env)
            if r.returncode:
                raise SystemExit(f"bench_busy: coating_tune failed:\n{r.stderr[-3000:]}")
            print(f"coating_tune --num-samples 2: {time.perf_counter() - t0:.0f} s")
    registries = {"tuned": models}
    if worst:
        registries["worst"] = str(d / "models_worst")
        if not (d / "models_worst" / "cycle_0001" / "greybox" / "model.json").exists():
            import torch

            from coating.line import history_rows, schema
            from coating.models import fitting, registry
            torch.set_num_threads(1)
            h = schema.read_history(d / "hist60.csv")
            tr, va = history_rows.time_split(h, 1)
            registry.save_fit(d / "models_worst", 1, fitting.fit("greybox", {"epochs": 20, "width": 32, "depth": 2},
                                                                 tr, va), tr)
    return registries


def _hparams(models: str) -> dict:
    meta = json.loads((Path(models) / "cycle_0001" / "greybox" / "model.json").read_text())
    return {k: meta["hparams"][k] for k in ("epochs", "inner_steps", "width", "depth")}


def recommend_cmd(d: Path, runs: str, models: str, out: str, *extra: str) -> list[str]:
    return [str(BIN / "coating"), "recommend", "--history", str(d / "hist60.csv"), "--runs", str(d / runs),
            "--standard", str(d / "std.csv"), "--models", models, "--out", str(d / out), *extra]


def simulate_rate(d: Path, n: int, env) -> dict:
    r = time_command([str(BIN / "sevi"), "simulate", "--random", str(n), "--grid", "512", "--electrons", "100000",
                      "--out", str(d / "sim.h5"), "--device", "cpu"], env=env)
    r["images_per_s"] = n / r["wall_s"]
    code = ("import json, time; from sevi.evaluation.generator_timing import time_numpy; "
            "from sevi.physics.prior import Prior; "
            "p = Prior(Prior().config.with_electrons(100000))(6, 0).params; "
            "print(json.dumps({'s_per_image': time_numpy(p, 100000, 512)}))")
    nb = time_command([sys.executable, "-c", code], env=env)
    r["numpy_images_per_s"] = 1 / json.loads(nb["stdout_tail"].strip().splitlines()[-1])["s_per_image"]
    r["numpy_load_during_mean"] = nb["load_during_mean"]
    r["ratio"] = r["images_per_s"] / r["numpy_images_per_s"]
    return r


def growth(d: Path, sizes: list[int]) -> list[dict]:
    """Per-call time of ``coating recommend`` on cycles of N runs, and where it goes."""
    import dataclasses

    import numpy as np
    import torch

    from coating.line import history_rows, plant, schema
    from coating.models import fitting, registry
    from coating.recommend import optimise_settings
    torch.set_num_threads(1)
    gd = d / "growth"
    gd.mkdir(exist_ok=True)
    params = dataclasses.replace(plant.PlantParams(), cycle_runs_min=max(sizes), cycle_runs_max=max(sizes))
    full = schema.history_from_measurements(plant.simulate(params, 1, 5))
    std = plant.standard_reflectance(params)
    schema.write_standard(schema.Standard(schema.WAVELENGTHS_NM.astype(float), std[0], std[1]), gd / "std.csv")
    first = history_rows.select_rows(full, np.arange(60))
    tr, va = history_rows.time_split(first, 1)
    fit = fitting.fit("greybox", None, tr, va)
    if (gd / "models").exists():
        shutil.rmtree(gd / "models")
    registry.save_fit(gd / "models", 1, fit, tr)
    standard = optimise_settings.Standard.from_curves(std[0], std[1])
    (gd / "new1.csv").write_text("furnace_no,cycle_id\nNEXT,1\n")
    rows = []
    for n in sizes:
        h = history_rows.select_rows(full, np.arange(n))
        schema.write_history(h, gd / f"hist{n}.csv")
        r = time_command([str(BIN / "coating"), "recommend", "--history", str(gd / f"hist{n}.csv"), "--runs",
                          str(gd / "new1.csv"), "--standard", str(gd / "std.csv"), "--models", str(gd / "models"),
                          "--out", str(gd / f"out{n}")])
        c0 = time.process_time()
        m = fitting.refit(fit.model, h)
        c1 = time.process_time()
        optimise_settings.recommend_settings(m, h.settings[-1], n + 1, standard,
                                             optimise_settings.default_limits(np.median(h.settings, 0)),
                                             n_starts=4, robust_draws=32)
        c2 = time.process_time()
        rows.append({"n_runs": n, "wall_s": r["wall_s"], "cpu_s": r["cpu_s"], "rc": r["rc"],
                     "load_before": r["load_before"], "load_during_mean": r["load_during_mean"],
                     "refit_cpu_s": c1 - c0, "optimise_cpu_s": c2 - c1})
        print(f"  growth N={n}: {r['wall_s']:.1f} s wall, {r['cpu_s']:.1f} s CPU (refit {c1 - c0:.1f} s, "
              f"optimisation {c2 - c1:.1f} s in-process); load {r['load_before']:.2f} -> {r['load_during_mean']:.2f}",
              flush=True)
    return rows


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", required=True, help="work folder (inputs, outputs, bench_busy.json)")
    ap.add_argument("--models", help="a coating registry for the 60-run cycle (default: coating_tune --num-samples 2)")
    ap.add_argument("--conditions", default="idle,busy", help="idle, busy (two CPU-bound processes)")
    ap.add_argument("--what", default="recommend1,recommend10,recommend10t,simulate")
    ap.add_argument("--worst-case", action="store_true", help="also the search space's most expensive grey box")
    ap.add_argument("--growth", default="", metavar="N1,N2,...", help="per-call time on cycles of N runs")
    ap.add_argument("--repeat", type=int, default=1)
    ap.add_argument("--simulate-images", type=int, default=200)
    ap.add_argument("--timeout", type=float, default=900, help="seconds before a timed command is killed")
    args = ap.parse_args(argv)
    d = Path(args.out).resolve()
    registries = prepare(d, args.models, args.worst_case)
    env = {k: v for k, v in os.environ.items() if k not in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OMP_WAIT_POLICY")}
    results = {"machine": {"cores": os.cpu_count(), "affinity": len(os.sched_getaffinity(0)),
                           "load_at_start": os.getloadavg()},
               "registries": {k: {"path": v, "hparams": _hparams(v)} for k, v in registries.items()}, "runs": []}
    whats = [w for w in args.what.split(",") if w]
    for cond in [c for c in args.conditions.split(",") if c]:
        with busy(2 if cond == "busy" else 0):
            for _ in range(args.repeat):
                for what in whats:
                    for reg, models in (registries.items() if what.startswith("recommend") else [("-", None)]):
                        if what == "simulate":
                            r = simulate_rate(d, args.simulate_images, env)
                            fig = f"{r['images_per_s']:.1f} images/s, numpy {r['numpy_images_per_s']:.2f}: {r['ratio']:.1f}x"
                            value = r["ratio"]
                        else:
                            runs = "new1.csv" if what == "recommend1" else "new10.csv"
                            extra = ("--parallel", "threads") if what == "recommend10t" else ()
                            r = time_command(recommend_cmd(d, runs, models, f"out_{what}_{reg}", *extra), env=env,
                                             timeout=args.timeout)
                            value = r["wall_s"]
                            fig = f"{r['wall_s']:.1f} s wall, {r['cpu_s']:.1f} s CPU" + \
                                (" (KILLED at the timeout)" if r["timed_out"] else "") + \
                                (f" (exit {r['rc']}: {r['stderr_tail'][-300:]})" if r["rc"] else "")
                        op, target, unit = TARGETS[what]
                        met = (value <= target) if op == "<=" else (value >= target)
                        r.update(what=what, condition=cond, registry=reg, value=value, target=f"{op} {target} {unit}",
                                 met=bool(met and not r.get("timed_out") and not r.get("rc")))
                        results["runs"].append(r)
                        print(f"{cond:5s} {what:12s} {reg:6s} {fig}; load {r['load_before']:.2f} before, "
                              f"{r['load_during_mean']:.2f} during (max {r['load_during_max']:.2f}); "
                              f"target {op} {target} {unit}: {'met' if r['met'] else 'NOT met'}", flush=True)
    if args.growth:
        results["growth"] = growth(d, [int(x) for x in args.growth.split(",")])
    results["machine"]["load_at_end"] = os.getloadavg()
    (d / "bench_busy.json").write_text(json.dumps(results, indent=1, default=float))
    print(f"wrote {d / 'bench_busy.json'} (load now {load_now():.2f})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
