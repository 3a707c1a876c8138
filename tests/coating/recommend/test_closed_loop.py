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
