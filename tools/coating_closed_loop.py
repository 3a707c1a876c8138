"""Closed-loop evaluation of thickness recommendations on simulated plants: the command line.

The cycle runner, its methods (ours, ours_robust, the baselines unchanged, notes_model1,
physics_ls, operator, and the hidden-truth oracles) and the summary live in
``coating.recommend.closed_loop``, whose docstring describes the protocol and every method. This tool
parses the options, loops over plants and cycles, prints the table and writes the files.

    python tools/coating_closed_loop.py [--quick] [--plants 2] [--cycles 2] [--out DIR] [--threads N]

Prints a table; writes ``DIR/closed_loop.json`` and ``DIR/closed_loop.png``. ``ours`` and
``ours_robust`` plan through ``coating recommend``'s code path (``coating.recommend.plan``); for
them the tool also prints how sure the plans were: the share of measured next-run dE00 inside
the plans' 90 % intervals, the share flagged for care, failures, and the time per call.
``--interval-scales S1,S2,...`` records the coverage at other tooling scales too (how
``RecommendConfig.interval_tooling_scale`` is calibrated). Plants run side by side in up to
``--threads`` processes (the thread policy, ``sevi.runtime.threads``; results do not depend on it).
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch

from coating.line import plant
from coating.models.hparams import resolve_hparams
from coating.recommend.closed_loop import (
    METHODS,
    ROBUST_DRAWS,
    SPECTRAL_WEIGHT,
    gain_line,
    interval_summary,
    run_cycle,
    summarise,
    targets,
)
from sevi.io.atomic import atomic_text, save_png
from sevi.runtime.overrides import apply_overrides, parse_value, split_assignments


def _grey_value(name: str, default, text: str, flag: str = "--grey"):
    """A grey-box hyperparameter value from the command line, typed like its default."""
    try:
        return parse_value(name, type(default), text)
    except ValueError as e:
        raise SystemExit(f"{flag}: {e}") from None


def _grey_grid(items: list[str]) -> list[dict]:
    """``["walk_sd=1e-3,2e-3", "width=0,16"]`` -> every combination as grey-box overrides."""
    grid = [{}]
    defaults = resolve_hparams("greybox", {})
    for item in items:
        k, _, vs = item.partition("=")
        if k not in defaults or not vs:
            raise SystemExit(f"--grey-select {item}: expected FIELD=V1,V2,... with FIELD a grey-box "
                             f"hyperparameter ({', '.join(sorted(defaults))})")
        grid = [{**g, k: _grey_value(k, defaults[k], v, "--grey-select")} for g in grid for v in vs.split(",")]
    return grid if items else []


def _plant_params(overrides: list[str]) -> plant.PlantParams:
    """``["kappa=0.01", "packing_mean=0.98,0.9"]`` -> PlantParams, each value typed like its field."""
    try:
        return apply_overrides(plant.PlantParams(), split_assignments(overrides))
    except ValueError as e:
        raise SystemExit(f"--plant: {e}") from None


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="~1 minute: 1 plant, 1 cycle, 12 loop runs")
    ap.add_argument("--plants", type=int, default=2, help="simulated plants (seeds 0..N-1)")
    ap.add_argument("--cycles", type=int, default=2, help="cycles per plant")
    ap.add_argument("--fit-runs", type=int, default=30, help="operator runs per cycle before fitting")
    ap.add_argument("--loop-runs", type=int, default=20, help="closed-loop runs per cycle")
    ap.add_argument("--seed", type=int, default=0, help="first plant seed")
    ap.add_argument("--plant", nargs="*", default=[], metavar="FIELD=VALUE",
                    help="PlantParams overrides, e.g. kappa=0.01")
    ap.add_argument("--grey", nargs="*", default=[], metavar="FIELD=VALUE",
                    help="grey-box hyperparameter overrides; fields and defaults: coating.models.hparams.DEFAULTS['greybox']")
    ap.add_argument("--grey-select", nargs="*", default=[], metavar="FIELD=V1,V2,...",
                    help="grey-box methods: per cycle, fit every combination of these values and keep the "
                         "lowest validation loss on the cycle's latest runs, as the Tune sweep would "
                         "(default: none, the grey box's defaults and --grey only)")
    ap.add_argument("--out", default="closed_loop_out", help="directory for the JSON and the PNG")
    ap.add_argument("--methods", default=",".join(METHODS),
                    help=f"comma-separated subset of {','.join(METHODS)} (physics_ls and unchanged are always run)")
    ap.add_argument("--spectral-weight", type=float, default=SPECTRAL_WEIGHT,
                    help=f"the recommender's weight of the spectral distance to the standard (default "
                         f"{SPECTRAL_WEIGHT}, as coating recommend); all recommender methods")
    ap.add_argument("--refit-every", type=int, default=1, metavar="K",
                    help="grey-box methods: every K closed-loop runs, fit the model again on all the cycle's "
                         "runs so far, filter steps in between (default 1, as coating recommend; 0: filter "
                         "steps only, as coating recommend --no-refit)")
    ap.add_argument("--robust-draws", type=int, default=ROBUST_DRAWS,
                    help=f"draws of ours_robust's robust design (default {ROBUST_DRAWS}, as coating recommend)")
    ap.add_argument("--interval-scales", default="", metavar="C[:L[:N]],...",
                    help="also record the plans' 90 %% intervals at these scales: common tooling step C and "
                         "per-layer error L (default 0) in walk_sd units, the run's own errors times N "
                         "(default 1) (calibration)")
    ap.add_argument("--interval-scale", default=None, metavar="C[:L[:N]]",
                    help="the plans' scales (default RecommendConfig.interval_tooling_scale, interval_layer_scale "
                         "and interval_noise_scale, as coating recommend)")
    ap.add_argument("--interval-z", default=None, choices=("cycle", "gaussian"),
                    help="the run's sensor-linked errors in the interval's draws (default RecommendConfig.interval_z)")
    ap.add_argument("--threads", type=int, default=None, metavar="N",
                    help="plants side by side in up to N processes (default: every usable core)")
    args = ap.parse_args(argv)
    methods = tuple(m for m in METHODS if m in set(args.methods.split(",")) | {"physics_ls", "unchanged"})
    unknown = set(args.methods.split(",")) - set(METHODS)
    if unknown:
        ap.error(f"--methods: unknown {sorted(unknown)}; choose from {','.join(METHODS)}")
    if args.quick:
        args.plants, args.cycles, args.loop_runs, args.fit_runs = 1, 1, 10, 24
    from sevi.runtime.threads import apply_thread_policy
    try:
        policy = apply_thread_policy(args.threads, work="small", items=args.plants)
    except ValueError as e:
        ap.error(str(e))
    def pair(text, flag):
        try:
            parts = [float(v) for v in text.split(":")]
        except ValueError:
            parts = []
        if not 1 <= len(parts) <= 3:
            ap.error(f"{flag} {text}: expected C, C:L or C:L:N, numbers")
        return tuple(parts + [0.0, 1.0][len(parts) - 1:])
    scales = tuple(pair(x, "--interval-scales") for x in args.interval_scales.split(",") if x.strip())
    from coating.recommend.config import RecommendConfig
    config = RecommendConfig()
    if args.interval_scale is not None:
        c, lay, r = pair(args.interval_scale, "--interval-scale")
        config = dataclasses.replace(config, interval_tooling_scale=c, interval_layer_scale=lay, interval_noise_scale=r)
    if args.interval_z is not None:
        config = dataclasses.replace(config, interval_z=args.interval_z)
    params = _plant_params(args.plant)
    hp_grey = {"epochs": 8}
    for item in args.grey:
        k, _, v = item.partition("=")
        default = resolve_hparams("greybox", {}).get(k)
        if default is None:
            raise SystemExit(f"--grey {item}: unknown grey-box hyperparameter {k!r}")
        hp_grey[k] = _grey_value(k, default, v)
    grey_select = _grey_grid(args.grey_select)
    hp_m1 = {}
    t_start = time.time()
    results = {m: [] for m in methods}
    infos = []
    job = dict(params=params, cycles=args.cycles, fit_runs=args.fit_runs, loop_runs=args.loop_runs, hp_grey=hp_grey,
               hp_m1=hp_m1, methods=methods, robust_draws=args.robust_draws, spectral_weight=args.spectral_weight,
               refit_every=args.refit_every, grey_select=grey_select, config=config, interval_scales=scales)
    seeds = list(range(args.seed, args.seed + args.plants))
    if policy.workers > 1 and len(seeds) > 1:
        import multiprocessing as mp
        from concurrent.futures import ProcessPoolExecutor
        ctx = mp.get_context("fork" if "fork" in mp.get_all_start_methods() else "spawn")
        with ProcessPoolExecutor(policy.workers, mp_context=ctx) as ex:
            per_plant = list(ex.map(_plant, seeds, [job] * len(seeds)))
    else:
        per_plant = [_plant(seed, job) for seed in seeds]
    for res_list in per_plant:
        for res, info in res_list:
            infos.append(info)
            for k, v in res.items():
                results[k] += v
    wall = time.time() - t_start
    summary = summarise(results)
    met = targets(summary)
    print(f"\nnext-run CIEDE2000 against the standard, {summary['physics_ls']['n_runs']} runs x 2 sides, "
          f"{args.plants} plant(s) x {args.cycles} cycle(s), wall {wall:.0f} s")
    print(f"{'method':<14} {'median':>7} {'p90':>7} {'med F':>7} {'med B':>7} {'p90 F':>7} {'p90 B':>7}")
    for m in methods:
        s = summary[m]
        print(f"{m:<14} {s['median']:7.3f} {s['p90']:7.3f} {s['median_F']:7.3f} {s['median_B']:7.3f} "
              f"{s['p90_F']:7.3f} {s['p90_B']:7.3f}")
    print("aim (hidden truth): ΔE00 of each method's settings on the machine as it is, without the run's "
          "own errors;\nmodel error: ΔE00 between the model's predicted colour and that colour")
    for m in methods:
        a = np.concatenate([np.asarray(i["aim"][m]).reshape(-1, 4) for i in infos])
        err = "" if np.isnan(a[:, 2:]).all() else \
            f"; model error median {np.median(a[:, 2:]):.3f} p90 {np.percentile(a[:, 2:], 90):.3f}"
        sp = np.concatenate([np.asarray(i["spectral_rms"][m]).reshape(-1, 2) for i in infos])
        print(f"  {m:<14} aim median {np.median(a[:, :2]):.3f} p90 {np.percentile(a[:, :2], 90):.3f}{err}; "
              f"measured curve vs standard RMS median {np.median(sp):.3f} %")
    for name, t in met.items():
        print(f"{name}: / physics_ls median {t['median_vs_physics_ls']:.3f} (targets <= 0.75 and <= 0.6); "
              f"/ unchanged {t['median_vs_unchanged']:.2f} (target <= 0.45); "
              f"p90 {t['p90']:.2f} (target <= 1.2): {'met' if t['met'] else 'NOT met'}")
    sure = {}
    for m in ("ours", "ours_robust"):
        recs = [r for i in infos for r in i.get("plans", {}).get(m, [])]
        if not recs:
            continue
        sure[m] = s = interval_summary(recs, scales)
        line = f"{m}: {s['n_plans']} plans through coating recommend's path, {s['failures']} failure(s)"
        if "coverage" in s:
            line += (f"; 90 % interval coverage {100 * s['coverage']:.1f} % (F {100 * s['coverage_F']:.1f}, "
                     f"B {100 * s['coverage_B']:.1f}; below {100 * s['below']:.1f}, above {100 * s['above']:.1f}; "
                     f"target 85-95 %), median width {s['median_width']:.3f}")
        line += f"; flagged for care {100 * s.get('flagged', 0):.1f} %"
        flags = [f"{k[8:]} {100 * v:.1f} %" for k, v in s.items() if k.startswith("flagged_")]
        line += f" ({', '.join(flags)})" if flags else ""
        line += f"; per call median {s['call_wall_s_median']:.1f} s wall, {s['call_cpu_s_median']:.1f} s CPU"
        print(line)
        if gain_line(s):
            print("  " + gain_line(s))
        if "coverage_by_scale" in s:
            for k, v in s["coverage_by_scale"].items():
                print(f"  scales {k} (common:layer): coverage {100 * v['coverage']:.1f} % (below "
                      f"{100 * v['below']:.1f}, above {100 * v['above']:.1f}), median width {v['median_width']:.3f}")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    doc = {"command": " ".join(["python tools/coating_closed_loop.py"] + (argv if argv is not None else sys.argv[1:])),
           "plant_params": dataclasses.asdict(params), "args": vars(args), "wall_s": wall,
           "summary": summary, "targets": met, "how_sure": sure, "threads": policy.describe(), "cycles": infos,
           "per_run": {m: np.asarray(v).tolist() for m, v in results.items()}}
    atomic_text(out / "closed_loop.json", json.dumps(doc, indent=1, default=float))
    _plot(results, out / "closed_loop.png")
    print(f"wrote {out / 'closed_loop.json'} and {out / 'closed_loop.png'}")
    return 0


def _plant(seed: int, job: dict) -> list:
    """One simulated plant, its first ``cycles`` cycles in closed loop: [(results, info), ...]."""
    torch.set_num_threads(1)   # small work (sevi.runtime.threads): one intra-op thread per plant
    print(f"plant seed {seed}", flush=True)
    state = plant.init(job["params"], seed)
    rng = np.random.default_rng([seed, 1])
    out = []
    for _ in range(job["cycles"]):
        state, rng, res, info = run_cycle(state, rng, job["params"], job["fit_runs"], job["loop_runs"], job["hp_grey"],
                                          job["hp_m1"], lambda s: print(f"[{seed}] {s}", flush=True),
                                          methods=job["methods"], robust_draws=job["robust_draws"],
                                          spectral_weight=job["spectral_weight"], refit_every=job["refit_every"],
                                          grey_select=job["grey_select"], config=job["config"],
                                          interval_scales=job["interval_scales"])
        info["seed"] = seed
        out.append((res, info))
    return out


def _plot(results: dict, path: Path) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, axes = plt.subplots(1, 2, figsize=(12, 4), sharey=True)
    for side, ax in enumerate(axes):
        for m in results:
            d = np.asarray(results[m])[:, side]
            ax.plot(np.arange(1, len(d) + 1), d, lw=1, marker=".", ms=3,
                    label=f"{m} (median {np.median(d):.2f})")
        ax.set_title(("front", "back")[side])
        ax.set_xlabel("closed-loop run (all cycles, in order)")
        ax.set_yscale("log")
    axes[0].set_ylabel("next-run ΔE00 vs standard")
    axes[1].legend(fontsize=8)
    fig.tight_layout()
    save_png(fig, path)


if __name__ == "__main__":
    raise SystemExit(main())
