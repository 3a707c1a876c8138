import numpy as np
import pytest
import torch
from numpy.polynomial import legendre as npleg
from numpy.testing import assert_allclose

from sevi.physics.legendre import (
    ValidityCheck,
    angular_cdf,
    angular_density,
    legendre_p,
)
from sevi.physics.prior import Prior


def test_legendre_p_matches_numpy():
    x = torch.linspace(-1, 1, 101, dtype=torch.float64)
    p = legendre_p(x, 25)
    for l in range(26):
        ref = npleg.legval(x.numpy(), [0] * l + [1])
        assert_allclose(p[:, l].numpy(), ref, atol=1e-12, err_msg=f"P_{l}")


def test_density_normalised_and_cdf_is_its_integral():
    beta = torch.tensor([0.8, 0.6, 0.3, 0.1, 0.05, 0.01], dtype=torch.float64)
    x = torch.linspace(-1, 1, 20001, dtype=torch.float64)
    dens = angular_density(x, beta)
    assert torch.trapezoid(dens, x).item() == pytest.approx(1.0, abs=1e-7)
    cdf = angular_cdf(x, beta)
    num = torch.cat([torch.zeros(1, dtype=x.dtype), torch.cumulative_trapezoid(dens, x)])
    assert_allclose(cdf.numpy(), num.numpy(), atol=1e-7, err_msg="closed-form CDF vs trapezoid integral")
    assert cdf[0].item() == pytest.approx(0.0, abs=1e-14) and cdf[-1].item() == pytest.approx(1.0, abs=1e-14)


def _exact_min(beta: np.ndarray) -> float:
    """min of I on [-1, 1] from the roots of I' (an independent reference: numpy polynomials)."""
    coef = np.zeros(2 * len(beta) + 1)
    coef[0] = 0.5
    coef[2::2] = beta
    crit = npleg.legroots(npleg.legder(coef))
    crit = crit[np.isreal(crit)].real
    pts = np.concatenate([[-1.0, 1.0], crit[(crit >= -1) & (crit <= 1)]])
    return npleg.legval(pts, coef).min()


@pytest.mark.parametrize("beta2", [-1.0, -0.5, -0.49, 0.0, 0.5, 0.99, 1.0, 2.0])
def test_validity_closed_cases(beta2):
    # I = 1/2 + b P2 with P2 in [-1/2, 1]: min I = min(1/2 + b, 1/2 - b/2). A minimum of exactly 0
    # (b = -1/2, b = 1) is rejected: the check proves I >= margin > 0, by design.
    expected = min(0.5 + beta2, 0.5 - beta2 / 2) > 0
    assert bool(ValidityCheck(1)(torch.tensor([[beta2]], dtype=torch.float64))[0]) == expected, f"beta2={beta2}"


def test_validity_never_accepts_a_negative_density():
    # Wide random beta sets (many invalid) against the exact minimum from the roots of I'.
    g = torch.Generator().manual_seed(3)
    beta = torch.randn(3000, 12, generator=g, dtype=torch.float64) * torch.tensor(Prior().config.beta_sigma, dtype=torch.float64)
    beta += torch.tensor(Prior().config.beta_mean, dtype=torch.float64)
    ok = ValidityCheck(12)(beta).numpy()
    exact = np.array([_exact_min(b) for b in beta.numpy()])
    assert (exact[ok] >= 0).all(), "an accepted beta set has I(x) < 0"
    # The proof's margin may reject valid sets whose minimum is within ~1e-4 of zero, no others.
    false_rejects = (~ok) & (exact > 1e-4)
    assert not false_rejects.any(), f"{false_rejects.sum()} clearly valid sets rejected"
    assert 0.05 < (~ok).mean() < 0.95, "the test set should hold both valid and invalid sets"
