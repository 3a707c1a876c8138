"""The Poisson fit of any VMI image: 1 to 4 shells, a fitted centre, masked pixels, a gain map.

``sevi.fit.count_fit.Refiner`` fits the course's image: two shells, the centre on the corner between
the middle pixels, a square grid, every pixel trusted, the course's prior. A lab's image has none of
these, so this fit takes the general forward model (``sevi.physics.grid_image.GridImage``) and

    theta = (x0, z0, b, then per shell R, sigma_R, N, beta_2 .. beta_2L),
    mu_p  = g_p (b + sum_j shell_j(x0, z0, R_j, sigma_Rj, N_j, beta_j)_p),
    log L = sum over pixels p not masked of (n_p log mu_p - mu_p)   (Poisson counts),

where (x0, z0) is the centre in pixel index units, b a flat background (counts per pixel, >= 0), g
the gain map (expected counts multiplied per pixel; 1 by default) and masked pixels are left out of
the likelihood altogether. docs/conventions.md, "Any image", has the conventions.

The prior is uniform on a box (``ImageFitBounds``): the centre within ``centre_window`` pixels of its
start, R from 2 pixels to the farthest corner, sigma_R from a quarter pixel to R / 10 (and
R >= 10 sigma_R, the forward model's domain, refused as a step), N from 0 to ten times the image's
counts, each beta_l in [-(2l + 1)/2, (2l + 1)/2] (a box holding every non-negative density, since
|P_l| <= 1) and every shell's density non-negative on [-1, 1] (a step that breaks it is refused;
``sevi.physics.legendre.ValidityCheck``). Inside it the posterior is the likelihood, so the answer is
the maximum-likelihood one with the box as bounds.

Optimiser: bounded Levenberg-Marquardt on the Fisher scoring matrix H = J diag(1/mu) J^T (J = d mu /
d theta in closed form), the loop ``count_fit`` runs (``sevi.fit.levenberg_marquardt``). Error bars: H^-1 at the optimum (the Laplace
approximation). The evidence of a fit (for the number of shells, ``sevi.pipeline.fit_image``):

    log Z = log L + log prior + (P/2) log(2 pi) + 1/2 log det H^-1 + log k!,

the prior's density 1 / (the box's volume), with k! because the shells are ordered by R (the box's
volume over ordered radii is 1 / k! of the unordered one). The box for the betas is larger than the
set of valid densities, so log Z is low by the same amount per shell: a bias towards fewer shells.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import torch

from sevi.fit.levenberg_marquardt import levenberg_marquardt
from sevi.physics.forward import ForwardConfig
from sevi.physics.grid_image import GridImage, PixelGrid, shell_parameter_names
from sevi.physics.information import covariance
from sevi.physics.legendre import ValidityCheck

__all__ = ["ImageFitConfig", "ImageFitBounds", "ImageFitResult", "ImageRefiner", "parameter_names"]

GLOBAL = ("x0", "z0", "background")


def parameter_names(n_shells: int, n_terms: int) -> list[str]:
    """Order of theta: x0, z0, background, then per shell j = 0.. R, sigma_R, N, beta_2 .. beta_2L."""
    return list(GLOBAL) + [f"{p}[{j}]" for j in range(n_shells) for p in shell_parameter_names(n_terms)]


@dataclass(frozen=True)
class ImageFitConfig:
    """How the fit runs."""

    n_terms: int = 12  # L: beta_2 .. beta_2L per shell
    max_iterations: int = 60  # LM iterations
    tolerance: float = 1e-3  # converged: the objective fell by less than this (log-likelihood units), or
    step_tolerance: float = 1e-2  # the step was shorter than this many standard deviations
    lambda_init: float = 1e-3  # initial Levenberg-Marquardt damping (relative to diag(H))
    centre_window: float = 40.0  # pixels: the centre's box around its start
    forward: ForwardConfig = field(default_factory=ForwardConfig)  # quadrature of the model

    def __post_init__(self):
        if not 0 <= self.n_terms <= 24:
            raise ValueError(f"ImageFitConfig.n_terms must be in 0..24, got {self.n_terms}")
        if self.max_iterations < 1:
            raise ValueError("ImageFitConfig.max_iterations must be >= 1")


@dataclass(frozen=True)
class ImageFitBounds:
    """The uniform prior's box (detector units; N in electrons; background in counts per pixel)."""

    centre: tuple[tuple[float, float], tuple[float, float]]
    R: tuple[float, float]
    sigma_R: tuple[float, float]
    N: tuple[float, float]
    background: tuple[float, float]
    n_terms: int

    @staticmethod
    def make(grid: PixelGrid, centre, counts: float, peak: float, window: float, n_terms: int) -> "ImageFitBounds":
        """The default box of an image of ``grid`` whose centre starts at ``centre`` (pixels),
        holding ``counts`` counts with ``peak`` at its brightest pixel."""
        (nx, nz), ps = grid.shape, grid.pixel_size
        cx, cz = float(centre[0]), float(centre[1])
        far = max(math.hypot(a, b) for a in (cx + window + 0.5, nx - 0.5 - cx + window)
                  for b in (cz + window + 0.5, nz - 0.5 - cz + window)) * ps
        return ImageFitBounds(((cx - window, cx + window), (cz - window, cz + window)), (2 * ps, far),
                              (0.25 * ps, max(far / 10, ps)), (0.0, 10.0 * max(counts, 1.0)),
                              (0.0, max(peak, 1.0)), n_terms)

    def vectors(self, n_shells: int) -> tuple[np.ndarray, np.ndarray]:
        """(lower, upper) bounds of theta (``parameter_names`` order)."""
        half = [(4 * i + 1) / 2 for i in range(1, self.n_terms + 1)]
        per_lo = [self.R[0], self.sigma_R[0], self.N[0]] + [-h for h in half]
        per_hi = [self.R[1], self.sigma_R[1], self.N[1]] + half
        lo = [self.centre[0][0], self.centre[1][0], self.background[0]] + per_lo * n_shells
        hi = [self.centre[0][1], self.centre[1][1], self.background[1]] + per_hi * n_shells
        return np.array(lo), np.array(hi)


