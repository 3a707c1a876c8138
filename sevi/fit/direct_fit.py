"""Likelihood refinement of a direct (summed-frame) image: the forward model of blurred, correlated counts.

A direct image (``sevi.camera.direct_image``) is the sum of the camera frames, background-subtracted, in electron
units. Each detected electron adds one spot of random flux ``a`` centred on its hit, so

    E[y] = B lambda,        Cov(y) = E[a^2] B diag(lambda) B^T + sigma_b^2 I,

where ``lambda`` is the expected hit image (``sevi.physics.forward``, on a grid finer than the spot),
``B`` blurs it by the camera's mean spot and rebins it to the image's grid, and ``sigma_b^2`` is the
background's variance per pixel. Neighbouring pixels share electrons: the noise is correlated, and
per pixel it is not Poisson. The fit (``DirectRefiner``) therefore maximises a *quasi*-likelihood,

    Q(theta) = sum_p (y_p + c) log(mu_p + c) - (mu_p + c),    mu = B lambda(theta),  c = sigma_b^2,

plus the same log prior as the count fit (``sevi.fit``). Its score ``sum_p (y_p - mu_p) dmu_p/dtheta /
(mu_p + c)`` has mean zero at the true theta whatever the noise's correlation, so the optimum is a
consistent estimate; the weights ``1 / (mu + c)`` are those of the quasi-likelihood with variance
function ``mu + c`` (McCullagh & Nelder, *Generalized Linear Models*, ch. 9), which also keeps Q
finite where background noise makes a pixel negative (``y + c`` may be < 0, ``mu + c >= c > 0``).

Error bars: the curvature of Q is not the information when the noise is not Poisson. The score's
actual covariance is (exact, for a marked Poisson process of hits)

    M = E[a^2] sum_x lambda_x (B^T g)_x (B^T g)_x^T + sigma_b^2 sum_p g_p g_p^T,   g_p = dmu_p/dtheta / (mu_p + c),

and with H = sum_p g_p dmu_p/dtheta^T the estimator's covariance is the sandwich H^-1 M H^-1, i.e. its
information is the Godambe information ``H M^-1 H``. The posterior used for the answer and its error
bars is the curvature-adjusted one (Chandler & Bate, *Biometrika* 94 (2007) 167): the log-likelihood's
curvature replaced by ``H M^-1 H`` and its gradient by ``H M^-1`` times Q's, plus the prior as in the
count fit. With independent Poisson pixels (no blur, ``E[a^2] = 1``, ``c = 0``) M = H and this is the
count fit's Laplace approximation.

The blur ``B``: on each axis a matrix from the fine half-axis to the image's half-axis (the fit works
on the folded quadrant, ``sevi.physics.forward``): the kernel is the spot's Gaussian convolved with the fine
pixel's box twice (hits spread uniformly over their fine pixel, light integrated over the image
pixel), sampled at whole pixels and normalised; light falling past the centre line is reflected
(mirror symmetry) and light past the outer edge is lost, as on the camera. The fine grid is
``oversample`` times :func:`sevi.camera.direct_image.blur_render_grid` of the image grid (pixels at most 1/3 of
the spot sigma for oversample 2).

Numbers this module uses (docs/camera.md; sevi/camera/direct_image.py): the camera's mean spot as a frame sum
records it (the flux-weighted mixture of its spots, 0.01524 units, with the faint wings clipped by
the camera) has sigma 0.01497 detector units and 95.1 % of the unclipped flux, so an electron's mean
value in the image is ``flux_scale = 0.951`` electron units (:func:`recorded_spot`); one spot's flux
``A s^2 / sqrt(1 - rho^2)`` has relative variance ``(1 + 0.1^2)(1 + 4 (0.001/0.015)^2 + ...) - 1 =
0.028``;
the background's std per frame pixel is 17.34 counts (``sevi.camera.direct_image.background_moments``), i.e.
``17.34 k sqrt(n_frames) / spot_flux`` electron units for an image pixel of ``k x k`` frame pixels.

Conventions: images (G, G), axis 0 = x, axis 1 = z over [-1, 1] (docs/conventions.md); sigmas in
detector units (the field of view is 2 units wide).
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from functools import lru_cache

import numpy as np
import torch

from sevi.fit.count_fit import FitConfig, Refiner
from sevi.physics.forward import ExpectedImage
from sevi.physics.information import poisson_fisher
from sevi.physics.prior import PriorConfig

__all__ = ["REFINE_GRID", "DirectNoise", "direct_noise", "spot_matrix", "fine_grid", "DirectRefiner"]

# The grid a frame sum is read at for the fit: pixels of 0.0078 units, half the spot's sigma, so the
# rebinning keeps nearly all the image's information (BENCHMARKS.md, direct refinement).
REFINE_GRID = 256


@dataclass(frozen=True)
class DirectNoise:
    """The direct image's spot and noise, in the image's electron units (module docstring)."""

    spot_sigma: float = 0.01497  # detector units: the camera's mean recorded spot (direct_noise)
    flux_scale: float = 0.951  # mean value one detected electron adds to the image (electron units)
    flux_rel_var: float = 0.028  # Var(a) / E[a]^2 of one spot's flux
    background_var: float = 0.0  # per image pixel, electron units^2
    # A frame sum (sevi.fit.frame_sum_fit): the frames summed and the camera that recorded them; the
    # fit then uses the camera's exact response (saturation, clip at 0) instead of this linear model.
    n_frames: int | None = None
    camera: object | None = None  # sevi.camera.frames.FrameModel

    def __post_init__(self):
        if not self.spot_sigma > 0:
            raise ValueError(f"DirectNoise.spot_sigma must be > 0 (detector units), got {self.spot_sigma}")
        if not (self.flux_scale > 0 and self.flux_rel_var >= 0 and self.background_var >= 0):
            raise ValueError(f"DirectNoise: flux_scale > 0, flux_rel_var >= 0, background_var >= 0; got {self}")

    @property
    def dispersion(self) -> float:
        """E[a^2] / E[a] in image units: an electron's variance per unit of its mean."""
        return self.flux_scale * (1.0 + self.flux_rel_var)


