"""Closed-loop evaluation of thickness recommendations on simulated plants.

For each simulated plant (``coating.plant``, seed ``s``) and each of its first cycles: the
operators' rule runs the first ``--fit-runs`` runs of the cycle; the models are fitted on them
(time split: the latest 20 % validate) and conditioned on the validation runs; then every
method plans run after run for ``--loop-runs`` runs (or to the end of the cycle), each next run
simulated with the method's settings, and its ΔE00 (CIEDE2000 of the measured colour against
the standard, front and back) is recorded. All methods start from the same machine state and
draw the same random numbers (``plant.step`` consumes the same draws whatever the settings), so
they are compared on the same runs. Methods:

- ``ours``: the grey-box cycle model (``coating.models``, kind ``greybox``), fitted again on all
  the cycle's runs after each just-measured run (``--refit-every 1``, as ``coating recommend``;
  ``0``: a filter step instead), settings by ``coating.recommend.recommend_settings``;
- ``ours_robust``: the same model, recommender with robust design (``robust_draws`` = 32: the
  expected dE00^2 over the model's antithetic draws of the run's own deposition errors): what
  ``coating recommend`` does by default;
- ``unchanged``: the settings of the last fitted run, kept;
- ``notes_model1``: the notes' approach: the model1 MLP of the cycle, fine-tuned on each
  just-measured run, input optimisation by the same recommender;
- ``physics_ls``: fit the last run's 10 adjustable thicknesses through the optics (nominal
  indices) by least squares, tooling = fitted / set, new settings = recipe / tooling;
- ``operator`` (for reference): the plant simulator's model of the engineers' rule;
- ``oracle`` (for reference, uses hidden truth): settings = recipe / true current tooling;
- ``oracle_last`` (for reference, uses hidden truth): settings = recipe / (the true tooling of
  the last run times the cycle's trend): the same rule on the machine as a perfect estimate of
  the past runs would know it; only the walk's step since is unknown. No planner that learns
  the machine from its measured runs can expect to do better than this without luck;
- ``oracle_robust`` (for reference, uses hidden truth): the recommender with robust design on
  the machine's own physics and noise (``plant.MachineTwin``): what the recommender reaches
  with perfect knowledge of the machine, under the same bounds and step limit;
- ``oracle_lagged`` (for reference, uses hidden truth): the same, but the machine is known as it
  was at the last run (tooling times its trend); the walk step since is drawn in the robust
  design. What a planner reaches that knows everything a measurement could tell.
All methods get the same bounds and step limit per run (``recommend.default_limits``).

    python tools/coating_closed_loop.py [--quick] [--plants 2] [--cycles 2] [--out DIR]

Prints a table; writes ``DIR/closed_loop.json`` and ``DIR/closed_loop.png``.
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

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from coating import models, plant, recommend, schema  # noqa: E402
from coating.atomic import atomic_path, atomic_text  # noqa: E402
from coating.colour import ciede2000  # noqa: E402
from coating.recommend_config import RecommendConfig  # noqa: E402
from coating.stacks import settings_of_recipe  # noqa: E402
from sevi.overrides import apply_overrides, parse_value, split_assignments  # noqa: E402

METHODS = ("ours", "ours_robust", "unchanged", "notes_model1", "physics_ls", "operator", "oracle",
           "oracle_last", "oracle_robust", "oracle_lagged")
ROBUST_DRAWS = RecommendConfig.robust_draws  # what `coating recommend` uses by default
SPECTRAL_WEIGHT = RecommendConfig.spectral_weight


def physics_ls_settings(meas: plant.Measurement, params: plant.PlantParams) -> np.ndarray:
    """Physics least squares: the last run's adjustable thicknesses fitted through the optics
    (nominal indices, fixed layers at the recipe), then ``recipe * setting / fitted``."""
    from scipy.optimize import least_squares

    from coating.stacks import recipe_thickness
    model = plant._model()
    R_meas = torch.tensor(np.stack([meas.R_F, meas.R_B]), dtype=torch.float64)
    recipe = np.array(settings_of_recipe())

    def fun(d):
        t = recipe_thickness(torch.as_tensor(d, dtype=torch.float64))
        return (100 * model.reflectance(t, angle_deg=params.measure_angle_deg) - R_meas).reshape(-1)
    jac = lambda d: torch.autograd.functional.jacobian(fun, torch.as_tensor(d), vectorize=True).numpy()  # noqa: E731
    r = least_squares(lambda d: fun(torch.as_tensor(d)).detach().numpy(), recipe, jac=jac, method="lm")
    return recipe * np.asarray(meas.settings) / r.x


def _clip(x, x0, limits):
    x = np.clip(x, x0 - limits.max_step_nm, x0 + limits.max_step_nm)
    return np.round(np.clip(x, limits.lower, limits.upper), 2)


def run_cycle(state, rng, params, fit_runs, loop_runs, hp_grey, hp_m1, log=print, methods=METHODS,
              finish_cycle=True, robust_draws=ROBUST_DRAWS, spectral_weight=SPECTRAL_WEIGHT, refit_every=1,
              grey_select=()):
    """Operator runs for ``fit_runs``, fit, then every method in closed loop. Returns
    (state after the whole cycle under the operator, rng, {method: [(dE_F, dE_B), ...]}, info).

    ``grey_select``: candidate grey-box overrides; with two or more, the grey box is the one of
    lowest validation loss (``models.fit_best``), its hyperparameters kept for every refit."""
    std_R = plant.standard_reflectance(params)
    wl = schema.WAVELENGTHS_NM.astype(np.float64)
    standard = recommend.Standard.from_curves(std_R[0], std_R[1])
    cycle = state.cycle_id
    rows = []
    settings = np.array(state.settings)
    for _ in range(fit_runs):
        last_state = state
        state, m = plant.step(state, settings, rng, params)
        rows.append(m)
        settings = plant.operator_settings(m, std_R, wl, params)
    hist = schema.history_from_measurements(rows)
    tr, va = models.time_split(hist, cycle)
    t0 = time.time()
    grey = grey_m = m1 = m1_m = None
    chosen = None
    if "ours" in methods or "ours_robust" in methods:
        if len(grey_select) > 1:
            grey, i = models.fit_best("greybox", hp_grey, grey_select, tr, va)
            chosen = dict(grey_select[i])
        else:
            grey = models.fit("greybox", {**hp_grey, **(grey_select[0] if grey_select else {})}, tr, va)
        grey_m = models.fine_tune(grey.model, va)  # condition on the validation runs (the latest)
    if "notes_model1" in methods:
        m1 = models.fit("model1", hp_m1, tr, va)
        m1_m = models.fine_tune(m1.model, va)
    fit_s = time.time() - t0
    limits = recommend.default_limits(np.median(hist.settings, axis=0))
    n_loop = min(loop_runs, state.cycle_length - state.run_in_cycle)
    snap_state, snap_rng = state, rng.bit_generator.state
    recipe = np.array(settings_of_recipe())
    lab_std = standard.lab
    results, times, aims, specs = {}, {}, {}, {}
    for method in methods:
        st = snap_state
        r = np.random.default_rng()
        r.bit_generator.state = snap_rng
        last, cur = rows[-1], np.array(rows[-1].settings)
        last_tooling = last_state.tooling
        model = {"ours": grey_m, "ours_robust": grey_m, "notes_model1": m1_m}.get(method)
        des, aim, spec, made = [], [], [], []
        t0 = time.time()
        for _ in range(n_loop):
            if method == "unchanged":
                nxt = cur
            elif method == "operator":
                nxt = plant.operator_settings(last, std_R, wl, params)
            elif method == "oracle":
                nxt = _clip(recipe / np.array(st.tooling), cur, limits)
            elif method == "oracle_last":
                nxt = _clip(recipe / (np.array(last_tooling) * (1 + np.array(st.tooling_trend))), cur, limits)
            elif method == "oracle_robust":
                nxt = recommend.recommend_settings(plant.MachineTwin(st, params), cur, st.run_in_cycle + 1,
                                                   standard, limits, robust_draws=robust_draws,
                                                   spectral_weight=spectral_weight).settings
            elif method == "oracle_lagged":
                lagged = dataclasses.replace(st, tooling=tuple(np.array(last_tooling) * (1 + np.array(st.tooling_trend))))
                nxt = recommend.recommend_settings(plant.MachineTwin(lagged, params, params.tooling_walk_sd), cur,
                                                   st.run_in_cycle + 1, standard, limits,
                                                   robust_draws=robust_draws, spectral_weight=spectral_weight).settings
            elif method == "physics_ls":
                nxt = _clip(physics_ls_settings(last, params), cur, limits)
            else:
                rec = recommend.recommend_settings(model, cur, st.run_in_cycle + 1, standard, limits,
                                                   robust_draws=robust_draws if method == "ours_robust" else 0,
                                                   spectral_weight=spectral_weight)
                nxt = rec.settings
            # Diagnostics (hidden truth): the colour error the settings aim at on the machine as
            # it is (no deposition error, no measurement noise), and how far the model's
            # prediction of that colour is off.
            lab_mean = torch.as_tensor(plant.mean_run_lab(st, nxt, params))
            a = ciede2000(lab_mean, lab_std).numpy()
            b = np.full(2, np.nan)
            if model is not None:
                b = ciede2000(torch.as_tensor(recommend.predicted_lab(model, nxt, st.run_in_cycle + 1)),
                              lab_mean).numpy()
            aim.append((float(a[0]), float(a[1]), float(b[0]), float(b[1])))
            last_tooling = st.tooling
            st, meas = plant.step(st, nxt, r, params)
            des.append(plant.delta_e00_to_standard(meas, params))
            spec.append(tuple(np.sqrt(((np.stack([meas.R_F, meas.R_B]) - std_R) ** 2).mean(-1))))
            last, cur = meas, np.array(meas.settings)
            made.append(meas)
            if model is not None:  # the rule `coating recommend` runs before each plan
                model = models.update_cycle_model(model, schema.history_from_measurements(rows + made),
                                                  [schema.history_from_measurements([meas])],
                                                  full_refit=bool(refit_every) and len(made) % refit_every == 0)
        results[method] = des
        aims[method] = aim
        specs[method] = spec
        times[method] = time.time() - t0
    log(f"  cycle {cycle}: fit {fit_s:.1f} s ("
        + (f"greybox val dE00 {grey.metrics['val_dE00']:.3f}" if grey else "no model")
        + (f" with {chosen}" if chosen else "")
        + (f", model1 {m1.metrics['val_dE00']:.3f}" if m1 else "") + f"); loop {n_loop} runs; " +
        ", ".join(f"{k} {np.median(v):.2f}" for k, v in results.items()))
    # Continue the operator's trajectory to the next cleaning cycle.
    while finish_cycle and state.cycle_id == cycle:
        state, m = plant.step(state, settings, rng, params)
        settings = plant.operator_settings(m, std_R, wl, params)
    info = {"cycle": cycle, "fit_s": fit_s, "loop_runs": n_loop, "loop_s": times, "aim": aims, "spectral_rms": specs,
            "greybox_val": grey.metrics if grey else None, "model1_val": m1.metrics if m1 else None,
            "greybox_selected": chosen}
    return state, rng, results, info


def summarise(results: dict) -> dict:
    out = {}
    for method, des in results.items():
        d = np.asarray(des)                                      # (runs, 2)
        out[method] = {"median": float(np.median(d)), "p90": float(np.percentile(d, 90)),
                       "median_F": float(np.median(d[:, 0])), "median_B": float(np.median(d[:, 1])),
                       "p90_F": float(np.percentile(d[:, 0], 90)), "p90_B": float(np.percentile(d[:, 1], 90)),
                       "mean": float(d.mean()), "n_runs": int(d.shape[0])}
    return out


def _grey_value(name: str, default, text: str, flag: str = "--grey"):
    """A grey-box hyperparameter value from the command line, typed like its default."""
    try:
        return parse_value(name, type(default), text)
    except ValueError as e:
        raise SystemExit(f"{flag}: {e}") from None


def _grey_grid(items: list[str]) -> list[dict]:
    """``["walk_sd=1e-3,2e-3", "width=0,16"]`` -> every combination as grey-box overrides."""
    grid = [{}]
    defaults = models.resolve_hparams("greybox", {})
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
                    help="grey-box hyperparameter overrides; fields and defaults: coating.models.DEFAULTS['greybox']")
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
    args = ap.parse_args(argv)
    methods = tuple(m for m in METHODS if m in set(args.methods.split(",")) | {"physics_ls", "unchanged"})
    unknown = set(args.methods.split(",")) - set(METHODS)
    if unknown:
        ap.error(f"--methods: unknown {sorted(unknown)}; choose from {','.join(METHODS)}")
    if args.quick:
        args.plants, args.cycles, args.loop_runs, args.fit_runs = 1, 1, 10, 24
    torch.set_num_threads(1)
    params = _plant_params(args.plant)
    hp_grey = {"epochs": 8}
    for item in args.grey:
        k, _, v = item.partition("=")
        default = models.resolve_hparams("greybox", {}).get(k)
        if default is None:
            raise SystemExit(f"--grey {item}: unknown grey-box hyperparameter {k!r}")
        hp_grey[k] = _grey_value(k, default, v)
    grey_select = _grey_grid(args.grey_select)
    hp_m1 = {}
    t_start = time.time()
    results = {m: [] for m in methods}
    infos = []
    for seed in range(args.seed, args.seed + args.plants):
        print(f"plant seed {seed}", flush=True)
        state = plant.init(params, seed)
        rng = np.random.default_rng([seed, 1])
        for _ in range(args.cycles):
            state, rng, res, info = run_cycle(state, rng, params, args.fit_runs, args.loop_runs,
                                              hp_grey, hp_m1, lambda s: print(s, flush=True), methods=methods,
                                              robust_draws=args.robust_draws, spectral_weight=args.spectral_weight,
                                              refit_every=args.refit_every, grey_select=grey_select)
            info["seed"] = seed
            infos.append(info)
            for k, v in res.items():
                results[k] += v
    wall = time.time() - t_start
    summary = summarise(results)
    base = summary["physics_ls"]["median"], summary["unchanged"]["median"]
    targets = {}
    for name in ("ours", "ours_robust"):
        if name not in summary:
            continue
        o = summary[name]
        targets[name] = {"median_vs_physics_ls": o["median"] / base[0], "median_vs_unchanged": o["median"] / base[1],
                         "p90": o["p90"], "met": bool(o["median"] <= 0.75 * base[0] and o["median"] <= 0.45 * base[1]
                                                      and o["p90"] <= 1.2)}
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
    for name, t in targets.items():
        print(f"{name}: / physics_ls median {t['median_vs_physics_ls']:.2f} (target <= 0.75); "
              f"/ unchanged {t['median_vs_unchanged']:.2f} (target <= 0.45); "
              f"p90 {t['p90']:.2f} (target <= 1.2): {'met' if t['met'] else 'NOT met'}")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    doc = {"command": " ".join(["python tools/coating_closed_loop.py"] + (argv if argv is not None else sys.argv[1:])),
           "plant_params": dataclasses.asdict(params), "args": vars(args), "wall_s": wall,
           "summary": summary, "targets": targets, "cycles": infos,
           "per_run": {m: np.asarray(v).tolist() for m, v in results.items()}}
    atomic_text(out / "closed_loop.json", json.dumps(doc, indent=1, default=float))
    _plot(results, out / "closed_loop.png")
    print(f"wrote {out / 'closed_loop.json'} and {out / 'closed_loop.png'}")
    return 0


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
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=110, format="png")
    plt.close(fig)


if __name__ == "__main__":
    raise SystemExit(main())
