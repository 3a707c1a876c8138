"""``coating recommend``: next-run thickness settings per furnace run, and the command.

Per row of the runs file (``coating.recommend.runs_file``): the cycle's model is chosen
(``select_cycle_model``) and brought up to date with the cycle's runs, the current settings and
the run to plan are found (``plan_run``), and the optimiser (``coating.recommend.optimise_settings``: the
objective, the constraints and the method are described there) recommends the settings; the
command (``run_recommend``) writes the reports (``coating.recommend.report``) all or nothing.

The names of those modules are re-exported here, so ``coating.recommend.optimise_settings.recommend_settings``,
``Standard``, ``default_limits``, ``read_runs``, ``format_report`` and friends keep working.
"""
from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import torch

from coating.recommend.config import RecommendConfig
from coating.recommend.optimise_settings import (
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

__all__ = ["run_recommend", "select_cycle_model", "plan_run"]


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


# --- planning -----------------------------------------------------------------------------------
def _latest_cycle_rows(history, cycle_id):
    from coating.line.history_rows import select_rows
    idx = np.flatnonzero(history.cycle_id == cycle_id)
    return select_rows(history, idx[np.argsort(history.run_in_cycle[idx], kind="stable")])


def plan_run(entry, history, cycle_models: dict, standard: Standard, fine_tune: bool = True,
             bound_rel: float = RecommendConfig.bound_rel, max_step_rel: float = RecommendConfig.max_step_rel,
             n_starts: int = 4, robust_draws: int = 0, spectral_weight: float = RecommendConfig.spectral_weight,
             refit: bool = True):
    """Recommendation for one NEW.csv entry (see ``run_recommend``). Returns (cycle, Recommendation).

    The cycle model is brought up to date with the cycle's runs before planning
    (``fitting.update_cycle_model``, the rule the closed-loop benchmark runs too): ``refit``
    (grey box): fitted again, with the registry model's hyperparameters, on all of the cycle's
    runs in the history and the measured run (a smoother: every run's information, per-layer
    tooling included, is used at once); otherwise filter steps on the runs after its training
    data and on the measured run. ``fine_tune`` False: the registry model as it is (neither).
    """
    from coating.line.history_rows import concat_rows, select_rows
    from coating.models.fitting import update_cycle_model
    meas = entry["measured"]
    cycle = entry["cycle_id"]
    if cycle is not None and cycle not in cycle_models:
        raise ValueError(f"furnace_no {entry['furnace_no']}: no model for cycle {cycle} "
                         f"(models for cycles {sorted(cycle_models)})")
    if cycle is None:
        if meas is not None:
            cycle, _ = select_cycle_model(cycle_models, meas)
        else:
            cycle = int(history.cycle_id.max())
            if cycle not in cycle_models:
                raise ValueError(f"furnace_no {entry['furnace_no']}: no cycle_id given and no model for "
                                 f"the history's latest cycle {cycle}")
    model, meta = cycle_models[cycle], getattr(cycle_models[cycle], "registry_meta", {})
    rows = _latest_cycle_rows(history, cycle)
    last_seen = int(meta.get("last_run_in_cycle", 0))
    # (A measured run already in the history is used once, as the measured run.)
    others = select_rows(rows, rows.furnace_no != entry["furnace_no"]) if len(rows) else rows
    if meas is not None and entry["run_in_cycle"] is None:  # the run after the cycle's latest
        last = int(others.run_in_cycle.max()) if len(others) else last_seen
        meas = dataclasses.replace(meas, run_in_cycle=np.array([last + 1]))
    seen = others if meas is None else concat_rows(others, meas)
    if fine_tune:
        newer = select_rows(others, others.run_in_cycle > last_seen) if len(others) else others
        model = update_cycle_model(model, seen, [newer] + ([meas] if meas is not None else []), full_refit=refit)
    if meas is not None:
        current = meas.settings[0]
        run = int(meas.run_in_cycle[0]) + 1
    else:
        if not len(rows):
            raise ValueError(f"furnace_no {entry['furnace_no']}: cycle {cycle} has no runs in the "
                             f"history and the row carries no measurement: no current settings")
        current = rows.settings[-1]
        run = entry["run_in_cycle"] or int(rows.run_in_cycle[-1]) + 1
    ref = np.median(rows.settings, axis=0) if len(rows) else current
    limits = default_limits(ref, bound_rel, max_step_rel)
    if robust_draws and getattr(model, "kind", None) != "greybox":
        robust_draws = 0                     # model1 has no noise model: nominal design
    return cycle, recommend_settings(model, current, run, standard, limits, n_starts=n_starts,
                                     robust_draws=robust_draws, spectral_weight=spectral_weight)


# --- the command ---------------------------------------------------------------------------------
def run_recommend(history_path, runs_path, standard_path, models_dir, out, kind: str = "greybox",
                  config: RecommendConfig = RecommendConfig()) -> int:
    """``coating recommend``: read everything, plan every NEW.csv row, write the outputs.

    For a row with a measurement (a run just made): the given cycle, or the cycle model with the
    lowest loss on it; the current settings are the run's. Otherwise: the given cycle (or the
    history's latest); the current settings are the cycle's latest run's. The grey box is then
    fitted again on all of the cycle's runs in the history and the measured run, with the
    registry model's hyperparameters (``plan_run``; ``config.refit`` False: filter steps instead,
    i.e. fine-tuning on the runs after its training data and on the measured run;
    ``config.fine_tune`` False: the registry model as it is). ``config``: built by the CLI from
    its flags (``coating.cli.main.recommend_config``).

    Output, all or nothing: ``OUT/<furnace_no>.txt`` per row and ``OUT/recommendations.csv``,
    written into a temporary folder beside ``OUT`` and swapped in only when every row was
    planned (``sevi.io.atomic.atomic_folder``); if any row fails, ``OUT`` is left as it was.
    Refused before any planning: duplicate furnace numbers, two furnace numbers with one report
    file name, an ``OUT`` holding files this command did not write.
    """
    torch.set_num_threads(max(1, min(2, torch.get_num_threads())))
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
        raise ValueError(f"{models_dir}: no {kind} models in the registry")
    if config.robust_draws and kind != "greybox":
        print(f"coating recommend: --robust {config.robust_draws} ignored: {kind} has no noise model "
              f"(nominal design)")
    files, table = {}, []
    for e in entries:
        cycle, rec = plan_run(e, history, cycle_models, standard, fine_tune=config.fine_tune,
                              refit=config.refit, bound_rel=config.bound_rel, max_step_rel=config.max_step_rel,
                              robust_draws=config.robust_draws, spectral_weight=config.spectral_weight)
        check_finite(e["furnace_no"], rec)
        files[names[e["furnace_no"]]] = format_report(e["furnace_no"], cycle, rec, kind).encode("utf-8")
        table.append((e["furnace_no"], rec))
        print(f"{e['furnace_no']}: cycle {cycle}, predicted dE00 F {rec.dE00[0]:.3f} B {rec.dE00[1]:.3f}")
    files[TABLE_NAME] = format_table(table).encode("utf-8")
    atomic_folder(out, files)
    print(f"wrote {len(entries)} recommendation(s) to {out}")
    return 0
