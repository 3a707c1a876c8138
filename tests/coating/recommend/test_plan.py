"""Recommendations: bounds, step limits, front/back consistency, lower dE00, the CLI's files."""
import argparse
import copy
import math

import numpy as np
import pytest
import torch

from coating.cli import main as cli
from coating.line import history_rows, plant, schema
from coating.models import fit_cycles, fitting
from coating.optics import colour
from coating.recommend import optimise_settings, plan

P = plant.PlantParams()


@pytest.fixture(scope="module")
def setup(operator_runs):
    state, rng, runs, std = operator_runs(21, 22, 16, P)
    hist = schema.history_from_measurements(runs)
    tr, va = history_rows.time_split(hist, 1)
    grey = fitting.fine_tune(fitting.fit("greybox", {"epochs": 3, "inner_steps": 10, "width": 0}, tr, va).model, va)
    return {"state": state, "rng": rng, "hist": hist, "grey": grey, "runs": runs,
            "standard": optimise_settings.Standard.from_curves(std[0], std[1])}


def _check(rec, limits):
    x, x0 = rec.settings, rec.current
    assert np.all(x >= limits.lower - 1e-9) and np.all(x <= limits.upper + 1e-9), "bounds"
    assert np.all(np.abs(x - x0) <= limits.max_step_nm + 1e-9), "step limit"
    d = x - x0
    assert np.all(d[:5] * d[5:] >= -1e-12), f"front/back changes with opposite signs: {d}"
    assert np.allclose(np.round(d / 0.01), d / 0.01, atol=1e-6), "changes on the 0.01 nm grid"


def test_limits_and_consistency_hold_even_when_tight(setup):
    cur = np.array(setup["runs"][-1].settings)
    for step_rel, bound_rel in ((0.03, 0.15), (0.005, 0.15), (0.03, 0.004)):
        limits = optimise_settings.default_limits(np.median(setup["hist"].settings, 0), bound_rel, step_rel)
        rec = optimise_settings.recommend_settings(setup["grey"], cur, 17, setup["standard"], limits)
        _check(rec, limits)
    # A current setting outside the bounds moves toward them by at most a step.
    limits = optimise_settings.default_limits(cur * 1.1, 0.02, 0.01)
    rec = optimise_settings.recommend_settings(setup["grey"], cur, 17, setup["standard"], limits)
    assert np.all(rec.settings > cur) and np.all(np.abs(rec.change) <= limits.max_step_nm + 1e-9)


def test_the_optimiser_lowers_dE00_on_a_simulated_run(setup):
    cur = np.array(setup["runs"][-1].settings)
    limits = optimise_settings.default_limits(np.median(setup["hist"].settings, 0))
    rec = optimise_settings.recommend_settings(setup["grey"], cur, 17, setup["standard"], limits)
    assert rec.dE00.sum() < rec.dE00_current.sum()
    # On the plant, with the same random draws, the recommended settings beat unchanged ones
    # on average over a few draws of the next run.
    got = []
    for seed in range(6):
        de = []
        for s in (cur, rec.settings):
            _, m = plant.step(setup["state"], s, np.random.default_rng(seed), P)
            de.append(sum(plant.delta_e00_to_standard(m, P)))
        got.append(de)
    got = np.array(got)
    assert got[:, 1].mean() < got[:, 0].mean(), got


def test_model_choice_picks_the_cycle_that_fits_the_run(setup):
    g = setup["grey"]
    other = fitting.fine_tune(g, history_rows.select_rows(setup["hist"], [0]))
    with torch.no_grad():
        other.log_tool += 0.03  # a cycle calibrated 3 % differently
    run = history_rows.select_rows(setup["hist"], [15])
    cycle, _ = plan.select_cycle_model({1: g, 2: other}, run)
    assert cycle == 1


