import numpy as np
import pytest
import torch

from coating.line import plant
from coating.models.pretraining import coating_spectra_batch
from coating.optics.colour import Colorimeter

DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])


@pytest.mark.parametrize("device", DEVICES)
def test_batch_is_deterministic_and_consistent(device):
    state = plant.init(plant.PlantParams(), 7)
    a = coating_spectra_batch(state, 64, seed=1, device=device)
    b = coating_spectra_batch(state, 64, seed=1, device=device)
    c = coating_spectra_batch(state, 64, seed=2, device=device)
    assert all(torch.equal(a[k], b[k]) for k in a) and not torch.equal(a["R_F"], c["R_F"])
    assert a["settings"].shape == (64, 10) and a["std"].shape == (64, 14)
    assert a["R_F"].shape == (64, 81) and a["lab_B"].shape == (64, 3) and a["R_F"].device.type == device
    lab = Colorimeter.build(np.arange(380, 781, 5), device=device).lab(a["R_F"] / 100)
    assert torch.allclose(lab, a["lab_F"])
    assert 0.2 < a["R_F"].mean().item() < 5  # percent, AR-like


def test_bad_arguments():
    with pytest.raises(ValueError, match="PlantState"):
        coating_spectra_batch({"cycle": 1}, 4, 0, "cpu")
    with pytest.raises(ValueError, match="n must be >= 1"):
        coating_spectra_batch(plant.init(plant.PlantParams(), 0), 0, 0, "cpu")
