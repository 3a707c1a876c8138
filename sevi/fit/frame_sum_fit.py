"""Likelihood refinement of a frame sum: the direct image fitted with what the camera records, saturation
and the clip at zero included.

A frame sum (``sevi.camera.direct_image``: camera frames summed, the background's clipped mean taken
out, in electron units) is *not* the hit density blurred by the spot where spots pile up: each frame
is rounded, clipped at 0 and saturates at 255, so a bright ring records less than its light, and a
spot's faint wings less than theirs. ``sevi.camera.camera_response.CameraResponse`` gives the exact
expected recorded value of every frame pixel from the hit density (compound Poisson light per pixel
per frame, the recorded value's mean and variance). This fit uses it:

    mu_p(theta) = (n_frames / spot_flux) sum_{q in p} (E[Y_q] - E[Y | no light])     (fit pixel p),

with the expected hits of theta (``sevi.physics.forward`` on the camera's own grid) as the density.

The exact model costs seconds per evaluation, so the fit is an outer iteration around the linear
model of ``sevi.fit.direct_fit.DirectRefiner`` (the hit image blurred by the mean spot, cheap, with
a closed-form Jacobian): at an anchor theta_k the exact model is evaluated once, and inside the
Levenberg-Marquardt fit

    mu(theta) = mu_exact(theta_k) + G_k (mu_lin(theta) - mu_lin(theta_k)),   J = G_k J_lin,

where the gain ``G_k = d mu_exact / d alpha / light_exact`` (the rate scaled by alpha) is the
camera's local response to more light (1 where it is linear, below 1 where it saturates). The anchor
moves to the fit's optimum until the optimum moves less than ``anchor_tolerance`` (0.2) of its error
bars (usually 2-3 evaluations; the fixed point's own error is then ~0.02 error bars); after the
first anchor only the distinct optima are fitted again. At the end mu is the exact model at the answer; the estimating equation
``J^T W (y - mu_exact(theta)) = 0`` has mean zero at the true theta, so the answer is consistent.

Noise: a fit pixel's variance is ``G^2 D sum_x lambda_x W_px^2 + x_p`` (electron units), the light's
shot noise through the camera's gain ``G`` (``W`` the blur, ``D = E[a^2]/E[a]`` a spot's flux
dispersion), plus what the background and the clip add per pixel
(``x_p = (n_frames / spot_flux^2) sum_q (Var Y_q - G_q^2 Var L_q)``), evaluated at the anchor and
held fixed within each inner fit (weighted least squares). The gain of a fluctuation is the chord
``E[f(L + v) - f(L)] / v`` of the spot that causes it (v: tens of counts), which is the same
``d mean / d alpha`` per unit of light as the Jacobian's; not the slope ``E[f'(L)]`` (0.84 in the
dark, where the clip at 0 bends f), which understates the variance of dim pixels by ~30 %
(measured against rendered frames, tests/sevi/fit/test_frame_sum_fit.py). Error bars are the sandwich (Godambe)
information of ``sevi.fit.direct_fit`` with the same two terms.

The answer's estimator (``estimator``): ``"wls"``, the weighted least squares above with its sandwich
error bars; or ``"gls"``, one generalised-least-squares step from that optimum. The pixels' full
covariance C (``covariance_times``: a spot spreads over ~20 fit pixels, so neighbours share noise) is
inverted by conjugate gradients, and the answer is ``theta - H^-1 g`` with ``H = J C^-1 J^T + P`` and
``g = -J C^-1 (y - mu) + P (theta - m)`` (``sevi.fit.frame_sum_information.gls_gradient_and_curvature``),
its error bars ``H^-1`` (or, with ``set_batches``, measured from the spread of batches of the
measurement's frames, which needs no model of C: ``sevi.fit.batch_spread``). From a consistent start one such step is as efficient as GLS iterated to its
optimum (a one-step estimator, Lehmann & Casella, *Theory of Point Estimation*, 6.4). GLS uses the
spots' fine structure that the diagonal weights throw away: it matters where two rings lie closer
than a spot (docs/forward_model.md, "The frame sum's covariance, checked", has what each costs).

Conventions as ``sevi.fit.direct_fit``: images (G, G) in electron units, axis 0 = x, axis 1 = z;
the fit works on the folded quadrant of ``FitConfig.fit_grid``, which must divide the camera's grid.
"""

