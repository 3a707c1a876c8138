"""Closed-loop evaluation of thickness recommendations on simulated plants: the cycle runner,
its baselines and oracles, and the summary. ``tools/coating_closed_loop.py`` is its command
line.

For each simulated plant (``coating.line.plant``, seed ``s``) and each of its first cycles: the
operators' rule runs the first ``fit_runs`` runs of the cycle; the models are fitted on them
(time split: the latest 20 % validate) and conditioned on the validation runs; then every
method plans run after run for ``loop_runs`` runs (or to the end of the cycle), each next run
simulated with the method's settings, and its ΔE00 (CIEDE2000 of the measured colour against
the standard, front and back) is recorded. All methods start from the same machine state and
draw the same random numbers (``plant.step`` consumes the same draws whatever the settings), so
they are compared on the same runs. Methods:

- ``ours``: ``coating recommend`` itself: before each run, the cycle's runs so far (the
  operators' and the loop's) are the history, the grey box fitted on the first ``fit_runs`` (time
  split, as the Tune sweep does) is the registry model, and the run is planned by
  ``coating.recommend.plan.plan_runs``, the command's code path (``refit_every=1``: the grey box
  fitted again on all the cycle's runs; its bounds from the median settings of those runs; 4
  starts); nominal design. With ``refit_every`` 0 or K > 1 (not the command's rule) the model
  is carried from run to run instead: filter steps after each run (``fitting.update_cycle_model``),
  a refit every K;
- ``ours_robust``: the same with robust design (``robust_draws`` = ``RecommendConfig.robust_draws``,
  32: the expected dE00^2 over the model's antithetic draws of the run's own deposition errors):
  what ``coating recommend`` does by default. Its plans carry the next run's dE00 interval and
  care flags, recorded with the measured dE00 (``info["plans"]``; ``interval_summary``);
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
  the machine's own physics and noise (``coating.models.machine_twin.MachineTwin``): what the recommender reaches
  with perfect knowledge of the machine, under the same bounds and step limit;
- ``oracle_lagged`` (for reference, uses hidden truth): the same, but the machine is known as it
  was at the last run (tooling times its trend); the walk step since is drawn in the robust
  design. What a planner reaches that knows everything a measurement could tell.
All other methods get the same bounds and step limit per run (``recommend.default_limits`` of the
median settings of the first ``fit_runs`` runs).
"""
from __future__ import annotations

import copy
import dataclasses
import time

import numpy as np
import torch

from coating.line import plant, schema
from coating.line.history_rows import time_split
from coating.models import fitting
from coating.models.machine_twin import MachineTwin
from coating.optics.colour import ciede2000
from coating.optics.stacks import settings_of_recipe
from coating.recommend import optimise_settings as recommend
from coating.recommend import plan as planner
from coating.recommend.config import RecommendConfig
from coating.recommend.report import check_finite

__all__ = ["METHODS", "ROBUST_DRAWS", "SPECTRAL_WEIGHT", "physics_ls_settings", "run_cycle", "summarise",
           "targets", "interval_summary", "gain_summary", "gain_line", "P_WORSE_BINS"]

METHODS = ("ours", "ours_robust", "unchanged", "notes_model1", "physics_ls", "operator", "oracle",
           "oracle_last", "oracle_robust", "oracle_lagged")
ROBUST_DRAWS = RecommendConfig.robust_draws  # what `coating recommend` uses by default
SPECTRAL_WEIGHT = RecommendConfig.spectral_weight


