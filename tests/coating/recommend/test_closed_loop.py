"""coating/recommend/closed_loop.py: a tiny closed loop runs end to end and our recommendations beat
unchanged settings; the hidden-truth oracles agree where they must."""
import numpy as np

from coating.line import plant
from coating.recommend import closed_loop as cl


def test_tiny_closed_loop_ours_beats_unchanged():
    params = plant.PlantParams()
    state = plant.init(params, 1)
    rng = np.random.default_rng([1, 1])
    _, _, res, info = cl.run_cycle(state, rng, params, fit_runs=14, loop_runs=4,
                                   hp_grey={"epochs": 3, "inner_steps": 10, "width": 0}, hp_m1={},
                                   log=lambda s: None, methods=("ours", "unchanged"),
                                   finish_cycle=False)
    ours, unchanged = np.asarray(res["ours"]), np.asarray(res["unchanged"])
    assert ours.shape == unchanged.shape == (4, 2)
    assert ours.mean() < unchanged.mean(), (ours.mean(), unchanged.mean())
    s = cl.summarise(res)
    assert set(s["ours"]) >= {"median", "p90", "median_F", "median_B"}


def test_oracle_last_is_the_oracle_lagged_by_the_walk_step_only():
    import dataclasses
    for walk, same in ((0.0, True), (4e-3, False)):
        params = dataclasses.replace(plant.PlantParams(), tooling_walk_sd=walk, tooling_trend_sd=1e-3)
        _, _, res, _ = cl.run_cycle(plant.init(params, 3), np.random.default_rng([3, 1]), params, fit_runs=12,
                                    loop_runs=3, hp_grey=None, hp_m1=None, log=lambda s: None,
                                    methods=("unchanged", "oracle", "oracle_last"), finish_cycle=False)
        # Without a walk the machine's next tooling is its last one times the trend, exactly.
        assert np.array_equal(res["oracle"], res["oracle_last"]) == same, walk


def test_ours_plans_through_the_commands_code_path_and_records_how_sure(monkeypatch):
    from coating.recommend import plan
    calls = []
    real = plan.plan_runs
    monkeypatch.setattr(plan, "plan_runs", lambda *a, **k: calls.append((a, k)) or real(*a, **k))
    params = plant.PlantParams()
    _, _, res, info = cl.run_cycle(plant.init(params, 1), np.random.default_rng([1, 1]), params, fit_runs=14,
                                   loop_runs=3, hp_grey={"epochs": 2, "inner_steps": 6, "width": 0}, hp_m1={},
                                   log=lambda s: None, methods=("ours_robust", "unchanged"), finish_cycle=False,
                                   robust_draws=4, interval_scales=(1.0, 8.0))
    assert len(calls) == 3
    (entries, history, models, _std, config), kw = calls[-1]
    assert len(history) == 14 + 2 and entries[0]["run_in_cycle"] == 17 and config.robust_draws == 4
    assert models[1].registry_meta["n_train"] == 11              # the time split's training runs
    recs = info["plans"]["ours_robust"]
    assert len(recs) == 3 and all(len(r["measured"]) == 2 and r["interval"] is not None for r in recs)
    assert np.allclose([r["measured"] for r in recs], res["ours_robust"])
    s = cl.interval_summary(recs, (1.0, 8.0))
    assert s["failures"] == 0 and s["n_run_sides"] == 6 and s["flagged_few_runs"] == 1.0   # 14-16 runs
    assert s["coverage_by_scale"]["8"]["coverage"] >= s["coverage_by_scale"]["1"]["coverage"]  # wider covers more
    # Each plan carries its predicted gain and the run as it would have been with the settings kept:
    # the first loop run of "unchanged" keeps the fitted runs' last settings, as the first plan's
    # counterfactual does, on the same draws.
    assert all(len(r["gain"]) == 4 and r["gain"][1] <= r["gain"][0] <= r["gain"][2] and 0 <= r["gain"][3] <= 1
               for r in recs)
    assert np.allclose(recs[0]["measured_unchanged"], res["unchanged"][0])
    assert s["n_gain"] == 3 and 0 <= s["worse"] <= 1


