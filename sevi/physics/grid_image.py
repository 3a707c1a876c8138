"""The exact expected image of electron shells on any pixel grid, around any centre (pure torch, float64).

``sevi.physics.forward.ExpectedImage`` computes the course's image: a square grid whose centre is the
corner between its two middle pixels, so one quadrant is computed and mirrored. A lab's image is any
size, cropped anywhere, and its centre (x0, z0) is a fitted parameter that falls anywhere inside a
pixel. This module integrates the same projected density p(x, z) (docs/forward_model.md) over the
pixels of such a grid, with the same radial tables q_k (``ExpectedImage.radial_tables``), and gives
the derivatives in closed form, the centre's included.

Coordinates (docs/conventions.md, "Any image"): pixel (i, k) of an (nx, nz) image is centred on the
index position (i, k) and covers [i - 1/2, i + 1/2) x [k - 1/2, k + 1/2) in pixel units; axis 0 is x,
axis 1 is z (the polarisation axis). The centre (x0, z0) is in the same index units (the course's
1024^2 image has x0 = z0 = 511.5). Detector coordinates are x = (index - x0) * pixel_size (detector
units per pixel; R and sigma_R are in detector units).

How (exact up to the quadrature, as ``ExpectedImage``):

* The density is even in x and in z about the centre, so its integral from the centre,
  C(u, v) = integral_0^u integral_0^v p, is odd in each argument: C(-u, v) = -C(u, v). A pixel's
  count is C at its four corners, C(b, d) - C(a, d) - C(b, c) + C(a, c).
* C is needed at the pixel edges' distances from the centre, |e_i| = |i - 1/2 - x0| pixel_size. Their
  sorted union (and 0) cut the quadrant into cells no wider than a pixel; each cell's integral of
  z^k q_k(rho) is a Gauss-Legendre product rule with the point spacing of ``ExpectedImage`` (sigma_R / 3
  across the shell's band, R / (4 L) inside it, at least 2 x 2 near the band), and C is their
  cumulative sum.
* The centre: dC/du (u, v) = integral_0^v p(u, z) dz, a line integral along a pixel edge (a
  Gauss-Legendre rule on each cell's side, summed), so d mu / d x0 = -pixel_size (the corner sum of
  those line integrals): the difference of the density's integrals along the pixel's two edges.

Values are expected counts per pixel of the ideal detector (multiply by a gain map outside).
Electrons that fall outside the grid are in no pixel.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass

import numpy as np
import torch

from sevi.physics.forward import ExpectedImage, ForwardConfig, _gauss_legendre_01

__all__ = ["PixelGrid", "GridImage", "shell_parameter_names"]


def shell_parameter_names(n_terms: int) -> list[str]:
    """Per shell, the order of its parameters in a Jacobian: R, sigma_R, N, beta_2 .. beta_2L."""
    return ["R", "sigma_R", "N"] + [f"beta_{2 * i}" for i in range(1, n_terms + 1)]


@dataclass(frozen=True)
class PixelGrid:
    """An image's pixels: ``shape`` (nx, nz) pixels along axis 0 (x) and axis 1 (z), each
    ``pixel_size`` detector units wide (docs/conventions.md)."""

    shape: tuple[int, int]
    pixel_size: float

    def __post_init__(self):
        if len(self.shape) != 2 or min(self.shape) < 1:
            raise ValueError(f"PixelGrid.shape must be two positive pixel counts, got {self.shape}")
        if not (self.pixel_size > 0 and math.isfinite(self.pixel_size)):
            raise ValueError(f"PixelGrid.pixel_size must be a positive number of detector units, got {self.pixel_size}")

    def binned(self, k: int) -> "PixelGrid":
        """The grid of k x k blocks (the image's edge cut to whole blocks)."""
        return PixelGrid((self.shape[0] // k, self.shape[1] // k), self.pixel_size * k)


def _axis(n: int, c0: float, ps: float):
    """Breakpoints of one axis: the sorted distances from the centre of the n + 1 pixel edges, with 0
    (B, (m + 1,)), each edge's index into B (n + 1,) and its sign (n + 1,)."""
    e = (np.arange(n + 1) - 0.5 - c0) * ps
    a = np.abs(e)
    B, idx = np.unique(np.r_[0.0, a], return_inverse=True)
    return B, idx[1:], np.sign(e)


class GridImage:
    """Configure once (grid, Legendre terms, quadrature), call per shell and centre.

    ``shell(R, sigma_R, N, beta, centre, jacobian)`` -> mu (nx, nz) and, with ``jacobian``, the
    derivatives (2 + 3 + L, nx, nz) in the order (x0, z0, R, sigma_R, N, beta_2 .. beta_2L);
    ``basis(R, sigma_R, centre)`` -> (L + 1, nx, nz), the counts per electron of each Legendre order
    (a shell is N (B_0 / 2 + sum_i beta_2i B_2i)).
    """

    def __init__(self, grid: PixelGrid, n_terms: int, config: ForwardConfig | None = None, device="cpu"):
        cfg = config or ForwardConfig()
        # ExpectedImage is used for its radial tables and Legendre monomials only; its own grid is unused.
        self.fm = ExpectedImage(dataclasses.replace(cfg, n_terms=n_terms, grid=2), device)
        self.config = self.fm.config
        self.grid = grid
        self.L = n_terms
        self.device = self.fm.device
        self.A = self.fm.A  # (L+1, K): coefficient of c^(2m) in P_2i

    # -- quadrature ------------------------------------------------------------------------------
    def _S(self, R: float, sigma: float) -> tuple[int, int, int]:
        """Points per axis (inner, near the band, across the band) of a cell at most a pixel wide."""
        c, ps = self.config, self.grid.pixel_size
        s_in = max(1, math.ceil(4 * ps * max(self.L, 1) / R))
        s_band = max(c.min_subpixel, math.ceil(c.subpixel_per_sigma * ps / sigma), s_in)
        return s_in, max(2, s_in), s_band

    def _classes(self, R, sigma, rho_min, rho_max):
        """Boolean masks (inner-far, inner-near, band) over cells or segments by their rho range."""
        c, ps = self.config, self.grid.pixel_size
        lo, hi = R - c.width_sigmas * sigma, R + c.width_sigmas * sigma
        inner = rho_max <= lo
        band = (rho_max > lo) & (rho_min < hi)
        near = inner & (lo - rho_max < c.near_pixels * ps)
        return inner & ~near, near, band

    @staticmethod
    def _interp(tables, rgrid, rho):
        """Tables (Nn, C, K) (nodes first: one contiguous gather per point) at rho (...): (..., C, K)."""
        n_nodes = tables.shape[0]
        pos = rgrid.position(rho).clamp_max(n_nodes - 2)
        i0 = pos.floor().long()
        frac = (pos - i0)[..., None, None]
        return tables[i0] * (1 - frac) + tables[i0 + 1] * frac

    def _cells(self, tables, rgrid, R, sigma, Bx, Bz) -> torch.Tensor:
        """Integrals of z^k q_k over every cell of the quadrant cut by Bx x Bz: (C, K, mx, mz)."""
        C, K, _ = tables.shape
        dev = self.device
        bx, bz = torch.as_tensor(Bx, device=dev), torch.as_tensor(Bz, device=dev)
        out = torch.zeros(C, K, len(Bx) - 1, len(Bz) - 1, dtype=torch.float64, device=dev)
        rho_min = torch.sqrt(bx[:-1, None] ** 2 + bz[None, :-1] ** 2)
        rho_max = torch.sqrt(bx[1:, None] ** 2 + bz[None, 1:] ** 2)
        tab = tables.permute(2, 0, 1).contiguous()  # (Nn, C, K)
        for mask, S in zip(self._classes(R, sigma, rho_min, rho_max), self._S(R, sigma)):
            cells = mask.nonzero()
            if len(cells) == 0:
                continue
            t, w = (torch.tensor(v, dtype=torch.float64, device=dev) for v in _gauss_legendre_01(S))
            per_block = max(1, self.config.block_samples // (S * S))
            for p0 in range(0, len(cells), per_block):
                cl = cells[p0:p0 + per_block]
                x0, wx = bx[cl[:, 0]], bx[cl[:, 0] + 1] - bx[cl[:, 0]]
                z0, wz = bz[cl[:, 1]], bz[cl[:, 1] + 1] - bz[cl[:, 1]]
                x = x0[:, None] + wx[:, None] * t  # (n, S)
                z = z0[:, None] + wz[:, None] * t
                rho = torch.sqrt(x[:, :, None] ** 2 + z[:, None, :] ** 2)  # (n, S, S)
                v = self._interp(tab, rgrid, rho)  # (n, S, S, C, K)
                wxz = (wx[:, None] * w)[:, :, None] * (wz[:, None] * w)[:, None, :]  # (n, S, S)
                zk = (z[:, None, :, None] ** 2) ** torch.arange(K, device=dev, dtype=torch.float64)  # (n, 1, S, K)
                out[:, :, cl[:, 0], cl[:, 1]] = torch.einsum("nabck,nabk->ckn", v, zk * wxz[..., None])
        return out

    def _lines(self, tables, rgrid, R, sigma, Bx, Bz, along_z: bool) -> torch.Tensor:
        """Integrals of z^k q_k along the cell edges: along z at every x = Bx[a] over [Bz[b], Bz[b+1]]
        (``along_z``), or along x at every z = Bz[b] over [Bx[a], Bx[a+1]]: (K, mx+1, mz) or (K, mx, mz+1)."""
        K = tables.shape[1]
        dev = self.device
        bx, bz = torch.as_tensor(Bx, device=dev), torch.as_tensor(Bz, device=dev)
        if along_z:
            fixed, lo_, hi_ = bx[:, None], bz[None, :-1], bz[None, 1:]
        else:
            fixed, lo_, hi_ = bz[None, :], bx[:-1, None], bx[1:, None]
        fixed, lo_, hi_ = torch.broadcast_tensors(fixed, lo_, hi_)
        out = torch.zeros(K, *fixed.shape, dtype=torch.float64, device=dev)
        rho_min, rho_max = torch.sqrt(fixed ** 2 + lo_ ** 2), torch.sqrt(fixed ** 2 + hi_ ** 2)
        tab = tables[:1].permute(2, 0, 1).contiguous()  # (Nn, 1, K)
        for mask, S in zip(self._classes(R, sigma, rho_min, rho_max), self._S(R, sigma)):
            idx = mask.nonzero()
            if len(idx) == 0:
                continue
            t, w = (torch.tensor(v, dtype=torch.float64, device=dev) for v in _gauss_legendre_01(S))
            f, a, b = (q[idx[:, 0], idx[:, 1]] for q in (fixed, lo_, hi_))
            s = a[:, None] + (b - a)[:, None] * t  # (n, S) the running coordinate
            rho = torch.sqrt(f[:, None] ** 2 + s ** 2)
            v = self._interp(tab, rgrid, rho)[..., 0, :]  # (n, S, K)
            zc = s if along_z else f[:, None].expand_as(s)
            zk = (zc[..., None] ** 2) ** torch.arange(K, device=dev, dtype=torch.float64)  # (n, S, K)
            out[:, idx[:, 0], idx[:, 1]] = torch.einsum("nsk,nsk,ns->kn", v, zk, (b - a)[:, None] * w)
        return out

    # -- images ----------------------------------------------------------------------------------
    def _setup(self, centre):
        (nx, nz), ps = self.grid.shape, self.grid.pixel_size
        return _axis(nx, float(centre[0]), ps), _axis(nz, float(centre[1]), ps)

    @staticmethod
    def _corners(Cum, ix, sx, iz, sz):
        """Pixel sums from the cumulative integral at the signed corners: Cum (..., mx+1, mz+1) -> (..., nx, nz)."""
        dev = Cum.device
        ix_t, iz_t = torch.as_tensor(ix, device=dev), torch.as_tensor(iz, device=dev)
        s = torch.as_tensor(np.outer(sx, sz), dtype=torch.float64, device=dev)
        A = Cum[..., ix_t, :][..., iz_t] * s
        return A[..., 1:, 1:] - A[..., :-1, 1:] - A[..., 1:, :-1] + A[..., :-1, :-1]

    @staticmethod
    def _cumulative(cells: torch.Tensor) -> torch.Tensor:
        """(..., mx, mz) cell integrals -> (..., mx+1, mz+1) integrals from the centre to each node."""
        c = torch.nn.functional.pad(cells, (1, 0, 1, 0))
        return c.cumsum(-1).cumsum(-2)

    def _coefficients(self, beta) -> torch.Tensor:
        b = torch.as_tensor(beta, dtype=torch.float64, device=self.device).reshape(-1)
        return torch.cat([b.new_full((1,), 0.5), b]) @ self.A  # (K,)

    def basis(self, R: float, sigma_R: float, centre) -> torch.Tensor:
        """Counts per emitted electron of each Legendre order P_0, P_2, .., P_2L: (L + 1, nx, nz)."""
        (Bx, ix, sx), (Bz, iz, sz) = self._setup(centre)
        tables, rgrid = self.fm.radial_tables(R, sigma_R)
        cells = self._cells(tables, rgrid, float(R), float(sigma_R), Bx, Bz)[0]  # (K, mx, mz)
        per_l = torch.einsum("lk,kab->lab", self.A, cells)
        return self._corners(self._cumulative(per_l), ix, sx, iz, sz)

    def shell(self, R: float, sigma_R: float, n_electrons, beta, centre, jacobian: bool = False,
              resolution: float | None = None):
        """One shell's expected counts per pixel (nx, nz) and, with ``jacobian``, d mu / d(x0, z0, R,
        sigma_R, N, beta_2 .. beta_2L): (5 + L, nx, nz) (else None). Centre in pixel index units.
        ``resolution`` pins the radial tables' grid (``ExpectedImage.radial_tables``)."""
        (Bx, ix, sx), (Bz, iz, sz) = self._setup(centre)
        R, sigma_R = float(R), float(sigma_R)
        tables, rgrid = self.fm.radial_tables(R, sigma_R, derivatives=jacobian, resolution=resolution)
        cells = self._cells(tables, rgrid, R, sigma_R, Bx, Bz)  # (C, K, mx, mz)
        coef = self._coefficients(beta)
        N = float(n_electrons)
        if not jacobian:
            per_e = self._corners(self._cumulative(torch.einsum("k,kab->ab", coef, cells[0])), ix, sx, iz, sz)
            return N * per_e.clamp_min(0), None  # corner sums round to +-1e-11 of the total where p = 0
        per_c = torch.einsum("k,ckab->cab", coef, cells)  # (3, mx, mz): value, d/dR, d/dsigma per electron
        per_l = torch.einsum("lk,kab->lab", self.A[1:], cells[0])  # (L, mx, mz)
        pix = self._corners(self._cumulative(torch.cat([per_c, per_l])), ix, sx, iz, sz)  # (3 + L, nx, nz)
        ps = self.grid.pixel_size
        # d/dx0: -ps * sum over corners of dC/du = s_v * (line integral along z at |u| up to |v|)
        lz = torch.einsum("k,kab->ab", coef, self._lines(tables, rgrid, R, sigma_R, Bx, Bz, True))  # (mx+1, mz)
        Dx = torch.nn.functional.pad(lz, (1, 0)).cumsum(-1)  # (mx+1, mz+1)
        lx = torch.einsum("k,kab->ab", coef, self._lines(tables, rgrid, R, sigma_R, Bx, Bz, False))  # (mx, mz+1)
        Dz = torch.nn.functional.pad(lx, (0, 0, 1, 0)).cumsum(-2)  # (mx+1, mz+1)
        dx0 = -ps * self._corners(Dx, ix, np.ones_like(sx), iz, sz)
        dz0 = -ps * self._corners(Dz, ix, sx, iz, np.ones_like(sz))
        J = torch.cat([N * torch.stack([dx0, dz0]), N * pix[1:3], pix[:1], N * pix[3:]])
        return N * pix[0].clamp_min(0), J
