import math

import numpy as np
import pytest
import torch
from numpy.testing import assert_allclose

from coating.optics.transfer_matrix import default_wavelengths_nm, reflectance

tmm = pytest.importorskip("tmm")
DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])


def _random_stack(rng, n_layers, n_wl, absorbing=True):
    n = rng.uniform(1.3, 2.5, (n_layers, n_wl)) + 1j * (rng.uniform(0, 0.5, (n_layers, n_wl)) if absorbing else 0)
    d = rng.uniform(1, 300, n_layers)
    return n, d


@pytest.mark.parametrize("angle", [0.0, 8.0, 45.0, 75.0])
@pytest.mark.parametrize("pol", ["s", "p", "u"])
def test_matches_tmm_coh_tmm_float64(angle, pol):
    rng = np.random.default_rng(int(angle) * 7 + ord(pol))
    wl = np.linspace(380, 780, 9)
    n_sub = np.array([1.52 + 0.02j] * len(wl))
    for trial in range(4):
        n, d = _random_stack(rng, 6, len(wl))
        R = reflectance(torch.tensor(n), torch.tensor(d), torch.tensor(wl), torch.tensor(n_sub), 1.0, angle, pol).numpy()
        pols = ("s", "p") if pol == "u" else (pol,)
        ref = np.array([np.mean([tmm.coh_tmm(q, [1.0, *n[:, i], n_sub[i]], [np.inf, *d, np.inf],
                                             math.radians(angle), wl[i])["R"] for q in pols])
                        for i in range(len(wl))])
        assert_allclose(R, ref, rtol=0, atol=1e-12, err_msg=f"angle {angle} pol {pol} trial {trial}")


def test_incident_medium_and_total_internal_reflection_match_tmm():
    # Glass incident medium at 60 deg: the low-index layers are beyond the critical angle.
    rng = np.random.default_rng(5)
    wl = np.linspace(400, 700, 5)
    n, d = _random_stack(rng, 4, len(wl), absorbing=False)
    n[1] = 1.2
    for pol in "sp":
        R = reflectance(torch.tensor(n), torch.tensor(d), torch.tensor(wl), 1.0, 1.6, 60.0, pol).numpy()
        ref = [tmm.coh_tmm(pol, [1.6, *n[:, i], 1.0], [np.inf, *d, np.inf], math.radians(60), wl[i])["R"]
               for i in range(len(wl))]
        assert_allclose(R, ref, atol=1e-12, err_msg=f"TIR case, pol {pol}")


def test_single_interface_fresnel_and_quarter_wave():
    wl = torch.tensor([550.0], dtype=torch.float64)
    # A zero-thickness layer is no layer: R = ((1 - 1.5) / (1 + 1.5))^2.
    R = reflectance(torch.tensor([[1.9 + 0j]], dtype=torch.complex128), torch.zeros(1, dtype=torch.float64), wl, 1.5)
    assert_allclose(R.numpy(), [0.04], atol=1e-15)
    # Ideal quarter-wave layer n = sqrt(1.5): R = 0 at the design wavelength.
    n1 = math.sqrt(1.5)
    R = reflectance(torch.tensor([[complex(n1)]], dtype=torch.complex128), torch.tensor([550 / 4 / n1], dtype=torch.float64), wl, 1.5)
    assert R.item() < 1e-28


def test_shapes_broadcast_and_dtypes():
    wl = default_wavelengths_nm()
    assert wl.shape == (81,) and wl[0] == 380 and wl[-1] == 780
    n = torch.full((7, 81), 1.8 + 0.01j, dtype=torch.complex128)
    d = torch.rand(3, 5, 7, dtype=torch.float64) * 100
    R = reflectance(n, d, wl, 1.5)
    assert R.shape == (3, 5, 81) and R.dtype == torch.float64
    R32 = reflectance(n.to(torch.complex64), d.float(), wl.float(), 1.5)
    assert R32.dtype == torch.float32
    assert_allclose(R32.numpy(), R.numpy(), atol=2e-5, err_msg="float32 vs float64")


@pytest.mark.parametrize("device", DEVICES)
def test_device_agrees_with_cpu(device):
    wl = default_wavelengths_nm(device=device)
    n = torch.full((7, 81), 1.8 + 0.01j, dtype=torch.complex128, device=device)
    d = torch.linspace(10, 120, 7, dtype=torch.float64, device=device)
    R = reflectance(n, d, wl, 1.5, 1.0, 8.0, "u")
    assert R.device.type == device
    assert_allclose(R.cpu().numpy(), reflectance(n.cpu(), d.cpu(), wl.cpu(), 1.5, 1.0, 8.0, "u").numpy(), atol=1e-12)


def test_gradients_match_finite_differences():
    torch.manual_seed(0)
    wl = torch.linspace(400, 700, 7, dtype=torch.float64)
    d = (20 + 100 * torch.rand(2, 4, dtype=torch.float64)).requires_grad_()
    re = (1.4 + torch.rand(4, 7, dtype=torch.float64)).requires_grad_()
    im = (0.05 * torch.rand(4, 7, dtype=torch.float64)).requires_grad_()
    f = lambda d, re, im: reflectance(torch.complex(re, im), d, wl, 1.52, 1.0, 30.0, "u")  # noqa: E731
    assert torch.autograd.gradcheck(f, (d, re, im), eps=1e-6, atol=1e-7, rtol=1e-5)


def test_bad_input_is_refused():
    wl = default_wavelengths_nm()
    n = torch.ones(7, 81, dtype=torch.complex128)
    with pytest.raises(ValueError, match="polarization"):
        reflectance(n, torch.ones(7, dtype=torch.float64), wl, 1.5, polarization="x")
    with pytest.raises(ValueError, match="angle_deg"):
        reflectance(n, torch.ones(7, dtype=torch.float64), wl, 1.5, angle_deg=90)
    with pytest.raises(ValueError, match="L = thickness_nm"):
        reflectance(n, torch.ones(6, dtype=torch.float64), wl, 1.5)
