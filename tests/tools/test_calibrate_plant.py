"""tools/calibrate_plant.py: the grid of plant parameters, the distance to the reference figures,
and one tiny calibration run."""
import numpy as np

from tools import calibrate_plant as cp


def test_calibrate_plant_grid_and_distance(tmp_path):
    import json

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
