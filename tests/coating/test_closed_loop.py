"""A tiny closed loop runs end to end and our recommendations beat unchanged settings."""
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "tools"))

import coating_closed_loop as cl  # noqa: E402
from coating import plant  # noqa: E402


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


def test_calibrate_plant_grid_and_distance(tmp_path):
    import json

    import calibrate_plant as cp
    assert cp._grid(["kappa=0.01,0.02", "run_scale_sd=0.003"]) == [
        {"kappa": 0.01, "run_scale_sd": 0.003}, {"kappa": 0.02, "run_scale_sd": 0.003}]
    s = {"unchanged": {"median": 1.4}, "physics_ls": {"median": 0.8}}
    assert cp.distance(s) == 0.0
    s["unchanged"]["median"] = 2.8
    assert abs(cp.distance(s) - np.log(2)) < 1e-12
    assert cp.main(["--grid", "kappa=0.01,0.03", "--plants", "1", "--cycles", "1", "--fit-runs", "12",
                    "--loop-runs", "2", "--out", str(tmp_path)]) == 0
    rows = json.loads((tmp_path / "calibration.json").read_text())["rows"]
    assert [r["point"]["kappa"] for r in rows] == [0.01, 0.03]
    # Same plant, same draws: three times the monitor-linked error cannot help the oracle.
    assert rows[1]["summary"]["oracle"]["mean"] > rows[0]["summary"]["oracle"]["mean"]
    try:
        cp._grid(["nonsense=1"])
    except SystemExit as e:
        assert "unknown PlantParams field" in str(e)
    else:
        raise AssertionError("an unknown field must be refused")


def test_main_runs_a_subset_of_methods_and_refuses_unknown_ones(tmp_path):
    import json

    import pytest
    out = tmp_path / "cl"
    assert cl.main(["--plants", "1", "--cycles", "1", "--fit-runs", "12", "--loop-runs", "2",
                    "--methods", "oracle,oracle_last,oracle_robust,oracle_lagged", "--robust-draws", "4", "--out", str(out)]) == 0
    doc = json.loads((out / "closed_loop.json").read_text())
    assert set(doc["per_run"]) == {"unchanged", "physics_ls", "oracle", "oracle_last", "oracle_robust", "oracle_lagged"}
    assert np.asarray(doc["per_run"]["oracle"]).shape == (2, 2) and doc["targets"] == {}
    # Aim diagnostics: each method's noise-free colour error per run; no model error without a model.
    aim = np.asarray(doc["cycles"][0]["aim"]["oracle_robust"])
    assert aim.shape == (2, 4) and np.all(aim[:, :2] >= 0) and np.isnan(aim[:, 2:]).all()
    with pytest.raises(SystemExit):
        cl.main(["--methods", "ours,nonsense", "--out", str(out)])


def test_plant_overrides_are_typed_like_their_fields():
    import pytest
    p = cl._plant_params(["kappa=0.01", "packing_mean=0.98,0.9", "cycle_runs_min=50"])
    # A comma list is a tuple of numbers (it once became a tuple of characters).
    assert (p.kappa, p.packing_mean, p.cycle_runs_min) == (0.01, (0.98, 0.9), 50)
    for bad, msg in ((["kapa=1"], "unknown PlantParams field 'kapa'.*'kappa'"),
                     (["packing_mean=0.9"], "expected 2 comma-separated values"),
                     (["cycle_runs_min=1.5"], "expected int"), (["kappa"], "expected FIELD=VALUE")):
        with pytest.raises(SystemExit, match=msg):
            cl._plant_params(bad)


def test_grey_select_grid_and_choice_by_validation():
    import pytest
    assert cl._grey_grid([]) == []
    assert cl._grey_grid(["walk_sd=1e-3,2e-3", "free_gains=true,false"]) == [
        {"walk_sd": 1e-3, "free_gains": True}, {"walk_sd": 1e-3, "free_gains": False},
        {"walk_sd": 2e-3, "free_gains": True}, {"walk_sd": 2e-3, "free_gains": False}]
    for bad in (["walk=1e-3"], ["walk_sd="]):
        with pytest.raises(SystemExit, match="grey-box hyperparameter"):
            cl._grey_grid(bad)
    params = plant.PlantParams()
    cands = cl._grey_grid(["walk_sd=1e-4,6e-3"])
    _, _, res, info = cl.run_cycle(plant.init(params, 2), np.random.default_rng([2, 1]), params, fit_runs=14,
                                   loop_runs=2, hp_grey={"epochs": 2, "inner_steps": 8, "width": 0}, hp_m1={},
                                   log=lambda s: None, methods=("ours", "unchanged"), finish_cycle=False,
                                   grey_select=cands)
    assert info["greybox_selected"] in cands and np.asarray(res["ours"]).shape == (2, 2)


def test_oracle_last_is_the_oracle_lagged_by_the_walk_step_only():
    import dataclasses
    for walk, same in ((0.0, True), (4e-3, False)):
        params = dataclasses.replace(plant.PlantParams(), tooling_walk_sd=walk, tooling_trend_sd=1e-3)
        _, _, res, _ = cl.run_cycle(plant.init(params, 3), np.random.default_rng([3, 1]), params, fit_runs=12,
                                    loop_runs=3, hp_grey=None, hp_m1=None, log=lambda s: None,
                                    methods=("unchanged", "oracle", "oracle_last"), finish_cycle=False)
        # Without a walk the machine's next tooling is its last one times the trend, exactly.
        assert np.array_equal(res["oracle"], res["oracle_last"]) == same, walk
