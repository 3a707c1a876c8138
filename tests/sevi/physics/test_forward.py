"""sevi/physics/forward.py against independent references: Monte-Carlo histograms of the generator, the
thin-shell closed form, analytic column integrals, totals, and finite differences."""

import math

import numpy as np
import pytest
import torch
from numpy.polynomial import legendre as npleg
from numpy.testing import assert_allclose

from sevi.physics.forward import (
    ExpectedImage,
    ForwardConfig,
    check_params,
    fold_image,
    legendre_monomials,
    unfold_quadrant,
)
from sevi.physics.generator import GeneratorConfig, SeviGenerator
from sevi.physics.prior import PriorConfig, ShellParams

L = 12


def shells(R, sigma, n, beta) -> ShellParams:
    """One image of two shells from plain lists; beta (2, L') padded with zeros to L."""
    b = np.zeros((1, 2, L))
    beta = np.asarray(beta, float)
    b[0, :, :beta.shape[1]] = beta
    return ShellParams(torch.tensor([R], dtype=torch.float64), torch.tensor([sigma], dtype=torch.float64),
                       torch.tensor(b), torch.tensor([n], dtype=torch.int64))


def test_legendre_monomials_match_numpy():
    A = legendre_monomials(L)
    for i in range(L + 1):
        mono = npleg.leg2poly(np.eye(2 * L + 1)[:2 * i + 1][-1])[::2]  # P_2i in the power basis, even powers
        ref = np.zeros(L + 1)
        ref[:len(mono)] = mono
        assert_allclose(A[i], ref, rtol=1e-12, atol=1e-9, err_msg=f"P_{2 * i}")