@lru_cache(maxsize=8)
def recorded_spot(camera) -> tuple[float, float]:
    """The mean spot as the frame sum records it: (sigma per axis, detector units; its flux / the
    unclipped spots' mean flux).

    A spot adds ``v = A exp(-r^2 / (2 s^2))`` counts to a pixel whose background is
    ``N(background_mean, background_std^2)``; the camera rounds and clips at 0 and 255, and the
    direct image subtracts the clipped background's mean. What a pixel records is therefore
    ``g(v) = E[clip(round(b + v + noise))] - E[clip(round(b + noise))]``, below ``v`` in the faint
    wings (``g(v) ~ Phi(b / sd) v`` as v -> 0). Averaged over A ~ N(amp_mean, amp_std^2) and
    s ~ N(sigma_mean, sigma_std^2) (Gauss-Hermite, 16 x 16) on a radial grid out to 8 spot sigmas,
    the recorded mean spot's flux and second moment give the answer; the tilt rho widens the
    variance by ``E[(1 - rho^2)^-3/2] / E[(1 - rho^2)^-1/2]`` as in the unclipped case. For the
    course's camera: 4.9 % of the flux lost and sigma 0.01497 units (0.01524 unclipped). Isolated
    spots: where spots overlap the wings are less clipped (sevi/camera/direct_image.py measured 4.3 % lost on
    crowded frames), so the truth lies slightly towards the unclipped values."""
    from sevi.camera.direct_image import clipped_means

    px = 2.0 / camera.grid  # detector units per pixel
    v_max = camera.amp_mean + 8 * camera.amp_std
    v = np.linspace(0.0, v_max, 4001)
    g = clipped_means(camera.background_mean + v, camera) - clipped_means(camera.background_mean, camera)[0]
    t, w = np.polynomial.hermite_e.hermegauss(16)
    w = w / w.sum()
    s_max = (camera.sigma_mean + 8 * camera.sigma_std) / px
    r = np.linspace(0.0, 8.0 * s_max, 4001)  # px
    ring = 2 * np.pi * r * (r[1] - r[0])
    flux = flux_ideal = second = 0.0
    for ta, wa in zip(t, w):
        A = max(camera.amp_mean + camera.amp_std * ta, 0.0)
        for ts, ws in zip(t, w):
            sp = max(camera.sigma_mean + camera.sigma_std * ts, 1e-6) / px
            ideal = A * np.exp(-0.5 * (r / sp) ** 2)
            rec = np.interp(ideal, v, g)
            flux += wa * ws * (rec * ring).sum()
            flux_ideal += wa * ws * (ideal * ring).sum()
            second += wa * ws * (rec * ring * r * r / 2).sum()  # per axis: E[dx^2] = E[r^2] / 2
    tilt = _tilt_moments(camera.rho_std)
    return math.sqrt(second / flux * tilt[1.5] / tilt[0.5]) * px, float(flux / flux_ideal)