@dataclass
class ImageFitResult:
    """One image's fit. theta and cov in ``names`` order; shells sorted by R, smaller first.
    Parameters held fixed (a given centre) have sd 0 and zero rows in ``cov``."""

    names: list[str]
    theta: np.ndarray  # (P,)
    cov: np.ndarray = field(repr=False)  # (P, P)
    n_shells: int
    n_terms: int
    pixel_size: float  # detector units per pixel of the grid the fit ran on
    log_likelihood: float  # Poisson log L at the optimum, up to the data's constant log n! terms
    log_evidence: float  # Laplace approximation (module docstring); -inf where H is singular
    chi2_dof: float  # Pearson's chi^2 over the fitted pixels with mu >= 5, per degree of freedom
    chi2_pixels: int
    iterations: int
    converged: bool
    model: np.ndarray = field(repr=False)  # (nx, nz) expected counts of the fit's grid, before the gain

    @property
    def sd(self) -> np.ndarray:
        return np.sqrt(np.clip(np.diagonal(self.cov), 0, None))

    def _shells(self, k: int) -> np.ndarray:
        return self.theta[3:].reshape(self.n_shells, 3 + self.n_terms)[:, k] if self.n_shells else np.zeros(0)

    def _shells_sd(self, k: int) -> np.ndarray:
        return self.sd[3:].reshape(self.n_shells, 3 + self.n_terms)[:, k] if self.n_shells else np.zeros(0)

    @property
    def centre(self) -> np.ndarray:
        """(x0, z0) in pixel index units of the fit's grid."""
        return self.theta[:2].copy()

    @property
    def centre_sd(self) -> np.ndarray:
        return self.sd[:2].copy()

    @property
    def background(self) -> float:
        return float(self.theta[2])

    R = property(lambda self: self._shells(0))
    sigma_R = property(lambda self: self._shells(1))
    n_electrons = property(lambda self: self._shells(2))
    R_sd = property(lambda self: self._shells_sd(0))
    sigma_R_sd = property(lambda self: self._shells_sd(1))
    n_electrons_sd = property(lambda self: self._shells_sd(2))

    @property
    def beta(self) -> np.ndarray:
        return self.theta[3:].reshape(self.n_shells, 3 + self.n_terms)[:, 3:]

    @property
    def beta_sd(self) -> np.ndarray:
        return self.sd[3:].reshape(self.n_shells, 3 + self.n_terms)[:, 3:]


