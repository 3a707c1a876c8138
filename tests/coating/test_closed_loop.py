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