def _tilt_moments(rho_std: float) -> dict[float, float]:
    """E[(1 - rho^2)^-p] for p = 1/2, 1, 3/2, rho ~ N(0, rho_std^2) clipped to +-0.999 (Gauss-Hermite)."""
    if rho_std <= 0:
        return {0.5: 1.0, 1.0: 1.0, 1.5: 1.0}
    t, w = np.polynomial.hermite_e.hermegauss(64)
    one = 1 - np.clip(rho_std * t, -0.999, 0.999) ** 2
    return {p: float((w * one ** -p).sum() / w.sum()) for p in (0.5, 1.0, 1.5)}


def direct_noise(n_frames: int, grid: int, camera=None, clipped: bool = True, response: bool = True) -> DirectNoise:
    """The noise of a direct image summed from ``n_frames`` frames and rebinned to ``grid``.

    From the camera model (``sevi.camera.frames.FrameModel``; docs/camera.md). A spot is
    ``A exp(-(dx^2 + dz^2 + 2 rho dx dz) / (2 s^2))``: its flux is ``a = 2 pi A s^2 / sqrt(1 - rho^2)``
    and its variance along each axis ``s^2 / (1 - rho^2)``. The mean light of many spots is a
    mixture whose variance per axis is the *flux-weighted* one,
    ``E[s^4] E[(1 - rho^2)^(-3/2)] / (E[s^2] E[(1 - rho^2)^(-1/2)])`` (sigma 0.01524 units for the
    course's camera: a wider spot of the same peak carries more light), narrowed and dimmed by the
    camera's clipping of the faint wings (:func:`recorded_spot`: sigma 0.01497, 95.1 % of the
    flux; ``clipped=False`` gives the unclipped spot and flux 1, for images of spots added without
    a camera). ``flux_rel_var`` is Var(a) / E[a]^2 (A, s and rho independent), and the background's
    variance per image pixel follows from the clipped background's std (module docstring).

    With ``response`` (the default) the noise carries ``n_frames`` and the camera, and the frame sum is
    fitted with the camera's exact response (``sevi.fit.frame_sum_fit``): this linear model is then
    its surrogate, with the unclipped spot (the response accounts for every clip)."""
    from sevi.camera.direct_image import background_moments, spot_flux
    from sevi.camera.frames import FrameModel

    cam = camera or FrameModel()
    if n_frames < 1:
        raise ValueError(f"n_frames must be >= 1, got {n_frames}")
    if grid < 1 or cam.grid % grid:
        raise ValueError(f"a direct image grid must divide the frame's {cam.grid} pixels, got {grid}")
    m, sd = cam.sigma_mean, cam.sigma_std
    s2 = m * m + sd * sd  # E[s^2], s ~ N(m, sd^2)
    s4 = m ** 4 + 6 * m * m * sd * sd + 3 * sd ** 4  # E[s^4]
    tilt = _tilt_moments(cam.rho_std)
    rel = max((1 + (cam.amp_std / cam.amp_mean) ** 2) * (s4 / (s2 * s2)) * (tilt[1.0] / tilt[0.5] ** 2) - 1, 0.0)
    unclipped = (math.sqrt(s4 * tilt[1.5] / (s2 * tilt[0.5])), 1.0)
    sigma, flux = recorded_spot(cam) if clipped and not response else unclipped
    k = cam.grid // grid
    bg = background_moments(cam)[1] * k * math.sqrt(n_frames) / spot_flux(cam)
    return DirectNoise(spot_sigma=sigma, flux_scale=flux, flux_rel_var=rel, background_var=bg * bg,
                       n_frames=int(n_frames) if response else None, camera=cam if response else None)


