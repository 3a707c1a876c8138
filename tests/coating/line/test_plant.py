import dataclasses

import numpy as np
import pytest
import torch

from coating.line import plant
from coating.optics.colour import ciede2000

P = plant.PlantParams()


def test_init_and_step_are_deterministic_and_frozen():
    s0 = plant.init(P, 3)
    assert s0 == plant.init(P, 3) and s0 != plant.init(P, 4)
    with pytest.raises(dataclasses.FrozenInstanceError):
        s0.cycle_id = 2
    a = plant.step(s0, s0.settings, np.random.default_rng(0), P)
    b = plant.step(s0, s0.settings, np.random.default_rng(0), P)
    assert a[0] == b[0] and np.array_equal(a[1].R_F, b[1].R_F)
    m = a[1]
    assert m.R_F.shape == (81,) and m.R_B.shape == (81,) and len(m.std) == 14 and len(m.settings) == 10
    assert m.run_in_cycle == 1 and m.cycle_id == 1 and m.furnace_no == "FN000001"
    assert a[0].run_in_cycle == 1 and a[0].furnace_counter == 1


def test_settings_from_someone_else_change_the_result():
    s0 = plant.init(P, 0)
    base = np.array(s0.settings)
    _, m1 = plant.step(s0, base, np.random.default_rng(1), P)
    _, m2 = plant.step(s0, base * 1.03, np.random.default_rng(1), P)
    # Thicker layers move the reflectance minimum to the red.
    assert np.argmin(m2.R_F) > np.argmin(m1.R_F)
    assert np.allclose(m2.thickness_nm[:, [0, 2, 3, 4, 5]] / m1.thickness_nm[:, [0, 2, 3, 4, 5]], 1.03)
    with pytest.raises(ValueError, match="10 positive"):
        plant.step(s0, base[:9], np.random.default_rng(1), P)


def test_cycles_have_60_to_160_runs_and_a_new_calibration():
    runs = plant.simulate(P, 3, seed=11)
    cycles = np.array([m.cycle_id for m in runs])
    assert set(cycles) == {1, 2, 3}
    lengths = np.bincount(cycles)[1:]
    assert np.all((lengths >= 60) & (lengths <= 160)), lengths
    runs_in = [m.run_in_cycle for m in runs if m.cycle_id == 2]
    assert runs_in == list(range(1, len(runs_in) + 1))
    dates = [m.date for m in runs]
    assert dates == sorted(dates) and len(set(m.furnace_no for m in runs)) == len(runs)


def test_drift_gives_next_run_ciede2000_of_order_one_with_unchanged_settings():
    model = plant._model()
    std_R = plant.standard_reflectance(P)
    lab_std = model.colorimeter.lab(torch.as_tensor(std_R / 100))
    state = plant.init(P, 5)
    rng = np.random.default_rng(6)
    settings = np.array(state.settings)
    d = []
    for i in range(150):
        state, meas = plant.step(state, settings, rng, P)
        _, nxt = plant.step(state, settings, np.random.default_rng(100 + i), P)  # settings unchanged
        d.append(ciede2000(torch.as_tensor(np.stack([nxt.lab_F, nxt.lab_B])), lab_std).numpy())
        settings = plant.operator_settings(meas, std_R, model.wavelength_nm.numpy(), P)
    med = np.median(np.array(d))
    assert 0.7 < med < 1.8, f"median next-run CIEDE2000 {med:.2f}, expected ~1-1.5"


def test_sensor_std_carries_information_about_the_thickness():
    s0 = plant.init(P, 2)
    rng = np.random.default_rng(0)
    std, err = [], []
    for _ in range(200):
        _, m = plant.step(s0, s0.settings, rng, P)
        std.append(m.std[3])                                   # front layer 4 (recipe position 3)
        err.append(m.thickness_nm[0, 3] / (s0.settings[2] * s0.tooling[2]) - 1)
    r = np.corrcoef(np.log(std), np.array(err) * s0.monitor_sign[3])[0, 1]
    assert r > 0.5, f"correlation of std and thickness error {r:.2f}"


def test_operator_corrects_towards_the_standard():
    model = plant._model()
    std_R = plant.standard_reflectance(P)
    s0 = plant.init(P, 1)
    _, m = plant.step(s0, np.array(s0.settings) * 1.04, np.random.default_rng(0), P)
    new = plant.operator_settings(m, std_R, model.wavelength_nm.numpy(), P)
    assert np.all(new < np.array(m.settings))  # too thick -> both sides thinner, same direction
