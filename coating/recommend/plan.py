"""``coating recommend``: next-run thickness settings per furnace run, and the command.

Per row of the runs file (``coating.recommend.runs_file``): the cycle's model is chosen
(``select_cycle_model``) and brought up to date with the cycle's runs, the current settings and
the run to plan are found, and the optimiser (``coating.recommend.optimise_settings``: the
objective, the constraints and the method are described there) recommends the settings; how sure
the recommendation is (the next run's dE00 with a 90 % interval, and the reasons to treat it
with care) comes from ``coating.recommend.uncertainty``. The command (``run_recommend``) writes
the reports (``coating.recommend.report``) all or nothing.

**A day's runs at once** (``plan_runs``): every row is resolved and checked first (a cycle
without a model, a cycle with fewer runs than the model needs: refused before any fit). Rows
whose model update is the same (the same cycle and the same runs behind it: every planned row
of a cycle without a measurement of its own) share **one** update (for the grey box, one refit),
and the updates, then the rows' optimisations, run side by side in up to ``workers`` processes
(``executor="threads"`` for threads; processes were the faster beside other CPU-bound work,
BENCHMARKS.md, "Busy machine"). Each row's plan is the same as if it were planned alone.
``plan_run`` plans one row; the closed-loop benchmark (``coating.recommend.closed_loop``)
plans through ``plan_runs`` as the command does.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from coating.recommend.config import RecommendConfig
from coating.recommend.optimise_settings import (
    Recommendation,
    Standard,
    default_limits,
    recommend_settings,
)
from coating.recommend.report import (
    TABLE_NAME,
    check_finite,
    check_out_folder,
    format_report,
    format_table,
    report_file_names,
)
from coating.recommend.runs_file import read_runs
from coating.recommend.uncertainty import Interval, care_flags, predict_interval
from sevi.runtime.errors import InputError, InputWarning

__all__ = ["MIN_REFIT_RUNS", "EXECUTORS", "Plan", "run_recommend", "select_cycle_model", "plan_run", "plan_runs"]

MIN_REFIT_RUNS = 2          # the grey box's refit needs two runs of the cycle (coating.models.fitting.fit)
EXECUTORS = ("processes", "threads")


# --- model choice ------------------------------------------------------------------------------
def select_cycle_model(models: dict, run_rows) -> tuple[int, float]:
    """The cycle whose model has the lowest curve loss (MSE, %^2) on measured ``run_rows``;
    ``models``: cycle_id -> model. Returns (cycle_id, loss)."""
    from coating.models.fitting import run_loss
    if not models:
        raise ValueError("no cycle models to choose from")
    losses = {c: float(run_loss(m, run_rows).mean()) for c, m in models.items()}
    c = min(losses, key=losses.get)
    return c, losses[c]


@dataclass(frozen=True)
class Plan:
    """One row's plan: ``cycle``, the ``rec``ommendation, the next run's dE00 ``interval``
    (None for a model without a noise model), the ``care`` flags (keys of
    ``uncertainty.CARE_TEXT``) and ``n_runs``, the cycle's runs behind the model."""
    furnace_no: str
    cycle: int
    rec: Recommendation
    interval: Interval | None
    care: tuple[str, ...]
    n_runs: int
    calibration: tuple = ()     # intervals at plan_runs' calibration_scales (the closed loop's calibration)


# --- planning -----------------------------------------------------------------------------------
def _latest_cycle_rows(history, cycle_id):
    from coating.line.history_rows import select_rows
    idx = np.flatnonzero(history.cycle_id == cycle_id)
    return select_rows(history, idx[np.argsort(history.run_in_cycle[idx], kind="stable")])


@dataclass(frozen=True)
class _Row:
    """A runs-file row resolved against the history and the models (no fitting yet)."""
    furnace_no: str
    cycle: int
    seen: object            # History: the cycle's runs the model is brought up to date on
    batches: tuple          # Histories the model has not seen, oldest first (filter steps)
    current: np.ndarray
    run: int
    limits: object
    update_key: tuple


