"""Legendre angular distributions in the course's convention.

A shell's angular distribution is the density of x = cos(theta) on [-1, 1]

    I(x) = 1/2 + sum_{i=1..L} beta_{2i} P_{2i}(x),

normalised because the integral of P_l over [-1, 1] is 0 for l >= 1 and 2 for l = 0.
``beta`` tensors hold the L even coefficients beta_2, beta_4, ..., beta_2L in their last axis
(index 0 is beta_2: the course's "beta starting at i = 1").

Everything here is a pure function over torch tensors; the device and dtype follow the input.
"""

from __future__ import annotations

import torch


def legendre_p(x: torch.Tensor, lmax: int) -> torch.Tensor:
    """P_0(x) .. P_lmax(x) by Bonnet's recurrence.

    Args:
        x: any shape (...).
        lmax: highest degree, >= 0.
    Returns:
        (..., lmax + 1): P_l(x) in the last axis.
    """
    if lmax < 0:
        raise ValueError(f"lmax must be >= 0, got {lmax}")
    p = [torch.ones_like(x), x]
    for l in range(1, lmax):
        # (l + 1) P_{l+1} = (2l + 1) x P_l - l P_{l-1}
        p.append(((2 * l + 1) * x * p[l] - l * p[l - 1]) / (l + 1))
    return torch.stack(p[: lmax + 1], dim=-1)


def even_legendre(x: torch.Tensor, n_terms: int) -> torch.Tensor:
    """P_2(x), P_4(x), ..., P_{2 n_terms}(x): shape (..., n_terms)."""
    return legendre_p(x, 2 * n_terms)[..., 2::2]


def angular_density(x: torch.Tensor, beta: torch.Tensor) -> torch.Tensor:
    """I(x) = 1/2 + sum_i beta_{2i} P_{2i}(x).

    Args:
        x: (..., n) points in [-1, 1].
        beta: (..., L), broadcastable against x's leading axes.
    Returns:
        (..., n) density values (1/unit of cos theta).
    """
    p = even_legendre(x, beta.shape[-1])  # (..., n, L)
    return 0.5 + (p * beta.unsqueeze(-2)).sum(-1)


def cdf_basis(x: torch.Tensor, n_terms: int) -> torch.Tensor:
    """integral_{-1}^{x} P_{2i}(t) dt for i = 1..n_terms: (..., n_terms) for x (...).

    Closed form: integral_{-1}^{x} P_l(t) dt = (P_{l+1}(x) - P_{l-1}(x)) / (2l + 1) for l >= 1.
    """
    p = legendre_p(x, 2 * n_terms + 1)  # (..., 2L + 2)
    l = torch.arange(2, 2 * n_terms + 1, 2, device=x.device)
    return (p[..., l + 1] - p[..., l - 1]) / (2 * l + 1).to(x.dtype)


def angular_cdf(x: torch.Tensor, beta: torch.Tensor) -> torch.Tensor:
    """Closed-form cumulative distribution of I on [-1, x], exact up to rounding (no quadrature).

    Args:
        x: (..., n) points in [-1, 1]; beta: (..., L).
    Returns:
        (..., n) values in [0, 1] (exactly 0 at -1 and 1 at +1 for a valid density).
    """
    return 0.5 * (x + 1) + (cdf_basis(x, beta.shape[-1]) * beta.unsqueeze(-2)).sum(-1)


def _max_second_derivative(n_terms: int, dtype, device) -> torch.Tensor:
    """max over [-1, 1] of |P_{2i}''(x)|, i = 1..n_terms: (n_terms,).

    |P_l''| is largest at the end points, where P_l''(1) = (l-1) l (l+1) (l+2) / 8.
    """
    l = torch.arange(2, 2 * n_terms + 1, 2, dtype=dtype, device=device)
    return (l - 1) * l * (l + 1) * (l + 2) / 8


class ValidityCheck:
    """Decides exactly whether I(x) >= 0 on all of [-1, 1] for a batch of beta sets.

    I is evaluated on a uniform grid of step h (float64). Between two grid nodes a C^2 function
    lies above its chord minus M2 h^2 / 8, where M2 bounds |I''| (from the end-point maxima of
    |P_l''|). So ``min over nodes of I  >=  M2 h^2 / 8`` proves I >= 0 everywhere: an accepted
    set can never go negative, and the only cost is rejecting densities whose minimum is within
    that margin of zero (about 1e-5 for the default prior with 8193 nodes).

    Configure once (tables on the device), call many.
    """

    block_rows = 2048  # beta sets evaluated at a time: 2048 x 8193 float64 = 134 MB

    def __init__(self, n_terms: int, n_grid: int = 8193, device: torch.device | str = "cpu"):
        if n_grid < 3:
            raise ValueError(f"n_grid must be >= 3, got {n_grid}")
        self.n_terms = n_terms
        self.h = 2.0 / (n_grid - 1)
        x = torch.linspace(-1.0, 1.0, n_grid, dtype=torch.float64, device=device)
        self._p = even_legendre(x, n_terms)  # (n_grid, L)
        self._m2 = _max_second_derivative(n_terms, torch.float64, device)  # (L,)

    def minimum_bound(self, beta: torch.Tensor) -> torch.Tensor:
        """A proven lower bound of min_{x in [-1,1]} I(x): (...,) for beta (..., L)."""
        if beta.shape[-1] != self.n_terms:
            raise ValueError(f"beta has {beta.shape[-1]} terms, the check was built for {self.n_terms}")
        b = beta.to(self._p)
        flat = b.reshape(-1, self.n_terms)
        # In blocks of rows: the (rows, n_grid) evaluation is the only large temporary.
        grid_min = torch.cat([(0.5 + blk @ self._p.T).amin(-1) for blk in flat.split(self.block_rows)]) \
            if len(flat) else flat.new_zeros(0)
        return grid_min.reshape(b.shape[:-1]) - (b.abs() @ self._m2) * self.h**2 / 8

    def __call__(self, beta: torch.Tensor) -> torch.Tensor:
        """Boolean (...,): True where I(x) >= 0 on [-1, 1] is proven."""
        return self.minimum_bound(beta) >= 0
