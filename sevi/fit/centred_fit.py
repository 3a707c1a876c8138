"""The course refinement with the image centre fitted too: two shells, the training prior, and (x0, z0).

``sevi.fit.count_fit.Refiner`` takes the course's centre, the corner between the image's two middle
pixels, and fits the folded quadrant. An image whose centre is not known (a lab's image in the
course's format, a detector whose axis drifted) breaks that fold. This fit keeps everything else of
the course refinement (the regressor's start and its multi-start for close shells, the prior, the
Laplace error bars, the mixture of modes) and fits the whole image instead of its fold:

    theta = (per shell R, sigma_R, N, beta_2 .. beta_2L, then x0, z0),
    mu    = sum_j shell_j(x0, z0, R_j, sigma_Rj, N_j, beta_j)     on the fit grid's pixels,

with the exact expected image around any centre (``sevi.physics.grid_image.GridImage``, its
derivatives, the centre's included, in closed form). The centre's prior is uniform on a box of
``centre_window`` input pixels around its start (:func:`sevi.fit.centre_estimate.estimate_centre`,
or a given centre, which is then held). Its error bars come from the same Laplace approximation
as the shells'. The result's ``centre`` and ``centre_sd`` are in the fit grid's pixel indices;
:func:`to_input_pixels` turns them into the input image's (docs/conventions.md, "Any image").

Limit: the fit needs a start within about a shell's width of the true centre. Started from the
estimate it found the centre on every image measured (BENCHMARKS.md, "Lab images"), but a start 2 px off on a 64^2
image whose rings are a third of a pixel wide ends in a false optimum (chi^2/dof 190-980, named by
the misfit warning of ``sevi.pipeline.image_answer``, its log posterior -inf in the diagnostics).

Cost: the whole image is four times the folded quadrant's pixels, and the model is evaluated per
shell, so a fit takes several times the known-centre fit's time (BENCHMARKS.md, "Lab images").
"""

from __future__ import annotations

import numpy as np
import torch

from sevi.fit.centre_estimate import estimate_centre
from sevi.fit.count_fit import FitConfig, FitResult, Refiner
from sevi.physics.grid_image import GridImage, PixelGrid
from sevi.physics.prior import PriorConfig

__all__ = ["CentredRefiner", "add_centre_parameters", "centre_on_grid", "centre_prior", "to_input_pixels",
           "whole_image_shells"]


def to_input_pixels(centre, centre_sd, image_grid: int, fit_grid: int) -> tuple[np.ndarray, np.ndarray]:
    """A centre (and its sd) in the fit grid's pixel indices -> the input image's: fit pixel j covers
    input pixels j k .. j k + k - 1 (k = image_grid / fit_grid), centred on j k + (k - 1) / 2."""
    k = image_grid // fit_grid
    return k * np.asarray(centre, float) + (k - 1) / 2, k * np.asarray(centre_sd, float)


def add_centre_parameters(fit) -> None:
    """Extend a two-shell fit's theta by (x0, z0): flat prior terms for them, and the shells' own
    bounds and precisions kept apart (``centre_prior`` completes them per image)."""
    two = torch.zeros(2, dtype=torch.float64, device=fit.device)
    fit.P_grad, fit.P, fit.m_full = (torch.cat([v, two]) for v in (fit.P_grad, fit.P, fit.m_full))
    fit._shell_lo, fit._shell_hi, fit._shell_P = fit.lo, fit.hi, fit.P[:-2]


def centre_on_grid(theta: torch.Tensor, per_fit_pixel: int) -> tuple[float, float]:
    """The centre (fit grid indices, the last two of theta) on a grid of ``per_fit_pixel`` pixels per
    fit pixel: index m c + (m - 1) / 2."""
    m = per_fit_pixel
    return float(theta[-2]) * m + (m - 1) / 2, float(theta[-1]) * m + (m - 1) / 2


