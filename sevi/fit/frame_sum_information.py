"""The frame-sum fit's estimator to first order, and one that would use the pixels' correlations:
how much each can tell about theta, and what each claims its error is.

Near the truth an estimator of theta from the frame sum y (folded fit pixels, electron units) is to
first order ``theta_hat - theta = A (y - mu)``, with ``mu`` and the pixels' covariance ``C`` those of
``sevi.fit.frame_sum_fit`` (the camera's exact mean response; the spots' light through the mean
spot's blur, plus each pixel's excess variance) and ``J = d mu / d theta`` (P, n):

* ``wls``, the frame-sum fit: weights ``V^-1`` (``V = diag C``), ``U = J V^-1``, ``H = U J^T``,
  ``A = H^-1 U``; claimed covariance the sandwich ``H^-1 M H^-1`` with ``M = U C U^T``; its
  information ``H M^-1 H`` (Godambe) is what the fit's error bars use.
* ``gls``, generalised least squares: ``U = J C^-1``, ``A = H^-1 U``, claimed covariance ``H^-1``
  (``J C^-1 J^T`` is the Gaussian information of y about theta through its mean). It would be the
  better estimator **if C were exact**; it weights most the directions where C claims the least
  noise, the blur's fine structure, so it is only as good as C there.

Whether C is right along each estimator's directions is an empirical question:
``sevi.evaluation.frame_sum_covariance`` renders many frame sums at one theta and compares each
estimator's actual variance with the variance it claims (docs/forward_model.md, "The frame sum's
covariance, checked").

``C^-1 J^T`` is solved by conjugate gradients (``sevi.fit.conjugate_gradient``) with ``V`` as the
preconditioner, using only the fit's ``covariance_times`` (C is never formed: 16,384 folded pixels
at 256^2).
"""

from __future__ import annotations

import torch

from sevi.fit.conjugate_gradient import conjugate_gradient
from sevi.physics.information import covariance

__all__ = ["truth_theta", "linear_estimators", "gls_gradient_and_curvature", "CG_TOLERANCE"]

CG_TOLERANCE = 1e-6  # the conjugate gradients' worst relative residual for C^-1 J^T


def truth_theta(R, sigma_R, n_detected, beta) -> torch.Tensor:
    """The fits' parameter vector for two shells (per shell: R, sigma_R, N, beta_2 .. beta_2L; detector
    units, N in detected electrons): (2 (3 + L),) float64."""
    R, s, N = (torch.as_tensor(v, dtype=torch.float64).reshape(-1) for v in (R, sigma_R, n_detected))
    b = torch.as_tensor(beta, dtype=torch.float64).reshape(len(R), -1)
    return torch.cat([torch.cat([R[j:j + 1], s[j:j + 1], N[j:j + 1], b[j]]) for j in range(len(R))])


def _inverse(M: torch.Tensor) -> torch.Tensor:
    """M^-1 of a symmetric positive-definite (P, P) matrix whose scales differ by 1e8."""
    return covariance(0.5 * (M + M.T))


def linear_estimators(refiner, theta: torch.Tensor, tol: float = CG_TOLERANCE, max_iterations: int = 5000,
                      gls: bool = True) -> dict:
    """At ``theta`` for ``refiner`` (a ``sevi.fit.frame_sum_fit.FrameSumRefiner``; its anchor is moved
    to theta): {'mu': (n,), 'wls' and 'gls': {'A': (P, n), 'claimed': (P, P) covariance,
    'information': (P, P)}, 'cg_residual': float, 'cg_iterations': int} (module docstring).
    ``gls`` False: the fit's estimator alone (no conjugate gradients; 'gls' and the cg keys absent)."""
    theta = torch.as_tensor(theta, dtype=torch.float64, device=refiner.device)
    refiner._set_anchor(theta)
    mu, J = refiner._model(theta, True)
    V = refiner.anchor["var"]
    out = {"mu": mu}
    U = J / V
    Hi = _inverse(U @ J.T)
    M = refiner.score_covariance(mu, J)
    claimed = Hi @ M @ Hi
    out["wls"] = {"A": Hi @ U, "claimed": 0.5 * (claimed + claimed.T), "information": _inverse(claimed)}
    if not gls:
        return out
    X, H, residual, iterations = _gls_solve(refiner, J, tol, max_iterations)
    Hi = _inverse(H)
    out["gls"] = {"A": Hi @ X, "claimed": Hi, "information": H}
    out["cg_residual"], out["cg_iterations"] = residual, iterations
    return out


def gls_gradient_and_curvature(refiner, theta: torch.Tensor, mu: torch.Tensor, J: torch.Tensor, n: torch.Tensor,
                               tol: float = CG_TOLERANCE, max_iterations: int = 5000):
    """The generalised-least-squares posterior's gradient and curvature at ``theta`` for the folded
    frame sum ``n`` (``refiner``'s anchor set; ``mu``, ``J`` its model and Jacobian there), with the
    fit's own Gaussian prior:

        g = -J C^-1 (n - mu) + P_grad (theta - m),        H = J C^-1 J^T + P,

    so ``theta - H^-1 g`` is one Gauss-Newton step of GLS from ``theta`` and ``H^-1`` its claimed
    covariance (docs/forward_model.md, "The frame sum's covariance, checked"). Returns (g, H, the
    conjugate gradients' worst relative residual, the weights ``X = J C^-1`` (P, n))."""
    X, H, residual, _ = _gls_solve(refiner, J, tol, max_iterations)
    g = -(X @ (n.to(mu) - mu)) + refiner.P_grad * (theta - refiner.m_full)
    return g, H + torch.diag(refiner.P), residual, X


def _gls_solve(refiner, J: torch.Tensor, tol: float, max_iterations: int):
    """``X = (C^-1 J^T)^T`` by conjugate gradients at ``refiner``'s anchor (its variances the
    preconditioner) and the GLS information ``J C^-1 J^T``, symmetrised: (X, H, residual, iterations)."""
    X, residual, iterations = conjugate_gradient(refiner.covariance_times, J, refiner.anchor["var"], tol,
                                                 max_iterations)
    H = J @ X.T
    return X, 0.5 * (H + H.T), residual, iterations