def _resolve(entry, history, cycle_models: dict, config: RecommendConfig, where: str) -> _Row:
    """Everything about a row that needs no fit, and every check that can refuse it."""
    from coating.line.history_rows import concat_rows, select_rows
    meas = entry["measured"]
    cycle = entry["cycle_id"]
    fno = entry["furnace_no"]
    if cycle is not None and cycle not in cycle_models:
        raise InputError(f"furnace_no {fno}: no model for cycle {cycle} (models for cycles {sorted(cycle_models)}); "
                         f"expected a cycle with a model (python -m ray_jobs.coating_tune fits one)")
    if cycle is None:
        if meas is not None:
            cycle, _ = select_cycle_model(cycle_models, meas)
        else:
            cycle = int(history.cycle_id.max())
            if cycle not in cycle_models:
                raise InputError(f"furnace_no {fno}: no cycle_id given and no model for the history's latest "
                                 f"cycle {cycle} (models for cycles {sorted(cycle_models)})")
    model, meta = cycle_models[cycle], getattr(cycle_models[cycle], "registry_meta", {})
    rows = _latest_cycle_rows(history, cycle)
    last_seen = int(meta.get("last_run_in_cycle", 0))
    # (A measured run already in the history is used once, as the measured run.)
    others = select_rows(rows, rows.furnace_no != fno) if len(rows) else rows
    if meas is not None and entry["run_in_cycle"] is None:  # the run after the cycle's latest
        last = int(others.run_in_cycle.max()) if len(others) else last_seen
        meas = dataclasses.replace(meas, run_in_cycle=np.array([last + 1]))
    seen = others if meas is None else concat_rows(others, meas)
    refit = config.fine_tune and config.refit and getattr(model, "kind", None) == "greybox"
    if refit:
        if len(seen) < MIN_REFIT_RUNS:
            raise InputError(f"{where}: cycle {cycle} has {len(seen)} run(s)"
                             + (" with the measured run" if meas is not None else "")
                             + f" (furnace_no {fno}); the grey box's refit needs at least {MIN_REFIT_RUNS}: "
                             f"expected the cycle's runs so far (or plan with --no-refit)")
        n_train = int(meta.get("n_train", 0))
        if len(others) < n_train:
            raise InputError(f"{where}: cycle {cycle} has {len(others)} run(s), fewer than the {n_train} its model "
                             f"was fitted on (furnace_no {fno}); expected the cycle's runs so far: a refit on "
                             f"fewer would forget what the model knew (or plan with --no-refit)")
    if meas is not None:
        current = np.asarray(meas.settings[0], dtype=float)
        run = int(meas.run_in_cycle[0]) + 1
    else:
        if not len(rows):
            raise InputError(f"furnace_no {fno}: cycle {cycle} has no runs in the history and the row "
                             f"carries no measurement: no current settings")
        current = np.asarray(rows.settings[-1], dtype=float)
        run = entry["run_in_cycle"] or int(rows.run_in_cycle[-1]) + 1
    ref = np.median(rows.settings, axis=0) if len(rows) else current
    limits = default_limits(ref, config.bound_rel, config.max_step_rel)
    newer = select_rows(others, others.run_in_cycle > last_seen) if len(others) else others
    batches = (newer,) + ((meas,) if meas is not None else ())
    key = (cycle, tuple(seen.furnace_no), tuple(int(r) for r in seen.run_in_cycle),
           tuple(tuple(b.furnace_no) for b in batches))
    return _Row(fno, cycle, seen, batches, current, run, limits, key)


def _update_job(model, seen, batches, config: RecommendConfig):
    """The cycle model brought up to date (``fitting.update_cycle_model``; the registry model as
    it is when ``config.fine_tune`` is False)."""
    from coating.models.fitting import update_cycle_model
    if not config.fine_tune:
        return model
    return update_cycle_model(model, seen, list(batches), full_refit=config.refit)