def fine_grid(grid: int, spot_sigma: float, oversample: int = 2) -> int:
    """The grid the hit image is computed on before the blur: ``oversample`` x the smallest multiple
    of ``grid`` on which the spot spans >= 1.5 px (``sevi.camera.direct_image.blur_render_grid``)."""
    from sevi.camera.direct_image import blur_render_grid
    return oversample * blur_render_grid(grid, spot_sigma)


def spot_matrix(n_out: int, n_fine: int, sigma_px: float, mirror: bool = True) -> torch.Tensor:
    """The blur-and-rebin operator of one half-axis: (n_out, n_fine) float64.

    Fine pixel x (index from the centre line, centre at x + 1/2 fine px) sends its light to fine
    pixel f with weight ``k(f - x) + k(f + x + 1)`` (the second term: light past the centre line,
    reflected by the mirror symmetry), k being the Gaussian of ``sigma_px`` fine px convolved with a
    pixel box twice (the hit's position inside its pixel, the light's inside the receiving pixel),
    sampled at whole pixels (Gauss-Legendre over the triangle, 24 nodes per side) and normalised.
    Light past the outer edge is lost. Image pixel p sums fine pixels p k .. p k + k - 1,
    ``k = n_fine / n_out``. ``mirror=False``: a whole axis (no centre line; light past either end is
    lost), for images whose centre is fitted (``sevi.fit.centred_frame_sum_fit``)."""
    if n_fine % n_out:
        raise ValueError(f"the fine half-axis ({n_fine}) must be a multiple of the image's ({n_out})")
    r = int(math.ceil(5.0 * sigma_px)) + 1
    d = np.arange(-r, r + 1, dtype=np.float64)
    t, w = np.polynomial.legendre.leggauss(24)
    u, wu = 0.5 * (t + 1), 0.5 * w  # nodes on [0, 1]
    tri = np.concatenate([u, -u]), np.concatenate([wu * (1 - u), wu * (1 - u)])  # the triangle on [-1, 1]
    kern = (tri[1][None, :] * np.exp(-0.5 * ((d[:, None] + tri[0][None, :]) / sigma_px) ** 2)).sum(1)
    kern /= kern.sum()
    x = np.arange(n_fine)
    B = np.zeros((n_fine, n_fine))
    for off, kv in zip(d.astype(int), kern):
        f = x + off  # direct light
        ok = (f >= 0) & (f < n_fine)
        B[f[ok], x[ok]] += kv
        if not mirror:
            continue
        f = -x - 1 - off  # light past the centre line, reflected (fine pixel x mirrored to -x - 1)
        ok = (f >= 0) & (f < n_fine)
        B[f[ok], x[ok]] += kv
    k = n_fine // n_out
    return torch.from_numpy(B.reshape(n_out, k, n_fine).sum(1))


