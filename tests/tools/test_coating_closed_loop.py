"""tools/coating_closed_loop.py: the command line over coating.recommend.closed_loop (methods, typed
--plant overrides, the --grey-select grid)."""
import numpy as np

from coating.line import plant
from coating.recommend.closed_loop import run_cycle
from tools import coating_closed_loop as cl


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
    _, _, res, info = run_cycle(plant.init(params, 2), np.random.default_rng([2, 1]), params, fit_runs=14,
                                loop_runs=2, hp_grey={"epochs": 2, "inner_steps": 8, "width": 0}, hp_m1={},
                                log=lambda s: None, methods=("ours", "unchanged"), finish_cycle=False,
                                grey_select=cands)
    assert info["greybox_selected"] in cands and np.asarray(res["ours"]).shape == (2, 2)