def test_cli_writes_the_files_atomically(setup, tmp_path, monkeypatch):
    hist = setup["hist"]
    schema.write_history(hist, tmp_path / "H.csv")
    R = plant.standard_reflectance(P)
    schema.write_standard(schema.Standard(schema.WAVELENGTHS_NM.astype(float), R[0], R[1]), tmp_path / "STD.csv")
    fit_cycles.fit_all(hist, tmp_path / "models", kinds=("greybox",), log=lambda s: None,
                       hparams={"greybox": {"epochs": 2, "inner_steps": 8, "width": 0}})
    # One planned run (no measurement) and one just measured (full row, no cycle given).
    cols = hist.columns()
    head = ["furnace_no", "cycle_id"]
    lines = [",".join(schema.COLUMNS), ]
    meas = ",".join(str(cols[c][-1]) if c not in ("furnace_no",) else "NEW2" for c in schema.COLUMNS)
    (tmp_path / "NEW.csv").write_text(",".join(head) + "\nNEW1,1\n")
    (tmp_path / "NEW_meas.csv").write_text(lines[0] + "\n" + meas + "\n")
    ap = argparse.ArgumentParser()
    sub = ap.add_subparsers(dest="command")
    cli.add_recommend_parser(sub)
    for new, fno in (("NEW.csv", "NEW1"), ("NEW_meas.csv", "NEW2")):
        out = tmp_path / f"out_{fno}"
        args = ap.parse_args(["recommend", "--history", str(tmp_path / "H.csv"), "--runs", str(tmp_path / new),
                              "--standard", str(tmp_path / "STD.csv"), "--models", str(tmp_path / "models"),
                              "--out", str(out)])
        assert args.func(args) == 0
        text = (out / f"{fno}.txt").read_text()
        assert "predicted dE00 front" in text and "F1" in text and "B5" in text
        assert "90 % interval" in text and "treat with care: " in text
        csv = (out / "recommendations.csv").read_text().splitlines()
        assert csv[0] == "furnace_no," + ",".join(schema.SET_COLS) + ",dE00_F,dE00_B," + \
            "next_dE00_F,next_dE00_F_lo,next_dE00_F_hi,next_dE00_B,next_dE00_B_lo,next_dE00_B_hi,care," + \
            "gain,gain_lo,gain_hi,p_worse"
        row = csv[1].split(",")
        assert row[0] == fno and len(row) == 24
        nxt = np.array(row[13:19], dtype=float).reshape(2, 3)          # (side, [median, lo, hi])
        assert np.all(nxt[:, 1] <= nxt[:, 0]) and np.all(nxt[:, 0] <= nxt[:, 2])
        assert "few_runs" in row[19]                                    # a 16-run cycle
        new_s = np.array(row[1:11], dtype=float)
        d = new_s - hist.settings[-1]
        assert np.all(d[:5] * d[5:] >= -1e-9)
        assert sorted(p.name for p in out.iterdir()) == sorted([f"{fno}.txt", "recommendations.csv"])
        assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")], "temporary folders left"


def test_model2_cannot_recommend(setup):
    tr, va = history_rows.time_split(setup["hist"], 1)
    m2 = fitting.fit("model2", {"epochs": 5}, tr, va).model
    limits = optimise_settings.default_limits(setup["hist"].settings[-1])
    with pytest.raises(ValueError, match="model2"):
        optimise_settings.recommend_settings(m2, setup["hist"].settings[-1], 17, setup["standard"], limits)


def test_grey_box_noise_draws_and_predictions_under_them(setup):
    grey = setup["grey"]
    z, u, dlog = grey.noise_draws(4000, seed=3)
    assert z.shape == (4000, 14) and u.shape == (4000, 2)
    assert torch.allclose(z.std(0), grey.z_sd, rtol=0.08) and float(grey.z_sd.min()) > 0
    assert abs(float(u.std()) / grey.hparams["run_scale_sd"] - 1) < 0.08
    # Antithetic: the second half is the first negated, so each error's sample mean is 0 exactly.
    assert torch.equal(z[2000:], -z[:2000]) and torch.equal(u[2000:], -u[:2000])
    assert float(z.mean(0).abs().max()) < 1e-15 and float(u.mean(0).abs().max()) < 1e-15
    z7, u7, d7 = grey.noise_draws(7, seed=3)
    assert z7.shape == (7, 14) and torch.equal(z7[4:], -z7[:3])
    # With zero errors, the draws reproduce the plain prediction of a run to plan.
    x = torch.as_tensor(np.array([setup["runs"][-1].settings, setup["runs"][-2].settings]))
    p0 = grey.predict(x)
    pd = grey.predict_draws(x, torch.zeros(3, 14, dtype=torch.float64), torch.zeros(3, 2, dtype=torch.float64))
    assert pd.R.shape == (2, 3, 2, 81) and pd.lab.shape == (2, 3, 2, 3)
    assert torch.allclose(pd.R[:, 1], p0.R, atol=1e-10) and torch.allclose(pd.lab[:, 2], p0.lab, atol=1e-10)