def physics_ls_settings(meas: plant.Measurement, params: plant.PlantParams) -> np.ndarray:
    """Physics least squares: the last run's adjustable thicknesses fitted through the optics
    (nominal indices, fixed layers at the recipe), then ``recipe * setting / fitted``."""
    from scipy.optimize import least_squares

    from coating.optics.stacks import recipe_thickness
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
              grey_select=(), config: RecommendConfig | None = None, interval_scales=()):
    """Operator runs for ``fit_runs``, fit, then every method in closed loop. Returns
    (state after the whole cycle under the operator, rng, {method: [(dE_F, dE_B), ...]}, info).

    ``grey_select``: candidate grey-box overrides; with two or more, the grey box is the one of
    lowest validation loss (``fitting.fit_best``), its hyperparameters kept for every refit.
    ``config``: the command's settings for ``ours``/``ours_robust`` (default ``RecommendConfig``;
    ``robust_draws`` and ``spectral_weight`` override its fields); ``interval_scales``: also
    record each plan's intervals at these tooling scales (calibration of
    ``interval_tooling_scale``). ``info["plans"]``: per ``ours``/``ours_robust`` run, the
    plan's interval, predicted gain, care flags, runs behind the model, wall and CPU seconds of
    the call, the measured dE00, and (``measured_unchanged``) the dE00 the same run would have
    measured with the current settings kept: the realised gain, on the same draws."""
    config = dataclasses.replace(config or RecommendConfig(), spectral_weight=spectral_weight)
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
    tr, va = time_split(hist, cycle)
    t0 = time.time()
    grey = grey_m = m1 = m1_m = None
    chosen = None
    if "ours" in methods or "ours_robust" in methods:
        if len(grey_select) > 1:
            grey, i = fitting.fit_best("greybox", hp_grey, grey_select, tr, va)
            chosen = dict(grey_select[i])
        else:
            grey = fitting.fit("greybox", {**hp_grey, **(grey_select[0] if grey_select else {})}, tr, va)
        grey_m = fitting.fine_tune(grey.model, va)  # condition on the validation runs (the latest)
        registry_model = copy.deepcopy(grey.model)   # as the sweep would store it
        registry_model.registry_meta = {"n_train": len(tr), "last_run_in_cycle": int(np.max(tr.run_in_cycle))}
    if "notes_model1" in methods:
        m1 = fitting.fit("model1", hp_m1, tr, va)
        m1_m = fitting.fine_tune(m1.model, va)
    fit_s = time.time() - t0
    limits = recommend.default_limits(np.median(hist.settings, axis=0))
    n_loop = min(loop_runs, state.cycle_length - state.run_in_cycle)
    snap_state, snap_rng = state, rng.bit_generator.state
    recipe = np.array(settings_of_recipe())
    lab_std = standard.lab
    results, times, aims, specs, plans = {}, {}, {}, {}, {}
    cli_path = refit_every == 1
    for method in methods:
        st = snap_state
        r = np.random.default_rng()
        r.bit_generator.state = snap_rng
        last, cur = rows[-1], np.array(rows[-1].settings)
        last_tooling = last_state.tooling
        model = {"ours": grey_m, "ours_robust": grey_m, "notes_model1": m1_m}.get(method)
        des, aim, spec, made, recs = [], [], [], [], []
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
                nxt = recommend.recommend_settings(MachineTwin(st, params), cur, st.run_in_cycle + 1,
                                                   standard, limits, robust_draws=robust_draws,
                                                   spectral_weight=spectral_weight).settings
            elif method == "oracle_lagged":
                lagged = dataclasses.replace(st, tooling=tuple(np.array(last_tooling) * (1 + np.array(st.tooling_trend))))
                nxt = recommend.recommend_settings(MachineTwin(lagged, params, params.tooling_walk_sd), cur,
                                                   st.run_in_cycle + 1, standard, limits,
                                                   robust_draws=robust_draws, spectral_weight=spectral_weight).settings
            elif method == "physics_ls":
                nxt = _clip(physics_ls_settings(last, params), cur, limits)
            elif method in ("ours", "ours_robust") and cli_path:   # coating recommend's code path
                cfg = dataclasses.replace(config, robust_draws=robust_draws if method == "ours_robust" else 0)
                entry = {"furnace_no": "next", "cycle_id": cycle, "run_in_cycle": st.run_in_cycle + 1,
                         "date": None, "measured": None}
                t_call, c_call = time.perf_counter(), time.process_time()
                try:
                    p = planner.plan_runs([entry], schema.history_from_measurements(rows + made),
                                          {cycle: registry_model}, standard, cfg,
                                          calibration_scales=tuple(interval_scales))[0]
                    check_finite(entry["furnace_no"], p.rec)
                except Exception as e:  # noqa: BLE001 - counted as a failure (the command would stop with
                    # one line); the run is made with unchanged settings so the loop goes on
                    recs.append({"failed": f"{type(e).__name__}: {e}", "n_runs": len(rows) + len(made),
                                 "wall_s": time.perf_counter() - t_call, "cpu_s": time.process_time() - c_call,
                                 "care": [], "interval": None, "calibration": [], "predicted_lab": None})
                    p = None
                    nxt = cur
                if p is not None:
                    nxt = p.rec.settings
                    recs.append({"n_runs": p.n_runs, "wall_s": time.perf_counter() - t_call,
                                 "cpu_s": time.process_time() - c_call, "care": list(p.care),
                                 "interval": None if p.interval is None else
                                 [p.interval.median.tolist(), p.interval.lo.tolist(), p.interval.hi.tolist()],
                                 "gain": None if p.interval is None or p.interval.gain is None else
                                 [p.interval.gain.median, p.interval.gain.lo, p.interval.gain.hi,
                                  p.interval.gain.p_worse],
                                 "calibration": [[c.lo.tolist(), c.hi.tolist()] for c in p.calibration],
                                 "predicted_lab": np.asarray(p.rec.details["lab"]).tolist()})
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
            if recs and len(recs) == len(des) + 1 and recs[-1]["predicted_lab"] is not None:  # the command's path
                b = ciede2000(torch.as_tensor(recs[-1]["predicted_lab"]), lab_mean).numpy()
            elif model is not None:
                b = ciede2000(torch.as_tensor(recommend.predicted_lab(model, nxt, st.run_in_cycle + 1)),
                              lab_mean).numpy()
            aim.append((float(a[0]), float(a[1]), float(b[0]), float(b[1])))
            if recs and len(recs) == len(des) + 1:   # the command's path: the run had the settings been kept
                r_kept = np.random.default_rng()          # (the same draws: plant.step consumes them whatever the settings)
                r_kept.bit_generator.state = r.bit_generator.state
                recs[-1]["measured_unchanged"] = list(plant.delta_e00_to_standard(plant.step(st, cur, r_kept, params)[1],
                                                                                  params))
            last_tooling = st.tooling
            st, meas = plant.step(st, nxt, r, params)
            des.append(plant.delta_e00_to_standard(meas, params))
            spec.append(tuple(np.sqrt(((np.stack([meas.R_F, meas.R_B]) - std_R) ** 2).mean(-1))))
            last, cur = meas, np.array(meas.settings)
            made.append(meas)
            if recs and len(recs) == len(des):
                recs[-1]["measured"] = list(des[-1])
            elif model is not None:  # carried from run to run (refit_every != 1: not the command's path)
                model = fitting.update_cycle_model(model, schema.history_from_measurements(rows + made),
                                                  [schema.history_from_measurements([meas])],
                                                  full_refit=bool(refit_every) and len(made) % refit_every == 0)
        results[method] = des
        if recs:
            plans[method] = recs
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
            "greybox_selected": chosen, "plans": plans, "interval_scales": list(interval_scales)}
    return state, rng, results, info


