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

    from coating import plant, schema

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
