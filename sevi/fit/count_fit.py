"""Likelihood refinement of a two-shell answer: the Poisson posterior mode under the exact forward model.

Starting from a first answer (the regressor's), maximise

    log L(theta) + log prior(theta),   log L = sum_pixels (n log mu - mu)   (Poisson pixels),

over theta = per shell (R, sigma_R, N, beta_2 .. beta_2L) (``sevi.physics.information.parameter_names``),
where mu is the exact expected image (``sevi.physics.forward``) on the folded quadrant of the image (a
sufficient statistic of the symmetric image; ``fit_grid`` may rebin it first, which keeps it
Poisson). The prior is the training prior (docs/prior.md): each beta's truncated normal (a
quadratic penalty inside its box, the box as a bound), R and sigma_R uniform on their ranges (bounds,
and in the curvature the uniform's variance, so that coinciding shells keep finite error bars);
N is free. Every shell's angular density must stay non-negative on [-1, 1]: a step that
breaks it is refused (``sevi.physics.legendre.ValidityCheck``, a proof, not a sample).

Optimiser: Levenberg-Marquardt on the Fisher scoring matrix H = J diag(1/mu) J^T + P (J = d mu /
d theta in closed form, P the prior's precision), with steps clipped into the bounds. Starts: the
first answer; when the shells are closer than ``multi_start_separation`` also the answer with the
shells' (sigma_R, N, betas) swapped, and the first answer with its radii moved apart and together
by the regressor's 1-sigma (``R_sd``). The best objective wins; where other starts end in distinct
optima of comparable evidence, the answer is the mixture of them (``mix_modes``).

Answer and error bars: the Laplace approximation of the posterior (H^-1 around the optimum), each
parameter's marginal truncated to its prior bounds; its mean is the answer and its sd the error bar
(``FitResult``); ``tools/eval_refine.py`` measures their calibration on held-out images.

Direct (summed-frame) images are not Poisson counts: ``sevi.fit.direct_fit.DirectRefiner`` subclasses
``Refiner`` with their forward model (the hit image blurred by the camera's mean spot) and
quasi-likelihood error bars.

Conventions: images (G, G), axis 0 = x, axis 1 = z over [-1, 1] (docs/conventions.md); shells
sorted by radius, smaller first, in the result.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field

import numpy as np
import torch

from sevi.fit.levenberg_marquardt import levenberg_marquardt
from sevi.physics.forward import ExpectedImage, ForwardConfig, fold_image
from sevi.physics.information import covariance, poisson_fisher
from sevi.physics.legendre import ValidityCheck
from sevi.physics.prior import PriorConfig


@dataclass(frozen=True)
class FitConfig:
    """How the refinement runs. Defaults: measured in BENCHMARKS.md (SEVI refinement)."""

    fit_grid: int = 512  # the image is rebinned exactly to this grid (a divisor of it) before fitting
    max_iterations: int = 40  # LM iterations per start
    tolerance: float = 1e-3  # converged: the objective fell by less than this (log-likelihood units), or
    step_tolerance: float = 1e-2  # the step was shorter than this many standard deviations (H's metric)
    lambda_init: float = 1e-3  # initial Levenberg-Marquardt damping (relative to diag(H))
    multi_start_separation: float = 0.05  # |R1 - R2| below which the extra starts are tried
    # Overlapping shells can leave the posterior with several modes (the shells trading betas): the
    # answer is then the mixture of the distinct optima's Laplace approximations, each weighted by
    # its evidence; modes more than ``mode_window`` below the best in log posterior are dropped.
    mix_modes: bool = True
    mode_window: float = 15.0
    forward: ForwardConfig = field(default_factory=ForwardConfig)  # accuracy of the model (grid is set)

    def __post_init__(self):
        if self.fit_grid < 2 or self.fit_grid % 2:
            raise ValueError(f"FitConfig.fit_grid must be even and >= 2, got {self.fit_grid}")
        if self.max_iterations < 1:
            raise ValueError("FitConfig.max_iterations must be >= 1")


@dataclass
class FitResult:
    """One image's refined answer. theta (P,) in ``parameter_names`` order, cov (P, P)."""

    R: np.ndarray  # (2,)
    sigma_R: np.ndarray  # (2,)
    n_electrons: np.ndarray  # (2,) float: fitted counts (of the fitted image: detected electrons)
    beta: np.ndarray  # (2, L)
    R_sd: np.ndarray
    sigma_R_sd: np.ndarray
    beta_sd: np.ndarray
    log_likelihood: float  # Poisson log L at the optimum (up to the data's constant log n! terms)
    log_posterior: float  # log L + log prior (same constant)
    chi2_dof: float  # sum (n - mu)^2 / mu over the folded pixels with mu >= 5, per degree of freedom
    iterations: int
    converged: bool
    start: str  # which start won; with several modes, each mode's start and weight ("answer 0.70 + swapped 0.30")
    cov: np.ndarray = field(repr=False)  # the shells' parameters (the centre's, when fitted, are not in it)
    centre: np.ndarray | None = None  # (x0, z0) in the fit grid's pixel indices, when fitted (centred_fit)
    centre_sd: np.ndarray | None = None