from __future__ import annotations

import dataclasses
import math

import torch

from sevi.camera.camera_response import CameraResponse
from sevi.camera.direct_image import spot_flux
from sevi.fit.count_fit import FitConfig, FitResult
from sevi.fit.direct_fit import DirectNoise, DirectRefiner
from sevi.fit.estimators import ESTIMATORS
from sevi.physics.forward import ExpectedImage
from sevi.physics.prior import PriorConfig

__all__ = ["CG_FALLBACK", "FrameSumRefiner"]

CG_FALLBACK = 1e-4  # a GLS solve whose residual stays above this is not used: the answer is the WLS one


class FrameSumRefiner(DirectRefiner):
    """``FrameSumRefiner(FitConfig(fit_grid=256), prior, device, noise)(image, R, sigma_R, beta, R_sd)``:
    ``noise`` from ``sevi.fit.direct_fit.direct_noise(n_frames, grid)`` with its ``n_frames`` and
    ``camera`` set (module docstring)."""

    def __init__(self, config: FitConfig = FitConfig(fit_grid=256), prior: PriorConfig = PriorConfig(),
                 device="cpu", noise: DirectNoise = DirectNoise(), oversample: int = 1,
                 max_anchors: int = 5, anchor_tolerance: float = 0.2, chi2_block: int = 4,
                 estimator: str = "wls"):
        if noise.n_frames is None or noise.camera is None:
            raise ValueError("FrameSumRefiner needs the noise's n_frames and camera (direct_noise sets both)")
        super().__init__(config, prior, device, noise, oversample)
        cam = noise.camera
        if cam.grid % config.fit_grid:
            raise ValueError(f"the fit grid {config.fit_grid} must divide the camera's {cam.grid} pixels")
        if estimator not in ESTIMATORS:
            raise ValueError(f"estimator: got {estimator!r}; expected one of {', '.join(ESTIMATORS)}")
        self.estimator = estimator
        self.gls_residuals: list[float] = []  # the conjugate gradients' residual of each GLS answer (mode)
        self.batches = None  # the frames' batches for the error bars (set_batches); None: the model's
        self._batches_total = None  # their folded sum: the image they belong to
        self.offset = 0.0  # weighted least squares: no Poisson offset
        self.camera = cam
        self.frame_model = ExpectedImage(dataclasses.replace(config.forward, grid=cam.grid, n_terms=self.L),
                                         self.device)
        self.response = CameraResponse(cam, self.device)
        self.scale = noise.n_frames / spot_flux(cam)  # frame-sum counts per frame pixel -> electrons
        self.max_anchors, self.anchor_tolerance = max_anchors, anchor_tolerance
        self.anchor = None
        self.exact_evaluations = 0
        self.chi2_block = chi2_block  # folded fit pixels per block side for chi^2 (``chi2``): 2 spot sigmas at 256^2

    # -- the exact model at an anchor -----------------------------------------------------------
    def _block(self, x: torch.Tensor) -> torch.Tensor:
        """Quadrant at the camera's grid (g/2, g/2) -> folded fit pixels (flattened): 4 x the block sums
        (the four quadrants of a symmetric image are copies)."""
        h = self.config.fit_grid // 2
        k = x.shape[0] // h
        return 4.0 * x.reshape(h, k, h, k).sum(dim=(1, 3)).reshape(-1)

    def exact(self, theta: torch.Tensor) -> dict[str, torch.Tensor]:
        """The camera's response to theta's hits, per folded fit pixel (electron units): mean, light,
        scaled (d mean / d alpha), slope (light-weighted E[f'(L)]), excess variance."""
        R, s, N, beta = self._unpack(theta)
        hits = sum(self.frame_model.shell_quadrant(R[j], s[j], N[j], beta[j]) for j in range(2))
        out = self.response(hits / self.noise.n_frames)
        self.exact_evaluations += 1
        return self._exact_per_fit_pixel(out)

    def _exact_per_fit_pixel(self, out: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """The camera's response per camera pixel (``CameraResponse``'s output) -> per fit pixel, in
        electron units (``exact``)."""
        light = self._block(out["light"]) * self.scale
        scaled = self._block(out["scaled"]) * self.scale
        # The camera's gain for the light's fluctuations: a spot adds v counts, recorded as
        # E[f(L + v) - f(L)], the chord of f over v (near 1 for a spot's tens of counts), not its slope
        # E[f'(L)] (0.84 in the dark, where the clip at 0 bends f). That chord, averaged over the spots
        # that light a pixel, is d mean / d alpha per unit of light.
        gain_q = torch.where(out["light"] > 1e-9, out["scaled"] / out["light"].clamp_min(1e-300), out["slope"])
        gain = torch.where(light > 1e-9 * light.max(), scaled / light.clamp_min(1e-300), torch.ones_like(light))
        excess = self._block(out["var"] - gain_q ** 2 * out["light_var"]).clamp_min(0) * \
            self.scale / spot_flux(self.camera)
        return {"mean": self._block(out["mean"]) * self.scale, "light": light, "scaled": scaled, "gain": gain,
                "excess": excess}

    def _set_anchor(self, theta: torch.Tensor) -> None:
        ex = self.exact(theta)
        self.anchor = None
        lin, _ = self._model(theta, False)  # the linear model (anchor None)
        hits, gain = self._hits, ex["gain"]
        var = gain ** 2 * self.noise.dispersion * self._blur(hits, self.W2) + ex["excess"] + 1e-6
        self.anchor = {"theta": theta.clone(), "mean": ex["mean"], "lin": lin, "gain": gain, "var": var,
                       "excess": ex["excess"] + 1e-6, "hits": hits}

    # -- the model, objective and noise the inner fit uses ---------------------------------------
    def _model(self, theta: torch.Tensor, jacobian: bool):
        lam, J = self._linear(theta, jacobian)
        mu = self._blur(lam, self.W) * self.noise.flux_scale
        Jb = self._blur(J, self.W) * self.noise.flux_scale if jacobian else None
        a = self.anchor
        if a is None:
            return mu, Jb
        return a["mean"] + a["gain"] * (mu - a["lin"]), (a["gain"] * Jb if jacobian else None)

    def _linear(self, theta, jacobian):
        lam, J = super(DirectRefiner, self)._model(theta, jacobian)
        self._hits = lam
        return lam, J

    def objective(self, theta: torch.Tensor, n: torch.Tensor) -> float:
        """-(log quasi-likelihood + log prior): weighted least squares with the anchor's variances."""
        _, _, _, beta = self._unpack(theta)
        if not bool(self.valid(beta).all()):
            return math.inf
        mu, _ = self._model(theta, False)
        return float(0.5 * ((n - mu) ** 2 / self.anchor["var"]).sum() + self._prior_term(theta))

    def _gradient_and_curvature(self, theta, mu, J, n):
        w = 1.0 / self.anchor["var"]
        g = -(J @ ((n - mu) * w)) + self.P_grad * (theta - self.m_full)
        return g, (J * w) @ J.T + torch.diag(self.P)

    def _pixel_variance(self, mu: torch.Tensor) -> torch.Tensor:
        return self.anchor["var"]

    def _chi2_pixels(self, mu: torch.Tensor) -> torch.Tensor:
        return mu >= 5  # pixels of the rings (>= 5 electrons), as for count images

    def _log_likelihood(self, mu: torch.Tensor, n: torch.Tensor) -> float:
        return float(-0.5 * ((n - mu) ** 2 / self.anchor["var"]).sum())

    def covariance_times(self, v: torch.Tensor) -> torch.Tensor:
        """Cov(y) v for folded-pixel vectors v (..., h h): the spots' shot noise through the blur and
        the camera's slope, plus each pixel's excess (module docstring), at the anchor."""
        a = self.anchor
        h, hf = self.W.shape
        back = self.W.T @ (v * a["gain"]).reshape(-1, h, h) @ self.W  # (.., hf, hf): B^T (G v)
        shot = self.W @ (back * (self.noise.dispersion * a["hits"]).reshape(hf, hf)) @ self.W.T
        return a["gain"] * shot.reshape(v.shape) + a["excess"] * v

    def blocks(self, mu: torch.Tensor) -> torch.Tensor:
        """Indicators (B, h h) of the ``chi2_block`` x ``chi2_block`` blocks of folded pixels that hold a
        pixel of the rings (mu >= 5 electrons)."""
        ids = self._block_ids(mu.device)
        lit = torch.unique(ids[self._chi2_pixels(mu)])
        return (ids[None, :] == lit[:, None]).to(mu.dtype)

    def _block_ids(self, device) -> torch.Tensor:
        """The chi^2 block of each folded fit pixel, flattened."""
        h, b = self.config.fit_grid // 2, self.chi2_block
        nb = -(-h // b)
        label = torch.arange(h, device=device) // b
        return (label[:, None] * nb + label[None, :]).reshape(-1)

    def chi2(self, mu: torch.Tensor, n: torch.Tensor) -> tuple[float, int]:
        """(sum over blocks of (sum of residuals)^2 / its variance, blocks), over the blocks of the
        rings (``blocks``), the variance from the pixels' full covariance (``covariance_times``).

        A spot spreads over ~20 fit pixels, so neighbouring pixels' noise is correlated: Pearson's
        sum of r^2 / var has the right mean but the scatter of ~pixels / 20 degrees of freedom, and the
        generalised r^T C^-1 r is ill-conditioned (the blur's covariance is nearly singular). Blocks
        of 4 x 4 fit pixels (two spot sigmas at 256^2) are nearly independent: at the truth this chi^2
        has mean = blocks whatever the correlations, and ``chi2_sd`` its standard deviation."""
        ind = self.blocks(mu)
        s = ind @ (n - mu)
        var = (ind * self.covariance_times(ind)).sum(1)
        return float((s * s / var).sum()), len(ind)

    def chi2_sd(self, mu: torch.Tensor) -> float:
        """The standard deviation of ``chi2`` at the truth: ``sqrt(2 sum_ij rho_ij^2)`` over the blocks'
        correlation matrix (Gaussian blocks): about sqrt(2 blocks) when they are independent."""
        ind = self.blocks(mu)
        cov = ind @ self.covariance_times(ind).T
        d = cov.diagonal().sqrt()
        rho = cov / (d[:, None] * d[None, :])
        return float(torch.sqrt(2 * (rho ** 2).sum()))

    def score_covariance(self, mu: torch.Tensor, J: torch.Tensor) -> torch.Tensor:
        """Cov of the weighted score ``J W (y - mu)`` at the anchor: ``g C g^T``, g = J / var (P, P)."""
        g = J / self.anchor["var"]
        return g @ self.covariance_times(g).T

    def _error_curvature(self, theta, mu, J, n, g, H):
        import warnings

        from sevi.runtime.errors import InputWarning
        U = None
        if self.estimator == "gls":
            from sevi.fit.frame_sum_information import gls_gradient_and_curvature
            g_gls, H_gls, residual, X = gls_gradient_and_curvature(self, theta, mu, J, n)
            self.gls_residuals.append(residual)
            if residual <= CG_FALLBACK:
                g, H, U = g_gls, H_gls, X
            else:
                warnings.warn(f"the GLS solve stopped at residual {residual:.1e} (> {CG_FALLBACK:g}); this answer "
                              f"is the weighted least-squares one", InputWarning, stacklevel=2)
        if self.batches is not None:  # the bars from the frames' own spread (sevi.fit.batch_spread)
            from sevi.fit.batch_spread import spread_error_curvature
            out = spread_error_curvature(g, H, U if U is not None else J / self.anchor["var"], self.batches, self.P)
            if out is not None:
                return out
            warnings.warn(f"the spread of {len(self.batches)} batches of frames is singular; this answer's error "
                          f"bars are the model's", InputWarning, stacklevel=2)
        return (g, H) if U is not None else self._sandwich(theta, mu, J, n, g, H)

    def set_batches(self, images=None, frames=None) -> None:
        """The error bars from the frames' own spread (``sevi.fit.batch_spread``): ``images`` (K, G, G)
        the frame sums of K batches of the measurement's frames, in electron units at a grid the fit
        grid divides (``sevi.camera.direct_image.direct_image`` of each), ``frames`` (K,) their frame
        counts; they must add up to the image fitted next (checked there). None: the model's error
        bars. Raises ``sevi.fit.batch_spread.BatchSpreadError`` for fewer batches than the fit has
        parameters + 2."""
        if images is None:
            self.batches = self._batches_total = None
            return
        from sevi.fit.batch_spread import batch_residuals, batches_needed
        folded = torch.stack([self.fold(img) for img in images])
        self.batches = batch_residuals(folded, frames, min_batches=batches_needed(self.P.numel()))
        self._batches_total = folded.sum(0)

    def _sandwich(self, theta, mu, J, n, g, H):
        """The WLS answer's gradient and curvature: the Godambe-adjusted ones (``sevi.fit.direct_fit``)."""
        w = 1.0 / self.anchor["var"]
        g_lik = -(J @ ((n - mu) * w))
        H_lik = (J * w) @ J.T
        M = self.score_covariance(mu, J)
        d = H_lik.diagonal().clamp_min(1e-300).sqrt()
        s = d[:, None] * d[None, :]
        Hs, Ms = H_lik / s, M / s
        A = Hs @ torch.linalg.pinv(Ms, hermitian=True, rtol=1e-12)
        return (A @ (g_lik / d)) * d + (g - g_lik), (A @ Hs) * s + (H - H_lik)

    # -- the call ---------------------------------------------------------------------------------
    def __call__(self, image, R, sigma_R, beta, R_sd=None) -> FitResult:
        return self.fit_folded(self.fold(image), R, sigma_R, beta, R_sd)

    def fit_folded(self, n: torch.Tensor, R, sigma_R, beta, R_sd=None) -> FitResult:
        """The fit of an already folded frame sum ``n`` (h h,) (``fold``'s output), from the starts
        ``starts`` builds around (R, sigma_R, beta)."""
        total = float(n.sum())
        if not total > 0:
            raise ValueError("the image has no light; nothing to fit")
        return self._anchored(self.starts(R, sigma_R, beta, total, R_sd), n)

    def _anchored(self, starts: list[tuple[str, torch.Tensor]], n: torch.Tensor) -> FitResult:
        """The fit from ``starts`` with the exact model re-anchored at each optimum (module docstring)."""
        if self._batches_total is not None and not torch.allclose(
                self._batches_total.to(n), n, rtol=1e-9, atol=1e-9 * float(n.abs().max())):
            from sevi.fit.batch_spread import BatchSpreadError
            raise BatchSpreadError("the batches of frames do not add up to the frame sum fitted: they belong to "
                                   "another measurement")
        anchor = torch.maximum(torch.minimum(starts[0][1], self.hi), self.lo)
        for k in range(self.max_anchors):
            self._set_anchor(anchor)
            fits = self._fit_starts(starts, n)
            best = fits[0][0]
            mu, J = self._model(best, True)
            _, H = self._gradient_and_curvature(best, mu, J, n)
            sd = torch.linalg.pinv(H, hermitian=True).diagonal().clamp_min(1e-300).sqrt()
            moved = float(((best - anchor).abs() / sd).max())
            anchor = best
            if moved < self.anchor_tolerance:
                break
            # the next anchor refits the optima that may enter the answer (the mixture of modes), each
            # from where it ended: a few iterations
            starts = []
            for theta, f, _, _, name in fits:
                if not (math.isfinite(f) and f - fits[0][1] < self.config.mode_window):
                    continue
                if all(float(((theta - t).abs() / sd).max()) > 1.0 for _, t in starts):  # a distinct optimum
                    starts.append((name, theta))
        return self._answer(fits, n)