def test_tooling_uncertainty_draws_scale_the_settings(setup):
    """``plan_walk_sd``/``plan_tooling_sd`` draw log-tooling errors (common + per layer) that act
    on the planned settings exactly as a change of tooling would; zero sds give zero draws."""
    grey = copy.deepcopy(setup["grey"])
    assert float(grey.noise_draws(50, seed=1)[2].abs().max()) == 0.0
    grey.hparams.update(plan_walk_sd=2e-3, plan_tooling_sd=3e-3)
    z, u, dlog = grey.noise_draws(6000, seed=4)
    assert dlog.shape == (6000, 10)
    common = dlog.mean(1)                       # common part + mean of 10 per-layer parts
    assert abs(float(common.std()) / math.sqrt(2e-3 ** 2 + 3e-3 ** 2 / 10) - 1) < 0.06
    assert abs(float((dlog - common[:, None]).std()) / (3e-3 * math.sqrt(0.9)) - 1) < 0.06
    x = torch.as_tensor(np.array([setup["runs"][-1].settings]))
    zero = torch.zeros(2, 14, dtype=torch.float64), torch.zeros(2, 2, dtype=torch.float64)
    d = torch.tensor([[0.0] * 10, [0.004] * 5 + [-0.002] * 5], dtype=torch.float64)
    with torch.no_grad():
        pd = grey.predict_draws(x, *zero, d)
        scaled = grey.predict(x * torch.exp(d[1:]))
    assert torch.allclose(pd.R[0, 1], scaled.R[0], atol=1e-10)
    assert torch.allclose(pd.R[0, 0], grey.predict(x).R[0], atol=1e-10)
    assert not torch.allclose(pd.R[0, 0], pd.R[0, 1], atol=1e-4)


def test_spectral_weight_trades_curve_distance_for_colour(setup):
    grey, std = setup["grey"], setup["standard"]
    cur = np.array(setup["runs"][-1].settings)
    limits = optimise_settings.default_limits(np.median(setup["hist"].settings, 0))
    colour = optimise_settings.recommend_settings(grey, cur, 17, std, limits, spectral_weight=0.0)
    curve = optimise_settings.recommend_settings(grey, cur, 17, std, limits, spectral_weight=50.0)
    _check(colour, limits)
    _check(curve, limits)
    assert colour.dE00.sum() < curve.dE00.sum() - 1e-3
    assert curve.rms_R.sum() < colour.rms_R.sum() - 1e-4
    args = cli.build_parser().parse_args(["recommend", "--history", "h", "--runs", "r", "--standard", "s",
                                          "--models", "m", "--out", "o", "--spectral-weight", "0.01"])
    assert args.spectral_weight == 0.01


def test_robust_design_keeps_the_limits_and_lowers_the_expected_error(setup):
    grey, std = setup["grey"], setup["standard"]
    cur = np.array(setup["runs"][-1].settings)
    limits = optimise_settings.default_limits(np.median(setup["hist"].settings, 0))
    nominal = optimise_settings.recommend_settings(grey, cur, 17, std, limits)
    robust = optimise_settings.recommend_settings(grey, cur, 17, std, limits, robust_draws=24)
    _check(robust, limits)
    # Judged on fresh draws of the model's own noise, the robust settings have the lower
    # expected dE00^2 (what they optimise); the nominal ones the lower planned dE00.
    z, u, dlog = grey.noise_draws(400, seed=99)

    def expected(x):
        with torch.no_grad():
            p = grey.predict_draws(torch.as_tensor(x)[None], z, u, dlog, torch.tensor([17.0], dtype=torch.float64))
        return float((colour.ciede2000(p.lab, std.lab) ** 2).mean(1).sum())
    assert expected(robust.settings) <= expected(nominal.settings) + 1e-6
    assert nominal.dE00.sum() <= robust.dE00.sum() + 1e-3
    with pytest.raises(ValueError, match="noise model"):
        m1 = fitting.fit("model1", {"epochs": 2}, *history_rows.time_split(setup["hist"], 1)).model
        optimise_settings.recommend_settings(m1, cur, 17, std, limits, robust_draws=4)