def summarise(results: dict) -> dict:
    """Per method, the next-run ΔE00 of ``results`` (``{method: [(dE_F, dE_B), ...]}``): median and
    p90 over both sides and per side, mean, and the number of runs."""
    out = {}
    for method, des in results.items():
        d = np.asarray(des)                                      # (runs, 2)
        out[method] = {"median": float(np.median(d)), "p90": float(np.percentile(d, 90)),
                       "median_F": float(np.median(d[:, 0])), "median_B": float(np.median(d[:, 1])),
                       "p90_F": float(np.percentile(d[:, 0], 90)), "p90_B": float(np.percentile(d[:, 1], 90)),
                       "mean": float(d.mean()), "n_runs": int(d.shape[0])}
    return out


def targets(summary: dict) -> dict:
    """The recommender's targets from ``summarise``'s output: for ``ours`` and ``ours_robust``
    (those present), the median against physics least squares (target <= 0.75) and against
    unchanged settings (<= 0.45), and the p90 (<= 1.2); ``met`` when all three hold."""
    base = summary["physics_ls"]["median"], summary["unchanged"]["median"]
    out = {}
    for name in ("ours", "ours_robust"):
        if name not in summary:
            continue
        o = summary[name]
        out[name] = {"median_vs_physics_ls": o["median"] / base[0], "median_vs_unchanged": o["median"] / base[1],
                     "p90": o["p90"], "met": bool(o["median"] <= 0.75 * base[0] and o["median"] <= 0.45 * base[1]
                                                  and o["p90"] <= 1.2)}
    return out


