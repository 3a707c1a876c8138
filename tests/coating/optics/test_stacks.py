import numpy as np
import pytest
import torch
from numpy.testing import assert_allclose

from coating.optics import stacks
from coating.optics.stacks import (
    RECIPE_BACK_NM,
    RECIPE_FRONT_NM,
    StackModel,
    recipe_thickness,
    settings_of_recipe,
)


def test_default_stack_is_a_plausible_ar_coating():
    m = StackModel.build()
    R = m.reflectance(torch.tensor([RECIPE_FRONT_NM, RECIPE_BACK_NM], dtype=torch.float64), angle_deg=8.0)
    Y = m.colorimeter.xyz(R)[:, 1].numpy()
    assert np.all((Y > 0.6) & (Y < 1.4)), f"luminous reflectance {Y} % is not ~1 %"
    assert float(R[:, 30:60].max()) < 0.02, "reflectance in the green (530-675 nm) should be < 2 %"
    lab = m.colorimeter.lab(R).numpy()
    assert np.all(lab[:, 0] < 12), lab


def test_settings_map_to_the_adjustable_layers():
    s = torch.tensor(settings_of_recipe(), dtype=torch.float64)
    assert s.tolist() == [24.11, 12.42, 36.85, 102.73, 93.93, 25.07, 13.20, 37.19, 104.42, 94.26]
    rec = recipe_thickness(s)
    assert_allclose(rec.numpy(), [RECIPE_FRONT_NM, RECIPE_BACK_NM])
    rec2 = recipe_thickness(s + 1)
    changed = (rec2 != rec).numpy()
    assert changed[:, list(stacks.ADJUSTABLE)].all() and not changed[:, list(stacks.FIXED)].any()
    assert recipe_thickness(torch.zeros(4, 3, 10, dtype=torch.float64)).shape == (4, 3, 2, 7)
    with pytest.raises(ValueError, match="10 values"):
        recipe_thickness(torch.zeros(9))


def test_incident_first_order_is_a_permutation_ending_at_the_primer():
    assert sorted(stacks.INCIDENT_FIRST) == list(range(7))
    assert stacks.RECIPE_MATERIALS[stacks.INCIDENT_FIRST[0]] == "SiO2"     # outer layer
    assert stacks.RECIPE_MATERIALS[stacks.INCIDENT_FIRST[-1]] == "primer"  # next to the lens
