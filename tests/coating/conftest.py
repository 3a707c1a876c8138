"""Shared fixtures of the coating tests; tmm and colour-science are test-only dependencies."""
import pytest
import torch


@pytest.fixture(autouse=True, scope="session")
def _few_threads():
    # The suite's tensors are small; one thread avoids oversubscribing a shared 2-core box.
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(old)


@pytest.fixture(scope="session")
def operator_runs():
    """``operator_runs(state_seed, rng_seed, n_runs, params)``: a cycle run by the operators' rule."""
    return _operator_runs


def _operator_runs(state_seed: int, rng_seed: int, n_runs: int, params=None):
    """A cycle run by the operators' rule on the simulated plant.

    Returns (state after the runs, the rng, the Measurements, the standard curves (2, W))."""
    import numpy as np

    from coating.line import plant, schema

    params = params or plant.PlantParams()
    state = plant.init(params, state_seed)
    rng = np.random.default_rng(rng_seed)
    std = plant.standard_reflectance(params)
    wl = schema.WAVELENGTHS_NM.astype(float)
    runs, s = [], np.array(state.settings)
    for _ in range(n_runs):
        state, m = plant.step(state, s, rng, params)
        runs.append(m)
        s = plant.operator_settings(m, std, wl, params)
    return state, rng, runs, std


# --- the cycle models (test_history_rows, test_normaliser, test_fitting) ------------------------
# Short fits: enough to test the loop and the predictions, not the models' quality.
FAST = {"model1": {"epochs": 40}, "model2": {"epochs": 40},
        "greybox": {"epochs": 2, "inner_steps": 8, "width": 8}}


@pytest.fixture(scope="session")
def cycle_rows(operator_runs):
    """One cycle of 20 operator runs (plant state seed 7, rng seed 8) as history rows."""
    from coating.line import plant, schema
    _, _, runs, _ = operator_runs(7, 8, 20, plant.PlantParams())
    return schema.history_from_measurements(runs)


@pytest.fixture(scope="session")
def fitted(cycle_rows):
    """Every model kind fitted (``FAST``) on ``cycle_rows`` with its latest run held out;
    session-wide, as the fits are deterministic (seeded) and no test changes them."""
    from coating.line import history_rows
    from coating.models import fitting, hparams
    tr, va = history_rows.time_split(cycle_rows, 1)
    return {k: fitting.fit(k, FAST[k], tr, va) for k in hparams.KINDS}