class Refiner:
    """Configure once (forward model, prior), call many: ``Refiner(cfg, prior, device)(image, start)``."""

    def __init__(self, config: FitConfig = FitConfig(), prior: PriorConfig = PriorConfig(), device="cpu"):
        self.config = config
        self.prior = prior
        L = prior.n_terms
        fwd = dataclasses.replace(config.forward, grid=config.fit_grid, n_terms=L)
        self.model = ExpectedImage(fwd, device)
        self.device = self.model.device
        self.L = L
        # The betas' prior inside their boxes is a normal of the untruncated (beta_mean, beta_sigma):
        # the truncated normal's own log-density. R and sigma_R are uniform on their ranges: no
        # gradient, but in the curvature their variance (12 / width^2) keeps H invertible when two
        # shells coincide (where the image cannot tell them apart); negligible wherever the image
        # measures R.
        per = [0.0, 0.0, 0.0] + [1.0 / sd**2 for sd in prior.beta_sigma]
        self.P_grad = torch.tensor(per * 2, dtype=torch.float64, device=self.device)  # (2 (3 + L),)
        self.P = self.P_grad.clone()
        for j in range(2):
            for k, (a, b) in enumerate((prior.radius_range, prior.sigma_r_range)):
                if b > a:
                    self.P[j * (3 + L) + k] = 12.0 / (b - a) ** 2
        self.prior_mean = torch.tensor(prior.beta_mean, dtype=torch.float64, device=self.device)
        per_lo = [prior.radius_range[0], prior.sigma_r_range[0], 0.0] + list(prior.beta_low)
        per_hi = [prior.radius_range[1], prior.sigma_r_range[1], math.inf] + list(prior.beta_high)
        self.lo = torch.tensor(per_lo * 2, dtype=torch.float64, device=self.device)
        self.hi = torch.tensor(per_hi * 2, dtype=torch.float64, device=self.device)
        self.valid = ValidityCheck(L, device=self.device)
        self.n_shell_params = 2 * (3 + L)  # theta's shell part; a subclass may append more (centred_fit)
        per_m = torch.cat([torch.zeros(3, dtype=torch.float64), self.prior_mean.cpu()])
        self.m_full = per_m.repeat(2).to(self.device)  # the prior's centre (only the betas' entries matter)
        # A constant added to every folded pixel of both the data and the model: 0 for count images;
        # the direct path's background variance (sevi.fit.direct_fit), which keeps its quasi-likelihood
        # finite where background noise makes a pixel negative.
        self.offset = 0.0

    # -- the objective ----------------------------------------------------------------------------
    def _unpack(self, theta: torch.Tensor):
        t = theta.reshape(2, 3 + self.L)
        return t[:, 0], t[:, 1], t[:, 2], t[:, 3:]

    def _model(self, theta: torch.Tensor, jacobian: bool):
        """Folded-quadrant mu (H W,) and, with ``jacobian``, J (P, H W)."""
        R, s, N, beta = self._unpack(theta)
        return self.model.folded(R, s, N, beta, jacobian)

    def _prior_term(self, theta: torch.Tensor) -> torch.Tensor:
        """-log prior inside the bounds (the betas' normals; constants dropped)."""
        _, _, _, beta = self._unpack(theta)
        P = self.P_grad[: self.n_shell_params].reshape(2, -1)[:, 3:]
        return 0.5 * ((beta - self.prior_mean) ** 2 * P).sum()

    def objective(self, theta: torch.Tensor, n: torch.Tensor) -> float:
        """-(log L + log prior); +inf where mu <= 0 on a pixel with counts or a density goes negative."""
        _, _, _, beta = self._unpack(theta)
        if not bool(self.valid(beta).all()):
            return math.inf
        mu, _ = self._model(theta, False)
        if bool(((mu <= 0) & (n > 0)).any()):
            return math.inf
        ll = (n * torch.log(mu.clamp_min(1e-300)) - mu).sum()
        return float(-ll + self._prior_term(theta))

    def _gradient_and_curvature(self, theta, mu, J, n):
        """Gradient of -(log L + log prior) and the Fisher scoring matrix H = J diag(1/mu) J^T + P."""
        keep = mu > 0
        g = J[:, keep] @ (1 - n[keep] / mu[keep]) + self.P_grad * (theta - self.m_full)
        return g, poisson_fisher(mu, J) + torch.diag(self.P)

    # -- one start ------------------------------------------------------------------------------
    def _fit_one(self, theta: torch.Tensor, n: torch.Tensor):
        """Bounded Levenberg-Marquardt from one start: (theta, objective, iterations, converged).

        Parameters at a bound whose gradient pushes outwards are held there for the step (an active
        set), so a prior box edge does not stall the fit. Converged: the objective fell by less than
        ``tolerance`` (it is ~1e6 in size, so rounding alone is ~1e-4), or the step is shorter than
        ``step_tolerance`` standard deviations, or no step lowers it."""
        c = self.config
        theta = torch.maximum(torch.minimum(theta, self.hi), self.lo)
        f = self.objective(theta, n)
        if not math.isfinite(f):
            return theta, f, 0, False
        return levenberg_marquardt(theta, f, lambda t: self.objective(t, n), lambda t: self._gradient_and_curvature(
            t, *self._model(t, True), n), self.lo, self.hi, max_iterations=c.max_iterations, tolerance=c.tolerance,
            step_tolerance=c.step_tolerance, lambda_init=c.lambda_init)

    # -- the public call ------------------------------------------------------------------------
    def fold(self, image) -> torch.Tensor:
        """(G, G) counts -> folded quadrant at fit_grid, flattened (H W,) float64."""
        return fold_image(self.rebin(image)).reshape(-1) + self.offset

    def rebin(self, image) -> torch.Tensor:
        """(G, G) counts -> (fit_grid, fit_grid) float64, summed exactly over k x k blocks."""
        img = torch.as_tensor(np.asarray(image), dtype=torch.float64, device=self.device)
        if img.ndim != 2 or img.shape[0] != img.shape[1]:
            raise ValueError(f"expected a square (G, G) image, got shape {tuple(img.shape)}")
        G = img.shape[0]
        g = self.config.fit_grid
        if G % g:
            raise ValueError(f"an image of {G} x {G} pixels does not rebin exactly to the fit grid {g}; "
                             f"use an image grid that is a multiple of {g}, or set FitConfig.fit_grid")
        k = G // g
        return img.reshape(g, k, g, k).sum(dim=(1, 3))

    def starts(self, R, sigma_R, beta, n_total: float, R_sd=None) -> list[tuple[str, torch.Tensor]]:
        """The starting points (name, theta) for a first answer."""
        R = np.asarray(R, float)
        s = np.clip(np.asarray(sigma_R, float), *self.prior.sigma_r_range)
        b = np.asarray(beta, float)
        N = np.full(2, n_total / 2)

        def theta(R_, s_, N_, b_):
            return torch.tensor(np.concatenate([np.r_[R_[j], s_[j], N_[j], b_[j]] for j in range(2)]),
                                dtype=torch.float64, device=self.device)

        out = [("answer", theta(R, s, N, b))]
        if abs(R[1] - R[0]) < self.config.multi_start_separation:
            out.append(("swapped", theta(R, s[::-1], N, b[::-1])))
            d = float(np.max(R_sd)) if R_sd is not None else 0.01
            mid = R.mean()
            out.append(("apart", theta(np.r_[min(R[0], mid - d), max(R[1], mid + d)], s, N, b)))
            out.append(("together", theta(np.r_[mid - 0.002, mid + 0.002], s, N, b)))
        return out

    def __call__(self, image, R, sigma_R, beta, R_sd=None) -> FitResult:
        """Refine one image's answer. image (G, G) counts; R, sigma_R (2,), beta (2, L) the first answer."""
        n = self.fold(image)
        total = float(n.sum()) - self.offset * n.numel()
        if not total > 0:
            raise ValueError("the image has no counts; nothing to fit")
        return self._answer(self._fit_starts(self.starts(R, sigma_R, beta, total, R_sd), n), n)

    def _fit_starts(self, starts: list[tuple[str, torch.Tensor]], n: torch.Tensor) -> list[tuple]:
        """Each start fitted: [(theta, objective, iterations, converged, name)], the best first."""
        fits = [(*self._fit_one(th, n), name) for name, th in starts]
        return sorted(fits, key=lambda r: r[1])

    def _answer(self, fits: list[tuple], n: torch.Tensor) -> FitResult:
        """The best fit's answer, or the evidence-weighted mixture of the distinct optima (``mix_modes``)."""
        best = self._result(*fits[0], n)
        if not self.config.mix_modes or len(fits) == 1:
            return best
        return mix_modes([best] + [self._result(*r, n) for r in fits[1:]
                                   if math.isfinite(r[1]) and r[1] - fits[0][1] < self.config.mode_window])

    def _error_curvature(self, theta, mu, J, n, g, H):
        """The gradient and curvature the error bars are built from: for Poisson pixels the
        objective's own (the Laplace approximation). ``sevi.fit.direct_fit`` replaces them where the
        pixels are not independent Poisson counts."""
        return g, H

    def _pixel_variance(self, mu: torch.Tensor) -> torch.Tensor:
        """Each folded pixel's variance under the model (for chi^2): mu for Poisson counts."""
        return mu

    def _chi2_pixels(self, mu: torch.Tensor) -> torch.Tensor:
        """The pixels chi^2 is taken over: Pearson's chi^2 is biased low on pixels of a few counts,
        so those with mu < 5 are left out."""
        return mu - self.offset >= 5

    def chi2(self, mu: torch.Tensor, n: torch.Tensor) -> tuple[float, int]:
        """(chi^2, pixels) of the data against the model: Pearson's, over ``_chi2_pixels``."""
        bright = self._chi2_pixels(mu)
        return float((((n - mu) ** 2)[bright] / self._pixel_variance(mu)[bright]).sum()), int(bright.sum())

    def _log_likelihood(self, mu: torch.Tensor, n: torch.Tensor) -> float:
        """The log-likelihood reported at the optimum: Poisson, up to the data's constant terms."""
        keep = mu > 0
        return float((n[keep] * torch.log(mu[keep]) - mu[keep]).sum())

    def _result(self, theta, f, it, conv, name, n) -> FitResult:
        """The answer: per parameter the mean and sd of the Laplace posterior's marginal truncated to
        the prior's bounds. Its centre is one unbounded Newton step from the (bounded) optimum, so a
        coefficient the image hardly measures gets the mean of its prior box, not the box's edge;
        for a well-measured one this is the optimum itself and H^-1's error bar."""
        from scipy.stats import truncnorm

        mu, J = self._model(theta, True)
        g, H = self._gradient_and_curvature(theta, mu, J, n)
        g, H = self._error_curvature(theta, mu, J, n, g, H)
        cov = covariance(H)
        centre = (theta - cov @ g).cpu().numpy()
        sd_lap = np.sqrt(np.clip(cov.diagonal().cpu().numpy(), 0, None))
        lo, hi = self.lo.cpu().numpy(), self.hi.cpu().numpy()
        est, sd = theta.cpu().numpy().copy(), sd_lap.copy()
        bounded = np.isfinite(hi) & (sd_lap > 0) & np.isfinite(sd_lap)
        a, b = (lo[bounded] - centre[bounded]) / sd_lap[bounded], (hi[bounded] - centre[bounded]) / sd_lap[bounded]
        a, b = np.minimum(a, b - 1e-9), np.maximum(b, a + 1e-9)
        est[bounded], var = truncnorm.stats(a, b, loc=centre[bounded], scale=sd_lap[bounded], moments="mv")
        sd[bounded] = np.sqrt(np.clip(var, 0, None))
        est = np.clip(est, lo, hi)
        t = torch.as_tensor(est, dtype=torch.float64, device=self.device)
        if not bool(self.valid(self._unpack(t)[3]).all()):  # the mean left the valid densities: keep the optimum
            est, sd = theta.cpu().numpy(), sd_lap
        ns = self.n_shell_params
        centre, centre_sd = (est[ns:], sd[ns:]) if len(est) > ns else (None, None)
        per_shell, sdn = est[:ns].reshape(2, -1), sd[:ns].reshape(2, -1)  # columns: R, sigma_R, N, beta_2 .. beta_2L
        R, s, N, beta = per_shell[:, 0], per_shell[:, 1], per_shell[:, 2], per_shell[:, 3:]
        order = np.argsort(R, kind="stable")
        chi2, dof = self.chi2(mu, n)
        dof = max(dof - theta.numel(), 1)
        ll = self._log_likelihood(mu, n)
        perm = np.concatenate([np.arange(3 + self.L) + j * (3 + self.L) for j in order])
        return FitResult(R[order], s[order], N[order], beta[order], sdn[order, 0], sdn[order, 1], sdn[order, 3:],
                         ll, -f, chi2 / dof, it, bool(conv), name, cov.cpu().numpy()[perm][:, perm], centre, centre_sd)