def _plan_job(model, row: _Row, standard: Standard, config: RecommendConfig, n_starts: int,
              calibration_scales: tuple = ()) -> Plan:
    """Optimise one row's settings on its updated model; the interval and the care flags."""
    grey = getattr(model, "kind", None) == "greybox"
    rec = recommend_settings(model, row.current, row.run, standard, row.limits, n_starts=n_starts,
                             robust_draws=config.robust_draws if grey else 0,  # model1: nominal design
                             spectral_weight=config.spectral_weight)
    steps = row.run - int(row.seen.run_in_cycle.max()) if len(row.seen) else 1
    z_pool = None
    if grey and config.interval_z == "cycle" and len(row.seen):
        import torch
        z_pool = model.z_of(torch.as_tensor(np.asarray(row.seen.std, dtype=np.float64))).numpy()
    interval = predict_interval(model, rec.settings, row.run, standard, config.interval_tooling_scale,
                                draws=config.interval_draws, steps=steps, layer_scale=config.interval_layer_scale,
                                z_pool=z_pool, noise_scale=config.interval_noise_scale,
                                lower_factor=config.interval_lower_factor, current=row.current) if grey else None
    care = care_flags(rec, interval, len(row.seen), row.seen.settings, config.care_min_runs, steps)
    calibration = tuple(predict_interval(model, rec.settings, row.run, standard, list(calibration_scales),
                                         draws=config.interval_draws, steps=steps, z_pool=z_pool,
                                         lower_factor=config.interval_lower_factor) or ()) \
        if grey and calibration_scales else ()
    return Plan(row.furnace_no, row.cycle, rec, interval, care, len(row.seen), calibration)


def _call(job):
    fn, args = job
    return fn(*args)


def _worker_init():
    import torch
    torch.set_num_threads(1)   # small work: one intra-op thread per worker (sevi.runtime.threads)


def _run_all(jobs: list, workers: int, executor: str, pool=None) -> list:
    """``[fn(*args) for fn, args in jobs]``, in order, side by side in up to ``workers``."""
    if workers <= 1 or len(jobs) <= 1:
        return [_call(j) for j in jobs]
    if executor == "threads":
        from concurrent.futures import ThreadPoolExecutor
        with ThreadPoolExecutor(min(workers, len(jobs))) as ex:
            return list(ex.map(_call, jobs))
    return list(pool.map(_call, jobs))


def plan_runs(entries, history, cycle_models: dict, standard: Standard, config: RecommendConfig = RecommendConfig(),
              n_starts: int = 4, workers: int = 1, executor: str = "processes", where: str = "the history",
              calibration_scales: tuple = ()) -> list[Plan]:
    """Plans for the runs-file ``entries`` (see the module docstring), in their order.

    ``workers``: updates and optimisations side by side (1: in this process, one after the
    other; the plans are the same either way). ``where``: the history's name in messages.
    ``calibration_scales``: each plan also carries its intervals at these tooling scales
    (numbers or ``(common[, layer[, noise]])`` tuples; ``Plan.calibration``): how the closed loop
    calibrates ``interval_tooling_scale``, ``interval_layer_scale`` and ``interval_noise_scale``."""
    if executor not in EXECUTORS:
        raise ValueError(f"executor {executor!r}; expected one of {EXECUTORS}")
    rows = [_resolve(e, history, cycle_models, config, where) for e in entries]   # every check first
    groups: dict[tuple, list[int]] = {}
    for i, r in enumerate(rows):
        groups.setdefault(r.update_key, []).append(i)
    update_jobs = [(_update_job, (cycle_models[rows[ix[0]].cycle], rows[ix[0]].seen, rows[ix[0]].batches, config))
                   for ix in groups.values()]
    pool = None
    try:
        if executor == "processes" and workers > 1 and max(len(update_jobs), len(rows)) > 1:
            import multiprocessing as mp
            from concurrent.futures import ProcessPoolExecutor
            if len(update_jobs) > 1 and config.fine_tune:
                import torch._dynamo  # noqa: F401  (torch.optim imports it on first use: once here, not per worker)
            ctx = mp.get_context("fork" if "fork" in mp.get_all_start_methods() else "spawn")
            pool = ProcessPoolExecutor(min(workers, max(len(update_jobs), len(rows))), mp_context=ctx,
                                       initializer=_worker_init)
        models = _run_all(update_jobs, workers, executor, pool)
        model_of = {}
        for m, ix in zip(models, groups.values()):
            for i in ix:
                model_of[i] = m
        plan_jobs = [(_plan_job, (model_of[i], r, standard, config, n_starts, tuple(calibration_scales)))
                     for i, r in enumerate(rows)]
        return _run_all(plan_jobs, workers, executor, pool)
    finally:
        if pool is not None:
            pool.shutdown(cancel_futures=True)