class DirectRefiner(Refiner):
    """The count fit (``sevi.fit.count_fit.Refiner``) with the direct image's forward model and error bars.

    ``DirectRefiner(FitConfig(fit_grid=g), prior, device, noise)(image, R, sigma_R, beta, R_sd)``:
    ``image`` (G, G) in electron units with G a multiple of g; ``noise`` from :func:`direct_noise`
    for the image's grid g (its background term is per pixel of the fitted grid)."""

    def __init__(self, config: FitConfig = FitConfig(fit_grid=256), prior: PriorConfig = PriorConfig(),
                 device="cpu", noise: DirectNoise = DirectNoise(), oversample: int = 2):
        super().__init__(config, prior, device)
        self.noise = noise
        g = config.fit_grid
        fine = fine_grid(g, noise.spot_sigma, oversample)
        self.model = ExpectedImage(dataclasses.replace(config.forward, grid=fine, n_terms=self.L), self.device)
        self.W = spot_matrix(g // 2, fine // 2, noise.spot_sigma * fine / 2.0).to(self.device)
        self.W2 = self.W ** 2
        # A folded pixel sums four image pixels; the floor (1e-3 electrons^2, far below any pixel's
        # variance) keeps Q finite where the model is exactly 0 and the data are not (a spot's tail).
        self.offset = 4.0 * noise.background_var + 1e-3
        self._hits = None  # the last fine folded hit image (the noise's intensity)

    def _blur(self, x: torch.Tensor, W: torch.Tensor) -> torch.Tensor:
        """(..., hf * hf) fine folded images -> (..., h * h) image-grid ones: W X W^T per image."""
        hf = W.shape[1]
        y = W @ x.reshape(-1, hf, hf) @ W.T
        return y.reshape(*x.shape[:-1], -1)

    def _model(self, theta: torch.Tensor, jacobian: bool):
        lam, J = super()._model(theta, jacobian)
        self._hits = lam
        mu = self._blur(lam, self.W) + self.offset
        return mu, (self._blur(J, self.W) if jacobian else None)

    def _pixel_variance(self, mu: torch.Tensor) -> torch.Tensor:
        """Each folded pixel's variance: E[a^2] sum_x lambda_x W_px^2 + the background's."""
        return self.noise.dispersion * self._blur(self._hits, self.W2) + self.offset

    def score_covariance(self, mu: torch.Tensor, J: torch.Tensor) -> torch.Tensor:
        """M = Cov of the quasi-score at theta (module docstring): (P, P). Uses the hit image of the
        last ``_model`` call (the one that gave ``mu``)."""
        keep = mu > 0
        g = torch.zeros_like(J)
        g[:, keep] = J[:, keep] / mu[keep]
        hf = self.W.shape[1]
        h = self.W.shape[0]
        back = (self.W.T @ g.reshape(-1, h, h) @ self.W).reshape(len(g), hf * hf)  # B^T g: (P, fine px)
        M = self.noise.dispersion * (back * self._hits) @ back.T
        return M + self.offset * (g @ g.T)

    def _error_curvature(self, theta, mu, J, n, g, H):
        """Curvature-adjusted posterior: H_lik -> H_lik M^-1 H_lik, its gradient -> H_lik M^-1 g_lik
        (pseudo-inverses after scaling to unit diagonal; the prior's terms unchanged)."""
        keep = mu > 0
        g_lik = J[:, keep] @ (1 - n[keep] / mu[keep])
        g_prior = g - g_lik
        H_lik = poisson_fisher(mu, J)
        M = self.score_covariance(mu, J)
        d = H_lik.diagonal().clamp_min(1e-300).sqrt()
        s = d[:, None] * d[None, :]
        Hs, Ms = H_lik / s, M / s
        A = Hs @ torch.linalg.pinv(Ms, hermitian=True, rtol=1e-12)  # (D H D)(D M D)^+ = D H M^-1 D^-1
        info = (A @ Hs) * s
        g_adj = (A @ (g_lik / d)) * d
        return g_adj + g_prior, info + (H - H_lik)