def test_refit_is_a_fresh_fit_on_all_the_rows_with_the_models_own_hyperparameters(setup):
    hist = setup["hist"]
    tr, va = history_rows.time_split(hist, 1)
    hp = {"epochs": 2, "inner_steps": 8, "width": 0, "walk_sd": 2e-3}
    grey = fitting.fit("greybox", hp, tr, va).model
    again = fitting.refit(grey, hist)
    assert again.hparams == grey.hparams and again.u.shape == (len(hist), 2)
    fresh = fitting.fit("greybox", grey.hparams, hist, None).model
    x = torch.as_tensor(hist.settings[-2:])
    with torch.no_grad():
        assert torch.allclose(again.predict(x).R, fresh.predict(x).R, atol=1e-12)
        assert not torch.allclose(again.predict(x).R, grey.predict(x).R, atol=1e-6)


def test_plan_run_refits_the_grey_box_on_the_cycles_runs_and_the_measured_run(setup, monkeypatch):
    import dataclasses
    hist = setup["hist"]
    tr, va = history_rows.time_split(hist, 1)
    grey = fitting.fit("greybox", {"epochs": 2, "inner_steps": 8, "width": 0}, tr, va).model
    seen, tuned = [], []
    real_refit, real_ft = fitting.refit, fitting.fine_tune
    # update_cycle_model (the rule coating recommend and the closed loop share) calls these.
    monkeypatch.setattr(fitting, "refit", lambda m, rows: seen.append(rows) or real_refit(m, rows))
    monkeypatch.setattr(fitting, "fine_tune", lambda m, rows: tuned.append(rows) or real_ft(m, rows))
    meas = history_rows.select_rows(hist, [len(hist) - 1])
    meas = dataclasses.replace(meas, furnace_no=np.array(["NEW"], dtype=object), run_in_cycle=np.array([1]))
    entry = {"furnace_no": "NEW", "cycle_id": 1, "run_in_cycle": None, "date": None, "measured": meas}
    cycle, rec = plan.plan_run(entry, hist, {1: grey}, setup["standard"], n_starts=2)
    assert cycle == 1 and len(seen) == 1 and not tuned
    rows = seen[0]
    assert len(rows) == len(hist) + 1 and list(rows.furnace_no[:-1]) == list(hist.furnace_no)
    # The measured run (no run_in_cycle given) is the run after the cycle's latest, and the plan
    # is for the run after it.
    assert rows.run_in_cycle[-1] == hist.run_in_cycle.max() + 1
    assert np.allclose(rec.current, hist.settings[-1])
    # --no-refit: filter steps on the runs after the model's training data and on the measured run.
    seen.clear()
    grey.registry_meta = {"last_run_in_cycle": int(tr.run_in_cycle.max())}
    plan.plan_run(entry, hist, {1: grey}, setup["standard"], n_starts=2, refit=False)
    assert not seen and [len(r) for r in tuned] == [len(va), 1]
    # --no-fine-tune: the registry model as it is, neither refitted nor fine-tuned.
    tuned.clear()
    plan.plan_run(entry, hist, {1: grey}, setup["standard"], n_starts=2, fine_tune=False)
    assert not seen and not tuned


# --- a day's runs at once (plan_runs) -----------------------------------------------------------
def _day(setup, n_planned=3):
    """A one-cycle registry model with registry metadata, the history and a day's entries:
    ``n_planned`` planned runs (no measurement) and one just-measured run."""
    import dataclasses
    hist = setup["hist"]
    tr, va = history_rows.time_split(hist, 1)
    grey = fitting.fit("greybox", {"epochs": 2, "inner_steps": 6, "width": 0}, tr, va).model
    grey.registry_meta = {"last_run_in_cycle": int(tr.run_in_cycle.max()), "n_train": len(tr)}
    last = int(hist.run_in_cycle.max())
    entries = [{"furnace_no": f"P{i}", "cycle_id": 1, "run_in_cycle": last + 1 + i, "date": None, "measured": None}
               for i in range(n_planned)]
    meas = history_rows.select_rows(hist, [len(hist) - 1])
    meas = dataclasses.replace(meas, furnace_no=np.array(["M"], dtype=object))
    entries.append({"furnace_no": "M", "cycle_id": 1, "run_in_cycle": None, "date": None, "measured": meas})
    return grey, entries


FAST_PLAN = dict(robust_draws=4, interval_draws=32)