class ImageRefiner:
    """Configure once per image grid (mask, gain), call per start:
    ``ImageRefiner(grid, config, device)(counts, keep, gain, start, bounds, fix_centre)``."""

    def __init__(self, grid: PixelGrid, config: ImageFitConfig = ImageFitConfig(), device="cpu"):
        self.grid = grid
        self.config = config
        self.L = config.n_terms
        self.model = GridImage(grid, self.L, config.forward, device)
        self.device = self.model.device
        self.valid = ValidityCheck(self.L, device=self.device) if self.L else None

    # -- the model ----------------------------------------------------------------------------------
    def _split(self, theta: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        shells = theta[3:].reshape(-1, 3 + self.L)
        return theta[:2], theta[2], shells

    def image(self, theta, jacobian: bool = False):
        """Expected counts before the gain, (nx, nz), and with ``jacobian`` d/d theta (P, nx, nz)."""
        theta = torch.as_tensor(theta, dtype=torch.float64, device=self.device)
        c, b, shells = self._split(theta)
        mu = torch.full(self.grid.shape, float(b), dtype=torch.float64, device=self.device)
        rows = [None, None, torch.ones_like(mu)] if jacobian else None
        dc = torch.zeros(2, *self.grid.shape, dtype=torch.float64, device=self.device) if jacobian else None
        for s in shells:
            m, J = self.model.shell(float(s[0]), float(s[1]), float(s[2]), s[3:], (float(c[0]), float(c[1])), jacobian)
            mu = mu + m
            if jacobian:
                dc += J[:2]
                rows.append(J[2:])
        if not jacobian:
            return mu, None
        rows[0], rows[1] = dc[:1], dc[1:]
        rows[2] = rows[2][None]
        return mu, torch.cat(rows)

    def valid_shells(self, theta: torch.Tensor) -> bool:
        """Every shell inside the model's domain (R >= 10 sigma_R) with a non-negative density."""
        _, _, shells = self._split(theta)
        if len(shells) == 0:
            return True
        if bool((shells[:, 0] < 10 * shells[:, 1]).any()):
            return False
        return self.valid is None or bool(self.valid(shells[:, 3:]).all())

    # -- the objective ------------------------------------------------------------------------------
    def _data(self, counts, keep, gain):
        t = lambda a: torch.as_tensor(np.asarray(a), dtype=torch.float64, device=self.device)
        k = torch.as_tensor(np.asarray(keep, bool), device=self.device)
        return t(counts)[k], k, t(gain)[k]

    def _mu(self, theta, k, g, jacobian):
        mu, J = self.image(theta, jacobian)
        return g * mu[k], (None if J is None else J[:, k] * g)

    def objective(self, theta, n, k, g) -> float:
        """-log L (up to constants); +inf outside the model's domain or where mu <= 0 under counts."""
        if not self.valid_shells(theta):
            return math.inf
        mu, _ = self._mu(theta, k, g, False)
        if bool(((mu <= 0) & (n > 0)).any()):
            return math.inf
        pos = mu > 0
        return float(-(n[pos] * torch.log(mu[pos]) - mu[pos]).sum() + mu[~pos].sum())

    def fisher(self, theta, keep, gain) -> torch.Tensor:
        """The Poisson Fisher information J diag(1/mu) J^T of theta over the pixels ``keep`` holds,
        with the gain applied: (P, P). Its inverse is the Cramer-Rao bound of the fit's parameters."""
        _, k, g = self._data(np.zeros(self.grid.shape), keep, gain)
        mu, J = self._mu(torch.as_tensor(np.asarray(theta, float), dtype=torch.float64, device=self.device), k, g, True)
        return self._grad_curv(mu, J, torch.zeros_like(mu))[1]

    @staticmethod
    def _grad_curv(mu, J, n):
        keep = mu > 0
        Jk, mk = J[:, keep], mu[keep]
        return Jk @ (1 - n[keep] / mk), (Jk / mk) @ Jk.T

    def __call__(self, counts, keep, gain, start, bounds: ImageFitBounds, fix_centre: bool = False) -> ImageFitResult:
        """Fit from ``start`` (theta in ``parameter_names`` order). counts, keep (True = in the
        likelihood), gain: (nx, nz). The centre is held at its start with ``fix_centre``."""
        c = self.config
        n, k, g = self._data(counts, keep, gain)
        theta = torch.as_tensor(np.asarray(start, float), dtype=torch.float64, device=self.device)
        n_shells = (len(theta) - 3) // (3 + self.L)
        lo_np, hi_np = bounds.vectors(n_shells)
        lo, hi = (torch.as_tensor(v, dtype=torch.float64, device=self.device) for v in (lo_np, hi_np))
        fixed = torch.zeros(len(theta), dtype=torch.bool, device=self.device)
        if fix_centre:
            fixed[:2] = True
            lo, hi = lo.clone(), hi.clone()
            lo[:2], hi[:2] = theta[:2], theta[:2]
        theta = torch.maximum(torch.minimum(theta, hi), lo)
        f = self.objective(theta, n, k, g)
        if not math.isfinite(f):
            raise ValueError("the fit's start is outside the model's domain (a shell with R < 10 sigma_R or a "
                             "negative density), or gives no expected counts where the image has counts")
        theta, f, it, converged = levenberg_marquardt(
            theta, f, lambda t: self.objective(t, n, k, g), lambda t: self._grad_curv(*self._mu(t, k, g, True), n),
            lo, hi, max_iterations=c.max_iterations, tolerance=c.tolerance, step_tolerance=c.step_tolerance,
            lambda_init=c.lambda_init, tries=14, fixed=fixed)
        return self._result(theta, f, it, converged, n, k, g, fixed, lo_np, hi_np, n_shells)

    def _result(self, theta, f, it, converged, n, k, g, fixed, lo, hi, n_shells) -> ImageFitResult:
        mu, J = self._mu(theta, k, g, True)
        _, H = self._grad_curv(mu, J, n)
        free = (~fixed).nonzero().reshape(-1)
        P = len(theta)
        cov = np.zeros((P, P))
        cf = covariance(H[free][:, free]).cpu().numpy()
        cov[np.ix_(free.cpu().numpy(), free.cpu().numpy())] = cf
        log_z = -math.inf
        if np.isfinite(cf).all():
            sign, logdet = np.linalg.slogdet(cf)
            width = (hi - lo)[free.cpu().numpy()]
            if sign > 0 and (width > 0).all():
                log_z = (-f - float(np.log(width).sum()) + 0.5 * len(cf) * math.log(2 * math.pi) + 0.5 * logdet
                         + math.lgamma(n_shells + 1))
        bright = mu >= 5
        chi2 = float((((n - mu) ** 2)[bright] / mu[bright]).sum())
        dof = max(int(bright.sum()) - len(free), 1)
        th = theta.cpu().numpy().copy()
        order = np.argsort(th[3:].reshape(n_shells, -1)[:, 0], kind="stable") if n_shells else np.zeros(0, int)
        perm = np.r_[0, 1, 2, np.concatenate([3 + np.arange(3 + self.L) + j * (3 + self.L) for j in order])
                     if n_shells else np.zeros(0, int)].astype(int)
        full, _ = self.image(theta, False)
        return ImageFitResult(parameter_names(n_shells, self.L), th[perm], cov[np.ix_(perm, perm)], n_shells, self.L,
                              self.grid.pixel_size, -f, log_z, chi2 / dof, int(bright.sum()), it, bool(converged),
                              full.cpu().numpy())
