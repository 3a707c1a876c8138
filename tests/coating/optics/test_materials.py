import pytest
import torch
from numpy.testing import assert_allclose

from coating.optics import materials
from coating.optics.materials import (
    TabulatedNK,
    cauchy_n,
    index,
    interp_nk,
    packed_film_index,
    sellmeier_n,
)


def test_fused_silica_sellmeier_matches_published_values():
    # Malitson 1965: n = 1.45846 at 546.1 nm (Hg e line), 1.45637 at 632.8 nm (HeNe).
    n = sellmeier_n(torch.tensor([546.1, 632.8], dtype=torch.float64),
                    materials.FUSED_SILICA.B, materials.FUSED_SILICA.C_um2)
    assert_allclose(n.numpy(), [1.46008, 1.45702], atol=2e-4)


def test_cubic_zirconia_index_in_published_range():
    n = index("cubic_zirconia", torch.tensor([589.3], dtype=torch.float64)).real.item()
    assert abs(n - 2.16) < 0.02  # cubic zirconia n_D ~ 2.15-2.18


def test_cauchy():
    wl = torch.tensor([500.0], dtype=torch.float64)
    assert_allclose(cauchy_n(wl, 1.5, 5000.0, 1e8).numpy(), [1.5 + 0.02 + 1e8 / 500 ** 4], rtol=1e-15)


def test_packing_density_limits_and_linearity_of_lorentz_lorentz():
    nb = torch.tensor([2.1 + 0.01j], dtype=torch.complex128)
    assert_allclose(packed_film_index(nb, 1.0).numpy(), nb.numpy(), atol=1e-14)
    assert_allclose(packed_film_index(nb, 0.0, 1.333).numpy(), [1.333], atol=1e-14)
    p = 0.9
    n = packed_film_index(torch.tensor([2.1 + 0j], dtype=torch.complex128), p).real.item()
    ll = lambda x: (x * x - 1) / (x * x + 2)  # noqa: E731
    assert abs(ll(n) - p * ll(2.1)) < 1e-14
    # Water in the voids raises the index (the chamber-humidity drift).
    assert packed_film_index(nb, 0.9, 1.333).real.item() > packed_film_index(nb, 0.9, 1.0).real.item()


def test_film_indices_where_evaporated_films_are():
    wl = torch.tensor([550.0], dtype=torch.float64)
    assert 1.44 < index("SiO2", wl).real.item() < 1.47
    assert 1.95 < index("ZrO2", wl).real.item() < 2.10
    ito = index("ITO", wl)
    assert 1.8 < ito.real.item() < 2.1 and 0 < ito.imag.item() < 0.05


def test_interpolation_and_no_extrapolation(tmp_path):
    p = tmp_path / "nk.csv"
    p.write_text("# test table\nwavelength_nm,n,k\n400,2.0,0.1\n500,1.8,0.0\n")
    t = TabulatedNK.from_csv(p)
    assert_allclose(t.nk(torch.tensor([450.0], dtype=torch.float64)).numpy(), [1.9 + 0.05j], atol=1e-15)
    with pytest.raises(ValueError, match="outside the table's range"):
        t.nk(torch.tensor([600.0], dtype=torch.float64))
    p.write_text("wavelength_nm,n,k\n400,2.0\n")
    with pytest.raises(ValueError, match="row 2"):
        TabulatedNK.from_csv(p)


def test_index_parameters_are_differentiable():
    wl = torch.tensor([550.0], dtype=torch.float64)
    p = torch.tensor(0.9, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda p: packed_film_index(materials.CUBIC_ZIRCONIA.nk(wl), p, 1.1).real, (p,))
    A = torch.tensor(1.5, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda A: cauchy_n(wl, A, 4000.0), (A,))
    assert interp_nk(wl, torch.tensor([500.0, 600.0], dtype=torch.float64),
                     torch.tensor([2.0, 1.8], dtype=torch.float64), torch.zeros(2, dtype=torch.float64)).is_complex()


def test_unknown_material_is_named():
    with pytest.raises(ValueError, match="unknown material 'unobtainium'"):
        index("unobtainium", torch.tensor([550.0]))


def test_every_material_documents_its_source():
    for name, m in materials.MATERIALS.items():
        assert getattr(m, "source", ""), name
