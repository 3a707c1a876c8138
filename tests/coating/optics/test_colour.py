import numpy as np
import pytest
import torch
from numpy.testing import assert_allclose

from coating.optics.colour import (
    Colorimeter,
    cie_tables,
    ciede2000,
    delta_e_ab,
    reflectance_to_lab,
)
from coating.optics.transfer_matrix import default_wavelengths_nm

colour = pytest.importorskip("colour")

# Sharma, Wu & Dalal, Color Res. Appl. 30, 21 (2005), Table 1: the 34 CIEDE2000 test pairs
# (L1 a1 b1), (L2 a2 b2), Delta E00 (published to 4 decimals). Copied from colour-science
# 0.4.7's own tests, which exclude pair 14 (hue difference of exactly 180 deg, platform-dependent).
SHARMA_2005 = [
    ([50.0000, 2.6772, -79.7751], [50.0000, 0.0000, -82.7485], 2.0425),
    ([50.0000, 3.1571, -77.2803], [50.0000, 0.0000, -82.7485], 2.8615),
    ([50.0000, 2.8361, -74.0200], [50.0000, 0.0000, -82.7485], 3.4412),
    ([50.0000, -1.3802, -84.2814], [50.0000, 0.0000, -82.7485], 1.0000),
    ([50.0000, -1.1848, -84.8006], [50.0000, 0.0000, -82.7485], 1.0000),
    ([50.0000, -0.9009, -85.5211], [50.0000, 0.0000, -82.7485], 1.0000),
    ([50.0000, 0.0000, 0.0000], [50.0000, -1.0000, 2.0000], 2.3669),
    ([50.0000, -1.0000, 2.0000], [50.0000, 0.0000, 0.0000], 2.3669),
    ([50.0000, 2.4900, -0.0010], [50.0000, -2.4900, 0.0009], 7.1792),
    ([50.0000, 2.4900, -0.0010], [50.0000, -2.4900, 0.0010], 7.1792),
    ([50.0000, 2.4900, -0.0010], [50.0000, -2.4900, 0.0011], 7.2195),
    ([50.0000, 2.4900, -0.0010], [50.0000, -2.4900, 0.0012], 7.2195),
    ([50.0000, -0.0010, 2.4900], [50.0000, 0.0009, -2.4900], 4.8045),
    ([50.0000, -0.0010, 2.4900], [50.0000, 0.0010, -2.4900], 4.8045),
    ([50.0000, -0.0010, 2.4900], [50.0000, 0.0011, -2.4900], 4.7461),
    ([50.0000, 2.5000, 0.0000], [50.0000, 0.0000, -2.5000], 4.3065),
    ([50.0000, 2.5000, 0.0000], [73.0000, 25.0000, -18.0000], 27.1492),
    ([50.0000, 2.5000, 0.0000], [61.0000, -5.0000, 29.0000], 22.8977),
    ([50.0000, 2.5000, 0.0000], [56.0000, -27.0000, -3.0000], 31.9030),
    ([50.0000, 2.5000, 0.0000], [58.0000, 24.0000, 15.0000], 19.4535),
    ([50.0000, 2.5000, 0.0000], [50.0000, 3.1736, 0.5854], 1.0000),
    ([50.0000, 2.5000, 0.0000], [50.0000, 3.2972, 0.0000], 1.0000),
    ([50.0000, 2.5000, 0.0000], [50.0000, 1.8634, 0.5757], 1.0000),
    ([50.0000, 2.5000, 0.0000], [50.0000, 3.2592, 0.3350], 1.0000),
    ([60.2574, -34.0099, 36.2677], [60.4626, -34.1751, 39.4387], 1.2644),
    ([63.0109, -31.0961, -5.8663], [62.8187, -29.7946, -4.0864], 1.2630),
    ([61.2901, 3.7196, -5.3901], [61.4292, 2.2480, -4.9620], 1.8731),
    ([35.0831, -44.1164, 3.7933], [35.0232, -40.0716, 1.5901], 1.8645),
    ([22.7233, 20.0904, -46.6940], [23.0331, 14.9730, -42.5619], 2.0373),
    ([36.4612, 47.8580, 18.3852], [36.2715, 50.5065, 21.2231], 1.4146),
    ([90.8027, -2.0831, 1.4410], [91.1528, -1.6435, 0.0447], 1.4441),
    ([90.9257, -0.5406, -0.9208], [88.6381, -0.8985, -0.7239], 1.5381),
    ([6.7747, -0.2908, -2.4247], [5.8714, -0.0985, -2.2286], 0.6377),
    ([2.0776, 0.0795, -1.1350], [0.9033, -0.0636, -0.5514], 0.9082),
]
PAIR_14 = 13  # 0-based index of the pair colour-science leaves out


def test_ciede2000_published_pairs():
    lab1 = torch.tensor([p[0] for p in SHARMA_2005], dtype=torch.float64)
    lab2 = torch.tensor([p[1] for p in SHARMA_2005], dtype=torch.float64)
    ref = np.array([p[2] for p in SHARMA_2005])
    got = ciede2000(lab1, lab2).numpy()
    keep = np.arange(len(ref)) != PAIR_14
    assert_allclose(got[keep], ref[keep], atol=1e-4, err_msg="Sharma 2005 Table 1")
    # Pair 14 sits exactly on the 180-degree branch: either side of it is a valid answer.
    assert min(abs(got[PAIR_14] - 4.8045), abs(got[PAIR_14] - 4.7461)) < 1e-4
    # Symmetric in its arguments.
    assert_allclose(ciede2000(lab2, lab1).numpy()[keep], got[keep], atol=1e-10)


