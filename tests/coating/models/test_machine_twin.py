"""coating.models.machine_twin.MachineTwin: the machine as a cycle model (hidden truth) for the oracle references."""
import numpy as np
import torch

from coating.line import plant
from coating.models.machine_twin import MachineTwin
from coating.recommend import optimise_settings as recommend

P = plant.PlantParams()


def test_twin_predicts_the_noise_free_run_and_draws_the_plants_errors():
    state = plant.init(P, seed=3)
    twin = MachineTwin(state, P)
    x = plant.nominal_settings(P)
    lab = twin.predict(torch.as_tensor(x)[None]).lab[0].numpy()
    assert np.allclose(lab, plant.mean_run_lab(state, x, P), atol=1e-10)
    rel, u, dlog = twin.noise_draws(20000, seed=1)
    assert rel.shape == (20000, 14) and float(u.abs().max()) == 0.0 and float(dlog.abs().max()) == 0.0
    # Per-layer spread: monitor part, residual and the common rate error, as plant.step draws them.
    lr_var = np.exp(P.std_log_sd ** 2) * (np.exp(P.std_log_sd ** 2) - 1)
    expected = np.sqrt(P.kappa ** 2 * lr_var + P.residual_sd ** 2 + P.run_scale_sd ** 2)
    assert np.allclose(rel.std(0).numpy(), expected, rtol=0.05)
    # Layers of one side share the common rate error; the two sides do not.
    c = np.corrcoef(rel.numpy().T)
    assert abs(c[0, 1] - P.run_scale_sd ** 2 / expected ** 2) < 0.03 and abs(c[0, 7]) < 0.05
    # The run as plant.step makes it, with these errors, is what predict_draws gives.
    pd = twin.predict_draws(torch.as_tensor(x)[None], rel[:3], u[:3], dlog[:3])
    assert pd.R.shape == (1, 3, 2, 81) and pd.lab.shape == (1, 3, 2, 3)


def test_lagged_twin_draws_one_common_walk_step():
    state = plant.init(P, seed=3)
    twin = MachineTwin(state, P, walk_sd=P.tooling_walk_sd)
    _, _, dlog = twin.noise_draws(20000, seed=2)
    assert dlog.shape == (20000, 10) and torch.all(dlog == dlog[:, :1])       # common to all layers
    assert abs(float(torch.expm1(dlog[:, 0]).std()) / P.tooling_walk_sd - 1) < 0.03
    # A walk step acts as that change of the tooling (plant.step: tooling * (1 + step)).
    x = torch.as_tensor(plant.nominal_settings(P))[None]
    zeros = torch.zeros(1, 14, dtype=torch.float64), torch.zeros(1, 2, dtype=torch.float64)
    stepped = MachineTwin(plant.dataclasses.replace(
        state, tooling=tuple(np.array(state.tooling) * (1 + 0.004))), P)
    d = torch.full((1, 10), float(np.log1p(0.004)), dtype=torch.float64)
    assert torch.allclose(twin.predict_draws(x, *zeros, d).R[0, 0], stepped.predict(x).R[0], atol=1e-10)


def test_recommender_on_the_twin_keeps_its_limits():
    state = plant.init(P, seed=5)
    twin = MachineTwin(state, P)
    std_R = plant.standard_reflectance(P)
    standard = recommend.Standard.from_curves(std_R[0], std_R[1])
    cur = np.array(state.settings)
    limits = recommend.default_limits(cur)
    rec = recommend.recommend_settings(twin, cur, 1, standard, limits, robust_draws=8, n_starts=2)
    assert np.all(np.abs(rec.settings - cur) <= limits.max_step_nm + 1e-9)
    d = rec.settings - cur
    assert np.all(d[:5] * d[5:] >= -1e-12)
    # The twin knows the machine: its plan brings the noise-free colour close to the standard.
    de = plant.ciede2000(torch.as_tensor(plant.mean_run_lab(state, rec.settings, P)), standard.lab)
    de0 = plant.ciede2000(torch.as_tensor(plant.mean_run_lab(state, cur, P)), standard.lab)
    assert float(de.sum()) < float(de0.sum())