def whole_image_shells(fit, model: GridImage, theta: torch.Tensor, per_fit_pixel: int, jacobian: bool):
    """Both shells of ``theta`` (the fit's shells, then the centre in fit grid indices) on ``model``'s
    whole grid, whose pixels are 1 / ``per_fit_pixel`` of a fit pixel: mu flattened and, with
    ``jacobian``, J (P, pixels) in theta's order (the centre's per fit pixel)."""
    R, s, N, beta = fit._unpack(theta)
    m = per_fit_pixel
    centre = centre_on_grid(theta, m)
    P = 3 + fit.L
    mu, J = None, None
    for j in range(2):
        mj, Jj = model.shell(float(R[j]), float(s[j]), float(N[j]), beta[j], centre, jacobian)
        mu = mj.reshape(-1) if mu is None else mu + mj.reshape(-1)
        if jacobian:
            Jj = Jj.reshape(Jj.shape[0], -1)
            if J is None:
                J = torch.zeros(theta.numel(), Jj.shape[1], dtype=torch.float64, device=fit.device)
            J[j * P:(j + 1) * P] = Jj[2:]
            J[-2:] += m * Jj[:2]
    return mu, J


def centre_prior(fit, rebinned: torch.Tensor, centre, k: int, window: float) -> torch.Tensor:
    """The centre's start and prior for a centred fit (this module's, ``sevi.fit.centred_frame_sum_fit``):
    ``centre`` None, the estimate of the rebinned image (fit grid indices), free in a box of ``window``
    input pixels (plus 2 fit pixels) around it; or (x0, z0) in input pixel indices (``k`` per fit
    pixel), held by a point prior so that the shells' error bars are conditional on it. Sets the fit's
    ``lo``, ``hi`` and ``P`` (its shells' followed by the centre's); returns the start (2,)."""
    if centre is None:
        c0 = np.array(estimate_centre(rebinned.cpu().numpy()))
        half, held = window / k + 2, 0.0
    else:
        c0 = (np.asarray(centre, float) - (k - 1) / 2) / k
        half, held = 0.0, 1e12
    c0_t = torch.as_tensor(c0, dtype=torch.float64, device=fit.device)
    fit.lo = torch.cat([fit._shell_lo, c0_t - half])
    fit.hi = torch.cat([fit._shell_hi, c0_t + half])
    fit.P = torch.cat([fit._shell_P, torch.full((2,), held, dtype=torch.float64, device=fit.device)])
    return c0_t


class CentredRefiner(Refiner):
    """``CentredRefiner(cfg, prior, device)(image, R, sigma_R, beta, R_sd, centre=None)``: the module."""

    def __init__(self, config: FitConfig = FitConfig(), prior: PriorConfig = PriorConfig(), device="cpu",
                 centre_window: float = 40.0):
        super().__init__(config, prior, device)
        g = config.fit_grid
        self.image_model = GridImage(PixelGrid((g, g), 2.0 / g), self.L, config.forward, self.device)
        self.centre_window = float(centre_window)  # input pixels around the start
        add_centre_parameters(self)

    def _unpack(self, theta: torch.Tensor):
        return super()._unpack(theta[: self.n_shell_params])

    def _model(self, theta: torch.Tensor, jacobian: bool):
        """The whole image's mu (g g,) and, with ``jacobian``, J (P, g g)."""
        return whole_image_shells(self, self.image_model, theta, 1, jacobian)

    def fold(self, image) -> torch.Tensor:
        """The whole image at the fit grid, flattened: nothing is folded when the centre is free."""
        return self.rebin(image).reshape(-1) + self.offset

    def __call__(self, image, R, sigma_R, beta, R_sd=None, centre=None) -> FitResult:
        """Refine one image's answer and its centre. ``centre``: None (estimated, then fitted) or
        (x0, z0) in the input image's pixel indices (held)."""
        rebinned = self.rebin(image)
        k = int(np.shape(image)[-1]) // self.config.fit_grid
        c0_t = centre_prior(self, rebinned, centre, k, self.centre_window)
        n = rebinned.reshape(-1) + self.offset
        total = float(n.sum()) - self.offset * n.numel()
        if not total > 0:
            raise ValueError("the image has no counts; nothing to fit")
        starts = [(name, torch.cat([th, c0_t])) for name, th in self.starts(R, sigma_R, beta, total, R_sd)]
        return self._answer(self._fit_starts(starts, n), n)