def interval_summary(plans: list[dict], scales=()) -> dict:
    """From ``info["plans"]`` records of one method (all cycles): the share of measured next-run
    dE00 inside the plan's 90 % interval (``coverage``, over run-sides; ``coverage_F``/``_B``;
    ``below``/``above``: the shares under and over it), the median interval width, the share of
    plans flagged for care (``flagged``) and per flag, and with ``scales`` the coverage at each
    calibration scale. Per call: median wall and CPU seconds."""
    recs = [r for r in plans if r.get("interval") is not None and "measured" in r]
    out: dict = {"n_plans": len(plans), "failures": sum("failed" in r for r in plans)}
    if recs:
        meas = np.array([r["measured"] for r in recs])                   # (n, 2)
        lo = np.array([r["interval"][1] for r in recs])
        hi = np.array([r["interval"][2] for r in recs])
        inside = (meas >= lo) & (meas <= hi)
        out.update(coverage=float(inside.mean()), coverage_F=float(inside[:, 0].mean()),
                   coverage_B=float(inside[:, 1].mean()), below=float((meas < lo).mean()),
                   above=float((meas > hi).mean()), median_width=float(np.median(hi - lo)), n_run_sides=int(meas.size))
        cal = {}
        for k, s in enumerate(scales):
            clo = np.array([r["calibration"][k][0] for r in recs])
            chi = np.array([r["calibration"][k][1] for r in recs])
            key = s if isinstance(s, str) else ":".join(f"{float(v):g}" for v in np.atleast_1d(s))
            cal[key] = {"coverage": float(((meas >= clo) & (meas <= chi)).mean()), "below": float((meas < clo).mean()),
                        "above": float((meas > chi).mean()), "median_width": float(np.median(chi - clo))}
        if cal:
            out["coverage_by_scale"] = cal
    out.update(gain_summary(plans))
    if plans:
        out["flagged"] = float(np.mean([bool(r["care"]) for r in plans]))
        for flag in sorted({f for r in plans for f in r["care"]}):
            out[f"flagged_{flag}"] = float(np.mean([flag in r["care"] for r in plans]))
        out["call_wall_s_median"] = float(np.median([r["wall_s"] for r in plans]))
        out["call_cpu_s_median"] = float(np.median([r["cpu_s"] for r in plans]))
    return out


P_WORSE_BINS = (0.0, 0.1, 0.2, 0.3, 0.4, 0.5, 1.0)