def plan_run(entry, history, cycle_models: dict, standard: Standard, fine_tune: bool = True,
             bound_rel: float = RecommendConfig.bound_rel, max_step_rel: float = RecommendConfig.max_step_rel,
             n_starts: int = 4, robust_draws: int = 0, spectral_weight: float = RecommendConfig.spectral_weight,
             refit: bool = True):
    """Recommendation for one NEW.csv entry (``plan_runs`` with one row). Returns (cycle,
    Recommendation).

    The cycle model is brought up to date with the cycle's runs before planning
    (``fitting.update_cycle_model``, the rule the closed-loop benchmark runs too): ``refit``
    (grey box): fitted again, with the registry model's hyperparameters, on all of the cycle's
    runs in the history and the measured run (a smoother: every run's information, per-layer
    tooling included, is used at once); otherwise filter steps on the runs after its training
    data and on the measured run. ``fine_tune`` False: the registry model as it is (neither).
    """
    config = RecommendConfig(robust_draws=robust_draws, spectral_weight=spectral_weight, bound_rel=bound_rel,
                             max_step_rel=max_step_rel, fine_tune=fine_tune, refit=refit, interval_draws=0)
    p = plan_runs([entry], history, cycle_models, standard, config, n_starts=n_starts)[0]
    return p.cycle, p.rec


# --- the command ---------------------------------------------------------------------------------
def run_recommend(history_path, runs_path, standard_path, models_dir, out, kind: str = "greybox",
                  config: RecommendConfig = RecommendConfig(), workers: int = 1,
                  executor: str = "processes") -> list[Plan]:
    """``coating recommend``: read everything, plan every NEW.csv row, write the outputs; returns
    the plans (the command prints them).

    For a row with a measurement (a run just made): the given cycle, or the cycle model with the
    lowest loss on it; the current settings are the run's. Otherwise: the given cycle (or the
    history's latest); the current settings are the cycle's latest run's. The grey box is then
    fitted again on all of the cycle's runs in the history and the measured run, with the
    registry model's hyperparameters (``config.refit`` False: filter steps instead, i.e.
    fine-tuning on the runs after its training data and on the measured run;
    ``config.fine_tune`` False: the registry model as it is). ``config``: built by the CLI from
    its flags (``coating.cli.main.recommend_config``). ``workers``, ``executor``: ``plan_runs``.

    Output, all or nothing: ``OUT/<furnace_no>.txt`` per row and ``OUT/recommendations.csv``,
    written into a temporary folder beside ``OUT`` and swapped in only when every row was
    planned (``sevi.io.atomic.atomic_folder``); if any row fails, ``OUT`` is left as it was.
    Refused before any planning: duplicate furnace numbers, two furnace numbers with one report
    file name, an ``OUT`` holding files this command did not write, a row naming a cycle without
    a model, a cycle with fewer runs than its model needs.
    """
    import warnings

    from coating.line import schema
    from coating.models import registry
    from sevi.io.atomic import atomic_folder
    out = Path(out)
    check_out_folder(out)
    history = schema.read_history(history_path)
    std = schema.read_standard(standard_path)
    standard = Standard.from_curves(std.R_F, std.R_B)
    entries = read_runs(runs_path)
    names = report_file_names([e["furnace_no"] for e in entries], runs_path)
    cycle_models = registry.load_all(models_dir, kind, history=history)
    if not cycle_models:
        raise InputError(f"{models_dir}: no {kind} models in the registry")
    if config.robust_draws and kind != "greybox":
        warnings.warn(f"--robust {config.robust_draws} ignored: {kind} has no noise model (nominal design)",
                      InputWarning)
    plans = plan_runs(entries, history, cycle_models, standard, config, workers=workers, executor=executor,
                      where=str(history_path))
    files = {}
    for p in plans:
        check_finite(p.furnace_no, p.rec)
        files[names[p.furnace_no]] = format_report(p.furnace_no, p.cycle, p.rec, kind, p.interval, p.care,
                                                   p.n_runs).encode("utf-8")
    files[TABLE_NAME] = format_table([(p.furnace_no, p.rec, p.interval, p.care) for p in plans]).encode("utf-8")
    atomic_folder(out, files)
    return plans