def test_a_days_runs_share_one_refit_per_update_and_plan_as_if_alone(setup, monkeypatch):
    from coating.recommend.config import RecommendConfig
    grey, entries = _day(setup)
    config = RecommendConfig(**FAST_PLAN)
    calls = []
    real = fitting.refit
    monkeypatch.setattr(fitting, "refit", lambda m, rows: calls.append(len(rows)) or real(m, rows))
    together = plan.plan_runs(entries, setup["hist"], {1: grey}, setup["standard"], config, n_starts=2)
    # The three planned rows share one refit on the cycle's 16 runs; the measured row has its own
    # (the cycle's runs and the measured one).
    assert sorted(calls) == [len(setup["hist"]), len(setup["hist"]) + 1]
    assert [p.furnace_no for p in together] == [e["furnace_no"] for e in entries]
    calls.clear()
    for e, p in zip(entries, together):   # the reference: each row planned alone
        alone = plan.plan_runs([e], setup["hist"], {1: grey}, setup["standard"], config, n_starts=2)[0]
        assert np.array_equal(alone.rec.settings, p.rec.settings) and np.array_equal(alone.rec.dE00, p.rec.dE00)
        assert np.array_equal(alone.interval.lo, p.interval.lo) and alone.care == p.care
    assert len(calls) == len(entries)
    # Later runs of the day: the model's trend moves the plan (not four copies of one plan).
    assert not np.array_equal(together[0].rec.dE00, together[2].rec.dE00)


@pytest.mark.parametrize("executor", ["processes", "threads"])
def test_plans_side_by_side_equal_the_plans_one_after_the_other(setup, executor):
    from coating.recommend.config import RecommendConfig
    grey, entries = _day(setup)
    config = RecommendConfig(**FAST_PLAN)
    one = plan.plan_runs(entries, setup["hist"], {1: grey}, setup["standard"], config, n_starts=2)
    two = plan.plan_runs(entries, setup["hist"], {1: grey}, setup["standard"], config, n_starts=2, workers=2,
                         executor=executor)
    for a, b in zip(one, two):
        assert a.furnace_no == b.furnace_no and a.care == b.care and a.n_runs == b.n_runs
        assert np.allclose(a.rec.settings, b.rec.settings, atol=1e-9) and np.allclose(a.rec.dE00, b.rec.dE00)
        assert np.allclose(a.interval.hi, b.interval.hi)
    with pytest.raises(ValueError, match="executor"):
        plan.plan_runs(entries, setup["hist"], {1: grey}, setup["standard"], config, workers=2, executor="gpu")


def test_rows_are_refused_before_any_fit(setup, monkeypatch):
    """A cycle without a model, a cycle with fewer runs than the refit needs, a history shorter
    than the model's training: one clear error, and no fit has started."""
    from coating.recommend.config import RecommendConfig
    from sevi.runtime.errors import InputError
    grey, entries = _day(setup)
    monkeypatch.setattr(fitting, "refit", lambda *a: pytest.fail("a fit started before the checks"))
    hist = setup["hist"]
    bad = dict(entries[0], furnace_no="Z", cycle_id=3)
    with pytest.raises(InputError, match=r"furnace_no Z: no model for cycle 3 \(models for cycles \[1\]\)"):
        plan.plan_runs(entries + [bad], hist, {1: grey}, setup["standard"], RecommendConfig(), where="H.csv")
    short = history_rows.select_rows(hist, [0])
    with pytest.raises(InputError, match=r"H.csv: cycle 1 has 1 run\(s\) .*refit needs at least 2"):
        plan.plan_runs(entries[:1], short, {1: grey}, setup["standard"], RecommendConfig(), where="H.csv")
    cut = history_rows.select_rows(hist, np.arange(5))
    with pytest.raises(InputError, match=rf"H.csv: cycle 1 has 5 run\(s\), fewer than the {grey.registry_meta['n_train']}"):
        plan.plan_runs(entries[:1], cut, {1: grey}, setup["standard"], RecommendConfig(), where="H.csv")
    # Filter steps (--no-refit) keep what the model knew: a cut history is planned.
    monkeypatch.undo()
    p = plan.plan_runs(entries[:1], cut, {1: grey}, setup["standard"], RecommendConfig(refit=False, **FAST_PLAN),
                       n_starts=2)[0]
    assert p.n_runs == 5 and "few_runs" in p.care
