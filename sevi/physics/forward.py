"""The exact expected detector image of two electron shells (pure torch; CPU or CUDA).

Physics (docs/forward_model.md has the derivation). Shell j emits N_j electrons with speed
r ~ N(R_j, sigma_Rj^2), cos(theta) with density I_j(c) = 1/2 + sum_i beta_2i P_2i(c) and phi uniform,
so its 3-D velocity density is

    n_j(r, theta) = N_j f_j(r) I_j(cos theta) / (2 pi r^2),     f_j = normal pdf (R_j, sigma_Rj).

The detector sees the projection along y, integrated over each pixel's area. Writing
P_l(z / r) = sum_k a_lk z^k r^-k (even k only, since l is even) makes the projection a sum of
separable terms,

    p_j(x, z) = N_j sum_l b_lj sum_k a_lk z^k q_k(rho),    rho = sqrt(x^2 + z^2),
    q_k(rho)  = (1/pi) integral_rho^inf f(r) r^(-k-1) / sqrt(r^2 - rho^2) dr,

with b_0 = 1/2 and b_2i = beta_2i. q_k is computed once per shell on a fine grid of rho by
Gauss-Legendre panels in u = sqrt(r - rho) (which removes the 1/sqrt singularity at r = rho), and
each pixel's integral of z^k q_k(rho) by a Gauss-Legendre product rule of S x S points per pixel,
S chosen so that the points are at most sigma_R / 3 apart. Both are checked against a rule twice
as fine in the tests (relative differences below 1e-4); float64 throughout, because the monomial
coefficients of P_24 reach 1e7 and cancel.

Conventions (docs/conventions.md): images (G, G), axis 0 = x, axis 1 = z (the polarisation
axis), both over [-1, 1]; pixel (i, k) covers x in [-1 + 2i/G, -1 + 2(i+1)/G), the binning of
``np.histogram2d(x, z, bins=G, range=[[-1, 1], [-1, 1]])`` and of ``sevi.physics.generator``. Values are
expected electron counts per pixel. Electrons whose (x, z) falls outside [-1, 1]^2 are not in any
pixel, as in the generator (where they are counted as ``out_of_view``).

Symmetry: I has even Legendre terms only and phi is uniform, so the image is symmetric under
x -> -x and z -> -z. Everything is computed on one quadrant (|x|, |z|) of G/2 x G/2 pixels and
mirrored; the *folded* quadrant (the four quadrants summed) is a sufficient statistic of a Poisson
image with this symmetry, so fits and the Fisher information use it.

Domain: 0 < sigma_R, 10 sigma_R <= R < 1 (so that the radial law's mass below r = 0, which the
generator folds back by |r|, is below 1e-22 and the shell's centre lies in the field), G even, and
beta sets whose density is non-negative on [-1, 1] where a density is meant (``check_params``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from fractions import Fraction
from functools import lru_cache

import numpy as np
import torch

from sevi.physics.prior import ShellParams


@dataclass(frozen=True)
class ForwardConfig:
    """How accurately the expected image is integrated. The defaults give < 1e-4 relative error."""

    grid: int = 1024  # G: pixels per side over [-1, 1]; even
    n_terms: int = 12  # L: beta_2 .. beta_2L per shell
    width_sigmas: float = 9.0  # the radial law is integrated over R +- width_sigmas * sigma_R
    table_step_sigmas: float = 1 / 32  # rho-table spacing across the shell, units of sigma_R (linear interpolation)
    inner_step_sigmas: float = 1 / 4  # rho-table spacing inside the shell (rho < R - width sigma)
    hermite_nodes: int = 32  # Gauss-Hermite nodes of the r-integral inside the shell
    panels_per_sigma: int = 1  # Gauss-Legendre panels per sigma_R of the r-integral across the shell
    panel_nodes: int = 6  # nodes per panel
    subpixel_per_sigma: float = 3.0  # sub-pixel points per sigma_R (per axis), at least min_subpixel
    min_subpixel: int = 2
    near_pixels: float = 60.0  # inner pixels this close to the shell's band get at least 2 x 2 points
    block_samples: int = 1 << 18  # sub-pixel samples evaluated at a time (memory bound)

    def __post_init__(self):
        if self.grid < 2 or self.grid % 2:
            raise ValueError(f"ForwardConfig.grid must be even and >= 2, got {self.grid}")
        if self.n_terms < 0:
            raise ValueError(f"ForwardConfig.n_terms must be >= 0, got {self.n_terms}")
        if min(self.width_sigmas, self.table_step_sigmas, self.subpixel_per_sigma) <= 0:
            raise ValueError("ForwardConfig: width_sigmas, table_step_sigmas and subpixel_per_sigma must be positive")
        if self.panels_per_sigma < 1 or self.panel_nodes < 1 or self.min_subpixel < 1:
            raise ValueError("ForwardConfig: panels_per_sigma, panel_nodes and min_subpixel must be >= 1")


@lru_cache(maxsize=None)
def legendre_monomials(n_terms: int) -> np.ndarray:
    """A[i, m] = coefficient of c^(2m) in P_2i(c), i, m = 0..n_terms: (L+1, L+1) float64, exact rationals.

    P_l(c) = sum_j (-1)^j (2l - 2j)! / (2^l j! (l - j)! (l - 2j)!) c^(l - 2j).
    """
    A = np.zeros((n_terms + 1, n_terms + 1))
    f = math.factorial
    for i in range(n_terms + 1):
        l = 2 * i
        for j in range(i + 1):
            A[i, (l - 2 * j) // 2] = float(Fraction((-1) ** j * f(2 * l - 2 * j), 2**l * f(j) * f(l - j) * f(l - 2 * j)))
    return A


@lru_cache(maxsize=None)
def _gauss_legendre_01(n: int) -> tuple[np.ndarray, np.ndarray]:
    """Gauss-Legendre nodes and weights on [0, 1]."""
    t, w = np.polynomial.legendre.leggauss(n)
    return (t + 1) / 2, w / 2


@lru_cache(maxsize=None)
def _gauss_hermite_normal(n: int) -> tuple[np.ndarray, np.ndarray]:
    """Nodes and weights of E[g(zeta)], zeta ~ N(0, 1) (probabilists' Gauss-Hermite)."""
    x, w = np.polynomial.hermite_e.hermegauss(n)
    return x, w / math.sqrt(2 * math.pi)


@dataclass(frozen=True)
class RadialGrid:
    """The rho nodes of a shell's q_k tables: ``n_inner`` nodes i * h_inner from 0, then ``n_band``
    nodes band_start + j * h_band (band_start = n_inner * h_inner <= R - width sigma)."""

    h_inner: float
    n_inner: int
    band_start: float
    h_band: float
    n_band: int

    @staticmethod
    def make(R: float, sigma: float, c: "ForwardConfig") -> "RadialGrid":
        h_in, h_b = sigma * c.inner_step_sigmas, sigma * c.table_step_sigmas
        n_in = max(0, int(math.floor((R - c.width_sigmas * sigma) / h_in)))
        start = n_in * h_in
        n_b = int(math.ceil((R + c.width_sigmas * sigma - start) / h_b)) + 3  # the last ones: q = 0
        return RadialGrid(h_in, n_in, start, h_b, n_b)

    def position(self, rho: torch.Tensor) -> torch.Tensor:
        """Fractional node index of each rho (linear interpolation between nodes)."""
        return torch.where(rho < self.band_start, rho / self.h_inner, self.n_inner + (rho - self.band_start) / self.h_band)


def check_params(R, sigma_R, beta=None, where: str = "parameters") -> None:
    """Raise ValueError, naming the first offending shell, for parameters outside the model's domain."""
    R = torch.as_tensor(R, dtype=torch.float64).reshape(-1)
    s = torch.as_tensor(sigma_R, dtype=torch.float64).reshape(-1)
    for name, bad, want in (("sigma_R", ~(s > 0), "> 0"), ("R", ~(R < 1), "< 1 (inside the field of view)"),
                            ("R", ~(R >= 10 * s), ">= 10 sigma_R")):
        if bool(bad.any()):
            k = int(bad.nonzero()[0])
            raise ValueError(f"{where}: shell {k}: {name} = R {float(R[k]):.6g}, sigma_R {float(s[k]):.6g}; "
                             f"the forward model needs {name} {want}")
    if beta is not None:
        from sevi.physics.legendre import ValidityCheck
        b = torch.as_tensor(beta, dtype=torch.float64)
        b = b.reshape(-1, b.shape[-1])
        ok = ValidityCheck(b.shape[-1], device=b.device)(b)
        if not bool(ok.all()):
            k = int((~ok).nonzero()[0])
            raise ValueError(f"{where}: shell {k}: its beta give an angular density I(x) < 0 somewhere on "
                             f"[-1, 1], which is not a distribution")


class ExpectedImage:
    """Configure once (grid, quadrature), call many.

    ``shell_moments(R, sigma_R)`` -> the per-electron pixel integrals of z^k q_k (the building
    block); ``shell_basis`` -> one image per Legendre order; ``quadrant(params)`` and
    ``__call__(params)`` -> expected counts. All are differentiable by autograd in R, sigma_R,
    beta and the electron counts, and ``jacobian_quadrant`` gives the derivatives in closed form.
    """

    def __init__(self, config: ForwardConfig = ForwardConfig(), device: str | torch.device = "cpu"):
        from sevi.runtime.device import pick_device
        self.config = config
        self.device = pick_device(device)
        self.A = torch.tensor(legendre_monomials(config.n_terms), dtype=torch.float64, device=self.device)
        self._axes: dict[int, tuple[torch.Tensor, torch.Tensor]] = {}  # S -> (coords, weights) along an axis

    @property
    def pixel(self) -> float:
        """Pixel side in detector units."""
        return 2.0 / self.config.grid

    def subpixel(self, sigma_R: float) -> int:
        c = self.config
        return max(c.min_subpixel, math.ceil(c.subpixel_per_sigma * self.pixel / sigma_R))

    def _axis(self, S: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Sub-pixel coordinates (G/2 * S,) along |x| or |z| from 0, and their weights (area fraction)."""
        if S not in self._axes:
            t, w = _gauss_legendre_01(S)
            h = self.config.grid // 2
            pos = (np.arange(h)[:, None] + t[None, :]) * self.pixel  # (G/2, S)
            self._axes[S] = (torch.tensor(pos.ravel(), dtype=torch.float64, device=self.device),
                             torch.tensor(np.tile(w, h), dtype=torch.float64, device=self.device))
        return self._axes[S]

    # -- the radial tables ----------------------------------------------------------------------
    def radial_tables(self, R, sigma_R, derivatives: bool = False, resolution: float | None = None):
        """q_k(rho) for k = 0, 2, ..., 2L on a two-part grid of rho: (C, L+1, n_nodes) float64, and the grid.

        C = 1, or 3 with ``derivatives`` (q, dq/dR, dq/dsigma_R). The grid (``RadialGrid``) is coarse
        (step ``inner_step_sigmas`` sigma) inside the shell, rho < R - width sigma, where every q_k is
        smooth on the scale of width * sigma and the r-integral has no singularity, so a Gauss-Hermite
        rule in (r - R) / sigma does it; and fine (step ``table_step_sigmas`` sigma) across the shell,
        where Gauss-Legendre panels in u = sqrt(r - rho) remove the 1/sqrt(r - rho) singularity.
        q_k = 0 beyond R + width sigma. ``resolution`` (default sigma_R) sets the grid's steps and
        extent; pinning it keeps the discretisation fixed, e.g. for finite differences in sigma_R.
        """
        c = self.config
        R = torch.as_tensor(R, dtype=torch.float64, device=self.device)
        s = torch.as_tensor(sigma_R, dtype=torch.float64, device=self.device)
        grid = RadialGrid.make(float(R.detach()), float(s.detach()) if resolution is None else resolution, c)
        dev = self.device
        # Inner nodes: (1/pi) E_zeta[ r^(-k-1) / sqrt(r^2 - rho^2) ], r = R + sigma zeta, zeta ~ N(0, 1).
        rho_in = torch.arange(grid.n_inner, dtype=torch.float64, device=dev)[:, None] * grid.h_inner  # (Ni, 1)
        zeta, wz = (torch.tensor(v, dtype=torch.float64, device=dev) for v in _gauss_hermite_normal(c.hermite_nodes))
        r_in = R + s * zeta  # (m,)
        gap = r_in * r_in - rho_in * rho_in  # > 0 except at outermost nodes whose weight is < 1e-20
        base_in = torch.where(gap > 0, wz / (math.pi * gap.clamp_min(1e-300).sqrt()), torch.zeros_like(gap))  # (Ni, m)
        w_in = [base_in]
        if derivatives:
            w_in += [base_in * zeta / s, base_in * (zeta * zeta - 1) / s]  # df/dR = f zeta/s, df/ds = f (zeta^2-1)/s
        # Band nodes: panels in r from R - width sigma to R + width sigma, in u = sqrt(r - rho).
        rho_b = (grid.band_start + torch.arange(grid.n_band, dtype=torch.float64, device=dev) * grid.h_band)[:, None, None]
        n_pan = int(math.ceil(2 * c.width_sigmas * c.panels_per_sigma))
        edges = R - c.width_sigmas * s + torch.arange(n_pan + 1, dtype=torch.float64, device=dev) * (
            2 * c.width_sigmas * s / n_pan)  # (P+1,)
        u_edge = (edges[None, :, None] - rho_b).clamp_min(0).sqrt()  # (Nb, P+1, 1)
        t, w = (torch.tensor(v, dtype=torch.float64, device=dev) for v in _gauss_legendre_01(c.panel_nodes))
        du = u_edge[:, 1:] - u_edge[:, :-1]  # (Nb, P, 1): zero for panels below rho
        u = u_edge[:, :-1] + du * t  # (Nb, P, m)
        r_b = rho_b + u * u
        zb = (r_b - R) / s
        f = torch.exp(-0.5 * zb * zb) / (s * math.sqrt(2 * math.pi))
        # dr / sqrt(r^2 - rho^2) = 2 du / sqrt(2 rho + u^2); 1/pi from the projection.
        base_b = f * (du * w) * 2 / (math.pi * (2 * rho_b + u * u).sqrt())  # (Nb, P, m)
        w_b = [base_b]
        if derivatives:
            w_b += [base_b * zb / s, base_b * (zb * zb - 1) / s]
        out = torch.empty(len(w_in), c.n_terms + 1, grid.n_inner + grid.n_band, dtype=torch.float64, device=dev)
        p_in, p_b = 1 / r_in, 1 / r_b  # r^(-k-1) for k = 0
        inv2_in, inv2_b = p_in * p_in, p_b * p_b
        for k in range(c.n_terms + 1):
            for ci in range(len(w_in)):
                out[ci, k, :grid.n_inner] = (w_in[ci] * p_in).sum(-1)
                out[ci, k, grid.n_inner:] = (w_b[ci] * p_b).sum(dim=(1, 2))
            p_in, p_b = p_in * inv2_in, p_b * inv2_b
        return out, grid

    # -- pixel integrals ------------------------------------------------------------------------
    def shell_moments(self, R, sigma_R, derivatives: bool = False, resolution: float | None = None) -> torch.Tensor:
        """Per emitted electron, the integral over each quadrant pixel of z^k q_k(rho), k = 0, 2, .., 2L.

        Returns (C, L+1, G/2, G/2) float64; C = 1, or 3 with ``derivatives`` (value, d/dR, d/dsigma_R).
        Pixels inside the shell use ``inner_subpixel`` points per axis (enough for the angular
        structure of P_2L); pixels that the shell's band R +- width sigma crosses use ``subpixel``
        (points at most sigma_R / subpixel_per_sigma apart); pixels beyond it are zero.
        """
        c = self.config
        tables, grid = self.radial_tables(R, sigma_R, derivatives, resolution)  # (C, K, Nn)
        Rf = float(torch.as_tensor(R).detach())
        sf = float(torch.as_tensor(sigma_R).detach()) if resolution is None else resolution
        half, d = c.grid // 2, self.pixel
        lo_band, hi_band = Rf - c.width_sigmas * sf, Rf + c.width_sigmas * sf
        out = torch.zeros(tables.shape[0], tables.shape[1], half, half, dtype=torch.float64, device=self.device)
        edge = torch.arange(half + 1, dtype=torch.float64, device=self.device) * d
        rho_min = torch.sqrt(edge[:-1, None] ** 2 + edge[None, :-1] ** 2)  # (H, W) nearest corner
        rho_max = torch.sqrt(edge[1:, None] ** 2 + edge[None, 1:] ** 2)  # farthest corner
        inner = rho_max <= lo_band
        band = (rho_max > lo_band) & (rho_min < hi_band)
        # Just inside the band q_k ~ 1/sqrt(R - rho) still curves on the scale R - rho: a pixel
        # closer than near_pixels pixels to it takes at least a 2-point rule (midpoint error ~1e-3 there).
        near = inner & (lo_band - rho_max < c.near_pixels * d)
        S_in = self.inner_subpixel(Rf)
        self._integrate(out, tables, grid, (inner & ~near).nonzero(), S_in)
        self._integrate(out, tables, grid, near.nonzero(), max(2, S_in))
        self._integrate(out, tables, grid, band.nonzero(), max(self.subpixel(sf), self.inner_subpixel(Rf)))
        return out

    def inner_subpixel(self, R: float) -> int:
        """Points per axis for pixels inside a shell: at most R / (4 L) apart (P_2L's angular scale)."""
        c = self.config
        return max(1, math.ceil(4 * self.pixel * max(c.n_terms, 1) / R))

    def _integrate(self, out, tables, grid, pixels: torch.Tensor, S: int) -> None:
        """Gauss-Legendre S x S rule over the listed quadrant pixels (n, 2) -> out[:, :, a, b]."""
        if len(pixels) == 0:
            return
        C, K, n_nodes = tables.shape
        t, w = (torch.tensor(v, dtype=torch.float64, device=self.device) for v in _gauss_legendre_01(S))
        d = self.pixel
        per_block = max(1, self.config.block_samples // (S * S))
        for p0 in range(0, len(pixels), per_block):
            pix = pixels[p0:p0 + per_block]  # (n, 2)
            x = (pix[:, 0:1].to(torch.float64) + t) * d  # (n, S)
            z = (pix[:, 1:2].to(torch.float64) + t) * d  # (n, S)
            rho = torch.sqrt(x[:, :, None] ** 2 + z[:, None, :] ** 2)  # (n, S, S)
            pos = grid.position(rho).clamp_max(n_nodes - 2)
            i0 = pos.floor().long()
            frac = pos - i0
            wxz = (w[:, None] * w[None, :]) * (d * d)  # (S, S)
            z2 = z[:, None, :] ** 2  # (n, 1, S)
            zk = torch.ones_like(z2)
            for k in range(K):
                v = tables[:, k, i0] * (1 - frac) + tables[:, k, i0 + 1] * frac  # (C, n, S, S)
                out[:, k, pix[:, 0], pix[:, 1]] = (v * (zk * wxz)).sum(dim=(-2, -1))
                zk = zk * z2

    def shell_basis(self, R, sigma_R) -> torch.Tensor:
        """Expected counts per emitted electron of each Legendre order, one quadrant:
        (L+1, G/2, G/2) for P_0, P_2, ..., P_2L. A shell's quadrant is N (B_0 / 2 + sum_i beta_2i B_2i)."""
        M = self.shell_moments(R, sigma_R)[0]  # (K, H, W)
        return torch.einsum("lk,khw->lhw", self.A, M)

    # -- images ---------------------------------------------------------------------------------
    def _coefficients(self, beta: torch.Tensor) -> torch.Tensor:
        """b = (1/2, beta_2, ..., beta_2L) mapped onto monomials: (..., K)."""
        b = torch.cat([torch.full_like(beta[..., :1], 0.5), beta], dim=-1).to(torch.float64)
        return b @ self.A

    def quadrant(self, params: ShellParams, check: bool = True) -> torch.Tensor:
        """Expected counts of one quadrant (|x|, |z|), per pixel (not folded): (n, G/2, G/2) float64."""
        if params.beta.shape[-1] != self.config.n_terms:
            raise ValueError(f"beta has {params.beta.shape[-1]} terms per shell, the forward model {self.config.n_terms}")
        if check:
            check_params(params.R, params.sigma_R, params.beta)
        return torch.stack([sum(self.shell_quadrant(params.R[i, j], params.sigma_R[i, j], params.n_electrons[i, j],
                                                    params.beta[i, j]) for j in range(2))
                            for i in range(len(params))])

    def shell_quadrant(self, R, sigma_R, n_electrons, beta) -> torch.Tensor:
        """One shell's expected counts of one quadrant, per pixel (not folded): (G/2, G/2) float64."""
        M = self.shell_moments(R, sigma_R)[0]  # (K, H, W)
        n = torch.as_tensor(n_electrons, dtype=torch.float64, device=self.device)
        return n * torch.einsum("k,khw->hw", self._coefficients(torch.as_tensor(beta, device=self.device)), M)

    def folded(self, R, sigma_R, n_electrons, beta, jacobian: bool = False):
        """Both shells on the folded quadrant (the four mirror pixels summed), flattened: mu (H W,) and,
        with ``jacobian``, J (2 (3 + L), H W) in ``sevi.physics.information.parameter_names`` order, else None.
        R, sigma_R, n_electrons (2,); beta (2, L)."""
        mus, Js = [], []
        for j in range(2):
            if jacobian:
                mu, J = self.jacobian_quadrant(float(R[j]), float(sigma_R[j]), n_electrons[j], beta[j])
                Js.append(4 * J.reshape(J.shape[0], -1))
            else:
                mu = self.shell_quadrant(float(R[j]), float(sigma_R[j]), n_electrons[j], beta[j])
            mus.append(mu)
        return (4 * (mus[0] + mus[1])).reshape(-1), (torch.cat(Js) if jacobian else None)

    def __call__(self, params: ShellParams, check: bool = True, dtype: torch.dtype = torch.float64) -> torch.Tensor:
        """Expected counts per pixel of the full image: (n, G, G), computed in float64, returned as ``dtype``."""
        return unfold_quadrant(self.quadrant(params, check)).to(dtype)

    def jacobian_quadrant(self, R, sigma_R, n_electrons, beta, resolution: float | None = None):
        """One shell's quadrant mu (H, W) and its derivatives (2 + 1 + L, H, W) in closed form, in the
        order (R, sigma_R, n_electrons, beta_2 .. beta_2L). ``resolution``: see ``radial_tables``."""
        M = self.shell_moments(R, sigma_R, derivatives=True, resolution=resolution)  # (3, K, H, W)
        coef = self._coefficients(torch.as_tensor(beta, device=self.device))  # (K,)
        n = torch.as_tensor(n_electrons, dtype=torch.float64, device=self.device)
        per_e = torch.einsum("k,ckhw->chw", coef, M)  # (3, H, W): value, d/dR, d/dsigma per electron
        basis = torch.einsum("lk,khw->lhw", self.A[1:], M[0])  # (L, H, W)
        J = torch.cat([n * per_e[1:], per_e[:1], n * basis])  # (2 + 1 + L, H, W)
        return n * per_e[0], J


def unfold_quadrant(q: torch.Tensor) -> torch.Tensor:
    """(..., G/2, G/2) quadrant indexed by (|x|, |z|) -> (..., G, G) full image by mirror symmetry."""
    top = torch.cat([q.flip(-1), q], dim=-1)  # (.., G/2, G): z from -1 to 1
    return torch.cat([top.flip(-2), top], dim=-2)


def fold_image(img: torch.Tensor) -> torch.Tensor:
    """(..., G, G) -> (..., G/2, G/2): the four quadrants summed, index (|x|, |z|) (sevi.regressor.features)."""
    h = img.shape[-1] // 2
    return img[..., h:, h:] + img[..., :h, h:].flip(-2) + img[..., h:, :h].flip(-1) + img[..., :h, :h].flip(-2, -1)