def gain_summary(plans: list[dict]) -> dict:
    """The predicted gain against the realised one, from ``info["plans"]`` records that carry
    both (``gain``: median, lo, hi[, p_worse]; ``measured``, ``measured_unchanged``): the realised
    gain is the run's dE00 had the settings been kept minus its measured dE00, front + back, on
    the same draws.

    ``gain_coverage`` (``gain_below``, ``gain_above``): the share inside the plans' 90 % gain
    intervals; ``worse``: the share of plans that made the run worse than keeping the settings;
    ``worse_flagged`` / ``worse_unflagged``: the same among plans with and without the gain's
    care flag (``interval_wider_than_gain``), and ``gain_flagged``, the share flagged. With
    ``p_worse``: ``p_worse_mean`` against ``worse``; ``reliability``, per bin of ``P_WORSE_BINS``
    (``[lo, hi)``, the last closed) the plans, their mean ``p_worse`` and the realised share
    worse; the Brier score of ``p_worse`` (``brier``) and of the constant ``worse`` share
    (``brier_constant``, a forecast that knows the base rate but not the plan) and the skill
    ``1 - brier / brier_constant`` (> 0: ``p_worse`` tells plans apart)."""
    recs = [r for r in plans if r.get("gain") is not None and "measured" in r and "measured_unchanged" in r]
    if not recs:
        return {}
    realised = np.array([sum(r["measured_unchanged"]) - sum(r["measured"]) for r in recs])
    g = np.array([r["gain"][:3] for r in recs])                            # (n, 3): median, lo, hi
    flagged = np.array(["interval_wider_than_gain" in r["care"] for r in recs])
    worse = realised < 0
    out = {"n_gain": len(recs), "gain_coverage": float(((realised >= g[:, 1]) & (realised <= g[:, 2])).mean()),
           "gain_below": float((realised < g[:, 1]).mean()), "gain_above": float((realised > g[:, 2]).mean()),
           "gain_predicted_median": float(np.median(g[:, 0])), "gain_realised_median": float(np.median(realised)),
           "worse": float(worse.mean()), "gain_flagged": float(flagged.mean())}
    out["worse_flagged"] = float(worse[flagged].mean()) if flagged.any() else None
    out["worse_unflagged"] = float(worse[~flagged].mean()) if (~flagged).any() else None
    if all(len(r["gain"]) > 3 for r in recs):
        pw = np.array([r["gain"][3] for r in recs])
        edges = np.asarray(P_WORSE_BINS)
        which = np.clip(np.searchsorted(edges, pw, side="right") - 1, 0, len(edges) - 2)
        out["p_worse_mean"] = float(pw.mean())
        out["reliability"] = [{"bin": [float(edges[k]), float(edges[k + 1])], "n": int((which == k).sum()),
                               "p_worse": float(pw[which == k].mean()), "worse": float(worse[which == k].mean())}
                              for k in range(len(edges) - 1) if (which == k).any()]
        out["brier"] = float(((pw - worse) ** 2).mean())
        out["brier_constant"] = float(((worse.mean() - worse) ** 2).mean())
        out["brier_skill"] = 1 - out["brier"] / out["brier_constant"] if out["brier_constant"] > 0 else None
    return out


def gain_line(s: dict) -> str:
    """Lines on the predicted against the realised gain from ``gain_summary``'s keys (empty when
    ``s`` has none)."""
    if "gain_coverage" not in s:
        return ""
    pct = lambda v: "n/a" if v is None else f"{100 * v:.1f} %"  # noqa: E731
    text = (f"gain over keeping the settings ({s['n_gain']} plans, front + back, same draws): predicted median "
            f"{s['gain_predicted_median']:+.3f}, realised {s['gain_realised_median']:+.3f}; 90 % gain interval "
            f"coverage {pct(s['gain_coverage'])} (below {pct(s['gain_below'])}, above {pct(s['gain_above'])}); "
            f"worse than keeping: {pct(s['worse'])} of plans, {pct(s['worse_flagged'])} of those flagged "
            f"interval_wider_than_gain ({pct(s['gain_flagged'])} of plans), {pct(s['worse_unflagged'])} of the rest")
    if "reliability" in s:
        skill = "n/a" if s["brier_skill"] is None else f"{s['brier_skill']:+.3f}"
        text += (f"\n  chance of worse (p_worse): mean {pct(s['p_worse_mean'])} against {pct(s['worse'])} realised; "
                 f"Brier {s['brier']:.4f} against {s['brier_constant']:.4f} for the base rate (skill {skill}); by bin "
                 + ", ".join(f"[{b['bin'][0]:g}, {b['bin'][1]:g}) n {b['n']}: {100 * b['p_worse']:.0f} % predicted, "
                             f"{100 * b['worse']:.0f} % realised" for b in s["reliability"]))
    return text