def test_ciede2000_matches_colour_science_on_random_pairs():
    rng = np.random.default_rng(0)
    lab1 = np.column_stack([rng.uniform(0, 100, 2000), rng.uniform(-80, 80, (2000, 2))])
    lab2 = lab1 + rng.normal(0, 3, lab1.shape)
    got = ciede2000(torch.tensor(lab1), torch.tensor(lab2)).numpy()
    assert_allclose(got, colour.delta_E(lab1, lab2, method="CIE 2000"), atol=1e-3)
    assert_allclose(delta_e_ab(torch.tensor(lab1), torch.tensor(lab2)).numpy(),
                    colour.delta_E(lab1, lab2, method="CIE 1976"), atol=1e-10)


def _colour_science_lab(R, wl):
    shape = colour.SpectralShape(float(wl[0]), float(wl[-1]), float(wl[1] - wl[0]))
    cmfs = colour.MSDS_CMFS["CIE 1964 10 Degree Standard Observer"].copy().align(shape)
    ill = colour.SDS_ILLUMINANTS["D65"].copy().align(shape)
    out = []
    for r in R:
        xyz = colour.colorimetry.sd_to_XYZ_integration(r, cmfs, ill, shape=shape)
        white = colour.colorimetry.sd_to_XYZ_integration(np.ones_like(r), cmfs, ill, shape=shape)
        out.append(colour.XYZ_to_Lab(xyz / 100, colour.XYZ_to_xy(white / 100)))
    return np.array(out)


def test_lab_matches_colour_science_on_plant_grid():
    wl = default_wavelengths_nm().numpy()
    rng = np.random.default_rng(1)
    # AR-like curves (a few %) and bright curves, to cover both branches of f(t).
    R = np.vstack([0.01 + 0.03 * rng.random((5, 81)), rng.random((5, 81))])
    got = reflectance_to_lab(torch.tensor(R), wl).numpy()
    ref = _colour_science_lab(R, wl)
    assert_allclose(got, ref, atol=1e-3, err_msg="Lab vs colour-science (D65, 10 deg)")
    xyz = Colorimeter.build(wl).xyz(torch.tensor(R)).numpy()
    shape = colour.SpectralShape(380, 780, 5)
    cmfs = colour.MSDS_CMFS["CIE 1964 10 Degree Standard Observer"].copy().align(shape)
    ill = colour.SDS_ILLUMINANTS["D65"].copy().align(shape)
    ref_xyz = colour.colorimetry.sd_to_XYZ_integration(R, cmfs, ill, shape=shape)
    assert_allclose(xyz, ref_xyz, atol=1e-9, err_msg="XYZ vs colour-science integration")


def test_perfect_diffuser_is_white_and_dark_is_black():
    wl = default_wavelengths_nm()
    lab = reflectance_to_lab(torch.ones(81, dtype=torch.float64), wl).numpy()
    assert_allclose(lab, [100, 0, 0], atol=1e-10)
    assert_allclose(reflectance_to_lab(torch.zeros(81, dtype=torch.float64), wl).numpy(), [0, 0, 0], atol=1e-10)


def test_shipped_tables_equal_colour_science():
    wl = np.arange(380, 781, 5)
    cmf, d65 = cie_tables(wl)
    ref = colour.MSDS_CMFS["CIE 1964 10 Degree Standard Observer"]
    assert_allclose(cmf, ref[wl], rtol=1e-15, atol=1e-18)
    assert_allclose(d65, colour.SDS_ILLUMINANTS["D65"][wl], rtol=1e-15)
    with pytest.raises(ValueError, match="leaves the range"):
        cie_tables([350, 400])


def test_lab_and_ciede2000_are_differentiable():
    wl = torch.linspace(380, 780, 81, dtype=torch.float64)
    cm = Colorimeter.build(wl)
    R = (0.01 + 0.02 * torch.rand(2, 81, dtype=torch.float64)).requires_grad_()
    target = cm.lab(torch.full((81,), 0.015, dtype=torch.float64))
    assert torch.autograd.gradcheck(lambda R: ciede2000(cm.lab(R), target), (R,), atol=1e-6)
    # Zero chroma (a = b = 0) must not give NaN gradients.
    lab = torch.tensor([[50.0, 0.0, 0.0]], dtype=torch.float64, requires_grad=True)
    ciede2000(lab, torch.tensor([[52.0, 1.0, -1.0]], dtype=torch.float64)).sum().backward()
    assert torch.isfinite(lab.grad).all()


def test_nonuniform_grid_uses_trapezoid_weights():
    wl = np.concatenate([np.arange(380, 600, 5), np.arange(600, 781, 10)])
    lab = reflectance_to_lab(torch.ones(len(wl), dtype=torch.float64), wl).numpy()
    assert_allclose(lab, [100, 0, 0], atol=1e-10)