def _vector(r: FitResult) -> tuple[np.ndarray, np.ndarray]:
    """A result's answer and sds as vectors in its ``cov`` order: per shell R, sigma_R, N, beta_2 .. beta_2L
    (N's sd from ``cov``, the others the result's own)."""
    P = len(r.cov) // 2
    v = np.concatenate([np.r_[r.R[j], r.sigma_R[j], r.n_electrons[j], r.beta[j]] for j in range(2)])
    sd_n = np.sqrt(np.clip(r.cov.diagonal()[[2, P + 2]], 0, None))
    sd = np.concatenate([np.r_[r.R_sd[j], r.sigma_R_sd[j], sd_n[j], r.beta_sd[j]] for j in range(2)])
    return v, sd


def mix_modes(results: list[FitResult]) -> FitResult:
    """The posterior as a mixture of distinct optima (results[0] the best), each a Gaussian of its
    Laplace covariance weighted by its evidence ``exp(log posterior) sqrt(det 2 pi cov)``.

    Two optima are the same mode when no parameter differs by more than one sd of the best (the
    shells are sorted by radius in every result, so the same configuration reached from two starts
    compares equal). The answer is the mixture's mean; each error bar the mixture's sd, the modes'
    spread included, so an image whose shells may trade betas gets error bars that say so. With
    one distinct mode this is results[0] unchanged."""
    best = results[0]
    vecs = [_vector(r) for r in results]
    sd0 = np.maximum(vecs[0][1], 1e-12)
    keep = [0]
    for i in range(1, len(results)):
        if all(np.max(np.abs(vecs[i][0] - vecs[k][0]) / sd0) > 1.0 for k in keep):
            keep.append(i)
    if len(keep) == 1:
        return best
    modes = [results[k] for k in keep]
    logz = []
    for m in modes:
        sign, logdet = np.linalg.slogdet(m.cov)
        if sign <= 0 or not np.isfinite(logdet):
            return best  # a singular mode: its weight is undefined; keep the best optimum alone
        logz.append(m.log_posterior + 0.5 * logdet)
    w = np.exp(np.array(logz) - max(logz))
    w /= w.sum()
    vs = np.array([vecs[k][0] for k in keep])
    sds = np.array([vecs[k][1] for k in keep])
    mean = w @ vs
    var = w @ (sds ** 2 + (vs - mean) ** 2)
    cov = sum(wk * (m.cov + np.outer(vk - mean, vk - mean)) for wk, m, vk in zip(w, modes, vs))
    P = len(mean) // 2
    per, sd = mean.reshape(2, P), np.sqrt(var).reshape(2, P)
    others = ", ".join(f"{m.start} {wk:.2f}" for m, wk in zip(modes[1:], w[1:]))
    return dataclasses.replace(best, R=per[:, 0], sigma_R=per[:, 1], n_electrons=per[:, 2], beta=per[:, 3:],
                               R_sd=sd[:, 0], sigma_R_sd=sd[:, 1], beta_sd=sd[:, 3:], cov=cov,
                               start=f"{best.start} {w[0]:.2f} + {others}")


def choose_fit_grid(grid: int, preferred: int = 512) -> int:
    """The grid an image of ``grid`` pixels is fitted on: ``preferred`` when it divides the grid
    (an exact rebinning), else the image's own grid."""
    return preferred if grid >= preferred and grid % preferred == 0 else grid