def test_interval_summary_counts_coverage_flags_and_failures():
    recs = [{"measured": [0.5, 1.0], "interval": [[0.4, 0.4], [0.2, 0.2], [0.6, 0.8]], "care": ["few_runs"],
             "calibration": [[[0.0, 0.0], [2.0, 2.0]]], "wall_s": 1.0, "cpu_s": 0.5},
            {"measured": [0.1, 0.3], "interval": [[0.4, 0.4], [0.2, 0.2], [0.6, 0.8]], "care": [],
             "calibration": [[[0.0, 0.0], [2.0, 2.0]]], "wall_s": 3.0, "cpu_s": 1.5},
            {"failed": "ValueError: x", "care": [], "interval": None, "calibration": [], "wall_s": 2.0, "cpu_s": 1.0}]
    s = cl.interval_summary(recs, (5.0,))
    assert s["failures"] == 1 and s["n_plans"] == 3 and s["n_run_sides"] == 4
    assert s["coverage"] == 0.5 and s["below"] == 0.25 and s["above"] == 0.25      # 0.5 and 0.3 inside
    assert s["coverage_F"] == 0.5 and s["coverage_B"] == 0.5
    assert s["coverage_by_scale"] == {"5": {"coverage": 1.0, "below": 0.0, "above": 0.0, "median_width": 2.0}}
    assert s["flagged"] == 1 / 3 and s["flagged_few_runs"] == 1 / 3 and s["call_wall_s_median"] == 2.0


def test_gain_summary_against_the_realised_gain():
    rec = lambda m, kept, gain, care: {"measured": m, "measured_unchanged": kept, "gain": gain, "care": care}  # noqa: E731
    recs = [rec([0.5, 0.5], [1.0, 1.0], [0.8, 0.2, 1.5, 0.0], []),                          # realised +1.0: inside
            rec([0.6, 0.6], [0.5, 0.5], [0.1, -0.3, 0.4, 0.4], ["interval_wider_than_gain"]),  # -0.2: worse, inside
            rec([0.4, 0.4], [0.5, 0.5], [0.5, 0.3, 0.9, 0.05], []),                           # +0.2: below
            {"failed": "ValueError: x", "care": [], "gain": None}]
    s = cl.gain_summary(recs)
    assert s["n_gain"] == 3 and s["gain_coverage"] == 2 / 3 and s["gain_below"] == 1 / 3 and s["gain_above"] == 0
    assert s["worse"] == 1 / 3 and s["worse_flagged"] == 1.0 and s["worse_unflagged"] == 0.0
    assert s["gain_flagged"] == 1 / 3 and abs(s["gain_realised_median"] - 0.2) < 1e-12 and s["gain_predicted_median"] == 0.5
    # p_worse 0, 0.4, 0.05 against worse no, yes, no: bins [0, 0.1) (2 plans, 2.5 %, none worse) and [0.4, 0.5).
    assert s["reliability"] == [{"bin": [0.0, 0.1], "n": 2, "p_worse": 0.025, "worse": 0.0},
                                {"bin": [0.4, 0.5], "n": 1, "p_worse": 0.4, "worse": 1.0}]
    assert np.isclose(s["brier"], (0 + 0.6 ** 2 + 0.05 ** 2) / 3) and np.isclose(s["brier_constant"], 2 / 9)
    assert np.isclose(s["brier_skill"], 1 - s["brier"] / (2 / 9)) and np.isclose(s["p_worse_mean"], 0.15)
    assert "33.3 %" in cl.gain_line(s) and "[0.4, 0.5) n 1: 40 % predicted, 100 % realised" in cl.gain_line(s)
    # Records of an earlier round (three numbers, no p_worse): the coverage alone.
    old = [dict(r, gain=r["gain"][:3]) for r in recs[:3]]
    assert "reliability" not in cl.gain_summary(old) and cl.gain_summary(old)["gain_coverage"] == 2 / 3
    assert cl.gain_summary(recs[3:]) == {} and cl.gain_line({}) == ""