# The generator's histograms are multinomial around the expected image: chi^2 per dof near 1.
CASES = {
    "thin and wide": ([0.35, 0.7], [0.005, 0.03], [0.6, -0.2, 0.1]),
    "near the edge": ([0.5, 0.96], [0.006, 0.009], [0.5, 0.3, 0.1]),
    "overlapping": ([0.6, 0.61], [0.008, 0.006], [1.0, 0.5, 0.2]),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_monte_carlo_histogram_matches_expected_image(case):
    R, sigma, b = CASES[case]
    beta = [b, [-0.3, 0.1, 0.0]]
    p = shells(R, sigma, [1_500_000, 2_500_000], beta)
    G = 128
    counts = SeviGenerator(GeneratorConfig(grid=G), "cpu", PriorConfig()).render(p, seed=11).images[0].double()
    mu = ExpectedImage(ForwardConfig(grid=G))(p)[0]
    # Folded quadrants: the same information, 4x the counts per cell.
    n, m = fold_image(counts), fold_image(mu)
    use = m > 30
    chi2 = float((((n - m) ** 2) / m)[use].sum())
    dof = int(use.sum())
    assert abs(chi2 / dof - 1) < 5 * math.sqrt(2 / dof), f"{case}: chi2/dof = {chi2 / dof:.3f} over {dof} cells"
    # Nothing is lost: what the expected image misses is what fell out of the field of view.
    assert abs(float(mu.sum()) - float(counts.sum())) < 5 * math.sqrt(float(counts.sum())) + 1, case


def test_thin_shell_matches_closed_form_projection():
    """A thin shell (sigma -> 0) projects to N I(z/R) / (pi R sqrt(R^2 - rho^2)) inside its radius."""
    R, N, G = 0.6, 1_000_000, 64
    b2, b4 = 0.7, -0.2
    p = shells([R, 0.8], [0.001, 0.001], [N, 0], [[b2, b4], [0, 0]])
    q = ExpectedImage(ForwardConfig(grid=G)).quadrant(p)[0].numpy()
    d = 2 / G
    t = (np.arange(32) + 0.5) / 32  # 32 x 32 midpoint rule of the closed form per pixel
    checked = 0
    for a in range(G // 2):
        for c in range(G // 2):
            if math.hypot((a + 1) * d, (c + 1) * d) > R - 0.1:
                continue
            x, z = np.meshgrid((a + t) * d, (c + t) * d, indexing="ij")
            cz = z / R
            I = 0.5 + b2 * npleg.legval(cz, [0, 0, 1]) + b4 * npleg.legval(cz, [0, 0, 0, 0, 1])
            ref = (N * I / (math.pi * R * np.sqrt(R * R - x * x - z * z))).mean() * d * d
            assert_allclose(q[a, c], ref, rtol=2e-4, err_msg=f"pixel ({a}, {c})")
            checked += 1
    assert checked > 100


@pytest.mark.parametrize("R,sigma", [(0.45, 0.006), (0.8, 0.02)])
def test_basis_column_sums_match_analytic_integrals(R, sigma):
    """Summed over x, the basis image of P_l in a column z in [z0, z1] is
    E_r[ integral_{z0/r}^{z1/r} P_l(c) dc ] (the fraction of a shell's electrons there), by numpy's
    Legendre antiderivatives and a trapezoid average over a fine grid of r (the clipped antiderivative
    has a kink at r = z, which a Gauss rule would miss): no code shared with sevi.physics.forward."""
    G = 64
    B = ExpectedImage(ForwardConfig(grid=G)).shell_basis(R, sigma).numpy()  # (L+1, G/2, G/2)
    cols = 2 * B.sum(axis=1)  # both signs of x: (L+1, G/2) over |z| bins
    r = np.linspace(R - 10 * sigma, R + 10 * sigma, 40001)
    pdf = np.exp(-0.5 * ((r - R) / sigma) ** 2) / (sigma * math.sqrt(2 * math.pi))
    edges = np.arange(G // 2 + 1) * 2 / G
    for i in range(L + 1):
        anti = npleg.Legendre.basis(2 * i).integ()
        F = anti(np.clip(edges[:, None] / r[None, :], -1, 1))  # (edges, r)
        ref = np.trapezoid((F[1:] - F[:-1]) * pdf, r, axis=1)
        assert_allclose(cols[i], ref, atol=1e-5, err_msg=f"P_{2 * i}, R={R}, sigma={sigma}")


def test_basis_totals():
    """Sum of B_0 over the field = 2 (I = 1/2 integrates to 1); B_l, l >= 2, sum to 0."""
    B = ExpectedImage(ForwardConfig(grid=128)).shell_basis(0.7, 0.007)
    tot = 4 * B.sum(dim=(1, 2))
    assert_allclose(tot[0].item(), 2.0, rtol=2e-5)
    assert_allclose(tot[1:].numpy(), 0.0, atol=2e-5)


def test_jacobian_matches_finite_differences_and_autograd():
    fm = ExpectedImage(ForwardConfig(grid=64))
    R, s, n = 0.55, 0.007, 2.0e6
    beta = torch.zeros(L, dtype=torch.float64)
    beta[:3] = torch.tensor([0.8, 0.3, -0.1])
    mu, J = fm.jacobian_quadrant(R, s, n, beta, resolution=s)

    def image(R_, s_, n_, beta_):  # the same discretisation at every step (resolution pinned)
        return fm.jacobian_quadrant(R_, s_, n_, beta_, resolution=s)[0]

    for k, (name, h) in enumerate((("R", 1e-5), ("sigma_R", 1e-6))):
        args_p, args_m = [R, s], [R, s]
        args_p[k] += h
        args_m[k] -= h
        fd = (image(*args_p, n, beta) - image(*args_m, n, beta)) / (2 * h)
        assert_allclose(J[k].numpy(), fd.numpy(), rtol=2e-3, atol=2e-3 * float(fd.abs().max()), err_msg=name)
    assert_allclose(J[2].numpy(), (mu / n).numpy(), rtol=1e-12, err_msg="n_electrons")
    e = torch.zeros(L, dtype=torch.float64)
    e[4] = 1e-3
    fd = (image(R, s, n, beta + e) - image(R, s, n, beta - e)) / 2e-3
    assert_allclose(J[3 + 4].numpy(), fd.numpy(), rtol=1e-8, atol=1e-9 * float(mu.max()), err_msg="beta_10")
    # autograd through the whole computation gives the same dmu/dR
    Rt = torch.tensor(R, dtype=torch.float64, requires_grad=True)
    g, = torch.autograd.grad(fm.jacobian_quadrant(Rt, s, n, beta, resolution=s)[0].sum(), Rt)
    assert_allclose(g.item(), J[0].sum().item(), rtol=1e-3)  # both discretise the same integral differently


def test_float32_output_and_symmetry():
    p = shells([0.4, 0.8], [0.006, 0.008], [100_000, 200_000], [[0.5, 0.2], [-0.2, 0.0]])
    fm = ExpectedImage(ForwardConfig(grid=32))
    img64 = fm(p)
    img32 = fm(p, dtype=torch.float32)
    assert img32.dtype == torch.float32
    assert_allclose(img32.numpy(), img64.numpy(), rtol=1e-6)
    assert torch.equal(img64, img64.flip(-1)) and torch.equal(img64, img64.flip(-2))
    assert torch.equal(fold_image(unfold_quadrant(fm.quadrant(p))), 4 * fm.quadrant(p))


@pytest.mark.parametrize("R,sigma,msg", [(1.2, 0.005, "R"), (0.05, 0.01, "10 sigma_R"), (0.5, 0.0, "sigma_R")])
def test_parameters_outside_the_domain_are_refused(R, sigma, msg):
    with pytest.raises(ValueError, match=msg):
        check_params([R], [sigma])


def test_negative_density_is_refused():
    p = shells([0.4, 0.8], [0.006, 0.008], [1000, 1000], [[1.5], [0.0]])  # 1/2 + 1.5 P_2 < 0 at c = 0
    with pytest.raises(ValueError, match="not a distribution"):
        ExpectedImage(ForwardConfig(grid=32))(p)


@pytest.mark.parametrize("G,R,sigma", [(256, 0.7, 0.005), (1024, 0.5, 0.005), (128, 0.9, 0.009)])
def test_rules_twice_as_fine_move_the_image_by_little(G, R, sigma):
    """Convergence of the default rules: every table step, quadrature and sub-pixel rule refined
    (twice as fine or wider) moves no basis pixel by more than 5e-4 of the brightest one."""
    import dataclasses
    base = ForwardConfig(grid=G)
    fine = dataclasses.replace(base, table_step_sigmas=1 / 64, inner_step_sigmas=1 / 8, panels_per_sigma=2,
                               hermite_nodes=64, width_sigmas=11, subpixel_per_sigma=6.0, min_subpixel=4)
    a = ExpectedImage(base).shell_basis(R, sigma)
    b = ExpectedImage(fine).shell_basis(R, sigma)
    err = float((a - b).abs().max() / b[0].abs().max())
    assert err < 5e-4, f"G={G}, R={R}, sigma={sigma}: {err:.1e} of the brightest pixel"
