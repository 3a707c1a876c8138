"""Error bars from the measurement's own spread: the frames summed in batches (batch means).

A frame sum's fit answers ``theta_hat = theta - H^-1 g`` (``sevi.fit.frame_sum_fit``), and to first
order its error is ``H^-1 (U (y - mu) - P_grad (theta - m))``: ``U`` (P, n) the estimator's weights on
the folded pixels (GLS ``J C^-1``, weighted least squares ``J V^-1``), ``H = U J^T + P`` its curvature
with the prior's precision ``P``. The error bars the model claims (GLS: ``H^-1``, which assumes
``Cov(U y) = U J^T``; the weighted fit: its sandwich with the model's C) assume that the pixels'
covariance C is what the model says. Where the camera's spots pile up C is
least right (docs/forward_model.md, "The frame sum's covariance, checked").

The frames say what C is along U without any model. A measurement's frames are independent draws of
one distribution, so the frame sum of N frames split into K contiguous batches of ``n_k`` frames,
``y = sum_k y_k``, has ``Cov(y_k) = (n_k / N) Cov(y)``, and

    M_hat = N / (N - sum_k n_k^2 / N) * sum_k s_k s_k^T,    s_k = U (y_k - (n_k / N) y)

is an unbiased estimate of ``Cov(U y)`` (for equal batches the factor is K / (K - 1)). It needs no
model of the camera, and a mean misfit cancels in ``y_k - (n_k / N) y``. Frames that drift slowly
(a laser, a voltage) show up in it as they should.

The answer's covariance is then the posterior's with its data part measured (the Bayes risk of the
step under the prior: ``E[P (theta - m)(theta - m)^T P] = P``),

    V = H^-1 (M_hat + P) H^-1,

which is ``H^-1`` when ``M_hat = U J^T``, GLS's own bars. The step itself is unchanged. No
inverse of M_hat is taken, so V is unbiased for any K; each variance has K - 1 degrees of freedom
(K = 100: a 7 % scatter on an error bar; ``sevi.fit.estimators.DEFAULT_BATCHES``).

Frame sums (y, y_k) in electron units on the fit's folded pixels, flattened (n,).
"""

from __future__ import annotations

import torch

from sevi.physics.information import covariance

__all__ = [
    "BatchResiduals",
    "BatchSpreadError",
    "batch_residuals",
    "batches_needed",
    "spread_error_curvature",
]


def batches_needed(n_params: int) -> int:
    """The fewest batches whose spread is a full-rank covariance of a fit's ``n_params`` scores."""
    return n_params + 2


class BatchSpreadError(ValueError):
    """Batches that cannot give error bars: too few, of unequal pixels, or without frames."""


class BatchResiduals:
    """The batches' deviations from their share of the sum, ``r_k = y_k - (n_k / N) y`` (K, n), and
    the unbiasing factor ``N / (N - sum_k n_k^2 / N)`` (module docstring)."""

    def __init__(self, residuals: torch.Tensor, factor: float, frames: int):
        self.residuals, self.factor, self.frames = residuals, factor, frames

    def __len__(self) -> int:
        return self.residuals.shape[0]

    def score_covariance(self, U: torch.Tensor) -> torch.Tensor:
        """``M_hat``: the estimate of ``Cov(U y)`` for weights U (P, n), (P, P) symmetric."""
        s = U @ self.residuals.to(U).T  # (P, K)
        M = self.factor * (s @ s.T)
        return 0.5 * (M + M.T)


def batch_residuals(folded: torch.Tensor, frames, min_batches: int = 2) -> BatchResiduals:
    """``folded`` (K, n): each batch's frame sum on the fit's folded pixels; ``frames`` (K,): its frame
    count. Raises BatchSpreadError for fewer than ``min_batches`` batches or a batch without frames."""
    folded = torch.as_tensor(folded, dtype=torch.float64)
    nk = torch.as_tensor(frames, dtype=torch.float64, device=folded.device).reshape(-1)
    if folded.ndim != 2 or folded.shape[0] != nk.numel():
        raise BatchSpreadError(f"expected (K, pixels) batch sums and K frame counts, got {tuple(folded.shape)} and "
                               f"{nk.numel()}")
    if nk.numel() < min_batches:
        raise BatchSpreadError(f"{nk.numel()} batches of frames; the error bars from the frames' spread need at least "
                               f"{min_batches}")
    if not bool((nk >= 1).all()):
        raise BatchSpreadError("a batch holds no frames; every batch needs at least one")
    N = float(nk.sum())
    residuals = folded - (nk / N)[:, None] * folded.sum(0)[None, :]
    factor = N / (N - float((nk ** 2).sum()) / N)
    return BatchResiduals(residuals, factor, int(N))


def spread_error_curvature(g: torch.Tensor, H: torch.Tensor, U: torch.Tensor, batches: BatchResiduals,
                           P: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor] | None:
    """The gradient and curvature whose step is the estimator's own, ``H^-1 g``, and whose inverse is
    ``V = H^-1 (M_hat + diag(P)) H^-1`` (module docstring): ``(g_eff, H_eff)`` as the fits'
    ``_error_curvature`` returns them (``sevi.fit.count_fit.Refiner._result`` takes the answer's
    centre ``theta - H_eff^-1 g_eff`` and its covariance ``H_eff^-1``). ``g`` (P,), ``H`` (P, P) the
    posterior's (prior included), ``U`` (P, n) the weights, ``P`` (P,) the prior's precisions.
    A singular H (two identical shells) is returned as it is: its error bars stay infinite. None when
    V is singular (fewer batches than parameters): the caller says so and keeps the model's bars."""
    Hi = covariance(0.5 * (H + H.T))
    if not bool(torch.isfinite(Hi).all()):
        return g, H
    V = Hi @ (batches.score_covariance(U) + torch.diag(P)) @ Hi
    H_eff = covariance(0.5 * (V + V.T))
    if not bool(torch.isfinite(H_eff).all()):
        return None
    return H_eff @ (Hi @ g), H_eff
