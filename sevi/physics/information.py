"""The information limit of a detector image: Fisher information, Cramer-Rao bound, Bayesian floor.

A histogram of independent electrons has Poisson pixels of mean mu(theta) (``sevi.physics.forward``;
with a fixed total it is multinomial, which differs only in the total count's information). Its
Fisher information about the parameters theta is

    F = sum_pixels (d mu / d theta)(d mu / d theta)^T / mu,

computed on the folded quadrant, which is a sufficient statistic of the symmetric image (same F).
theta holds, per shell (smaller radius first), (R, sigma_R, N, beta_2 .. beta_2L): 2 (3 + L)
parameters. The electron counts N are unknown nuisance parameters estimated jointly, as in any
fit of a measurement whose length is not known to the electron (``parameter_names``).

* Cramer-Rao bound: any unbiased estimator has covariance >= F^-1. The Distance it implies is
  E[sum_j sqrt(e_j^T W e_j)], e ~ N(0, (F^-1)_beta,beta), W = diag(2 / (4i + 1)): drawn by Monte
  Carlo (``expected_distance``), a fair stand-in for the Distance of an efficient estimator.
* Bayesian floor (Gaussian approximation): with the prior's precision P added (1 / variance of
  each beta's truncated normal; R, sigma_R and N are uniform or nuisance: no precision),
  (F + P)^-1 is the covariance of the posterior in the Laplace approximation at the truth, the
  image-domain counterpart of an estimator that shrinks towards the prior. Biased estimators may
  go below the CRB; a Bayes estimator averaged over the prior cannot do much better than this.

Detector variants (``DETECTORS``; docs/forward_model.md): "histogram", every emitted electron
(the generator's images); "events", the detected electrons only (detection efficiency 0.9, the
camera model's), a perfect centroider; "direct", the summed frames: a fixed linear map (the mean
spot's blur) of the detected electrons with each spot's flux spread (relative std 0.17) added,
so its floor is at least the events floor with the variance 1.029 times larger. That is a bound
from below (any estimator on the summed frames is one on the detected electrons), not the exact
limit of the blurred image.
"""

from __future__ import annotations

import math

import numpy as np
import torch

from sevi.physics.forward import ExpectedImage
from sevi.physics.metric import SEPARATION

DETECTION_EFFICIENCY = 0.9  # the camera model's: about 10% of electrons make no spot (docs/camera.md)
FLUX_VARIANCE_FACTOR = 1 + 0.1**2 + (2 * 0.001 / 0.015) ** 2  # 1.029: spot-flux spread (sevi/camera/direct_image.py)
DETECTORS = {"histogram": 1.0, "events": DETECTION_EFFICIENCY,
             "direct": DETECTION_EFFICIENCY / FLUX_VARIANCE_FACTOR}  # effective fraction of N


def parameter_names(n_terms: int) -> list[str]:
    """Order of theta: per shell j = 0, 1: R, sigma_R, N, beta_2 .. beta_2L."""
    per = ["R", "sigma_R", "N"] + [f"beta_{2 * i}" for i in range(1, n_terms + 1)]
    return [f"{p}[{j}]" for j in range(2) for p in per]


def beta_indices(n_terms: int) -> torch.Tensor:
    """Positions of the betas of both shells in theta: (2, L)."""
    per = 3 + n_terms
    return torch.stack([torch.arange(3, per) + j * per for j in range(2)])


def poisson_fisher(mu: torch.Tensor, J: torch.Tensor) -> torch.Tensor:
    """sum over pixels of J J^T / mu for Poisson pixels of mean mu (n,), derivatives J (P, n);
    pixels with mu = 0 carry no information (and no counts)."""
    keep = mu > 0
    Jk = J[:, keep]
    return (Jk / mu[keep]) @ Jk.T


def fisher_information(fm: ExpectedImage, R, sigma_R, n_electrons, beta) -> torch.Tensor:
    """F (2 (3 + L), 2 (3 + L)) float64 of one image's Poisson pixels, for one parameter set:
    R, sigma_R, n_electrons (2,), beta (2, L)."""
    mu, J = fm.folded(R, sigma_R, torch.as_tensor(n_electrons, dtype=torch.float64), torch.as_tensor(beta),
                      jacobian=True)
    return poisson_fisher(mu, J)


def prior_precision(prior_config, n_terms: int) -> torch.Tensor:
    """Diagonal of P: 1 / variance of each beta's truncated normal; 0 for R, sigma_R and N. (P,)"""
    from scipy.stats import truncnorm
    c = prior_config
    var = []
    for lo, hi, m, s in zip(c.beta_low, c.beta_high, c.beta_mean, c.beta_sigma):
        var.append(truncnorm((lo - m) / s, (hi - m) / s, loc=m, scale=s).var())
    per = torch.cat([torch.zeros(3, dtype=torch.float64), 1 / torch.tensor(var[:n_terms], dtype=torch.float64)])
    return per.repeat(2)


def covariance(F: torch.Tensor) -> torch.Tensor:
    """F^-1, inverted after scaling to unit diagonal (the parameters' scales differ by 1e8).
    A singular F (two identical shells) gives inf variances, never NaN."""
    d = F.diagonal().clamp_min(1e-300).sqrt()
    Fs = F / (d[:, None] * d[None, :])
    evals, evecs = torch.linalg.eigh(Fs)
    if float(evals.min()) <= 1e-12 * float(evals.max()):
        return torch.full_like(F, math.inf)
    inv = (evecs / evals) @ evecs.T
    return inv / (d[:, None] * d[None, :])


def expected_distance(cov_beta: torch.Tensor, n_draws: int = 4000, seed: int = 0, n_shells: int = 2) -> float:
    """E[sum_j sqrt(e_j^T W e_j)] for e ~ N(0, cov_beta), cov_beta (k L, k L) (shell 0's betas first;
    k = ``n_shells``, the course's 2 by default)."""
    if not torch.isfinite(cov_beta).all():
        return math.inf
    L = cov_beta.shape[0] // n_shells
    gen = torch.Generator().manual_seed(seed)
    chol = torch.linalg.cholesky(cov_beta + 1e-30 * torch.eye(n_shells * L, dtype=cov_beta.dtype))
    e = torch.randn(n_draws, n_shells * L, dtype=torch.float64, generator=gen) @ chol.T  # (n, k L)
    w = 2.0 / (4 * torch.arange(1, L + 1, dtype=torch.float64) + 1)
    per_shell = (e.reshape(n_draws, n_shells, L) ** 2 * w).sum(-1).sqrt()
    return float(per_shell.sum(-1).mean())


def image_floors(F: torch.Tensor, P: torch.Tensor, n_terms: int, fraction: float = 1.0, seed: int = 0) -> dict:
    """{'crb': Distance at the Cramer-Rao bound, 'bayes': at the Bayesian floor} for an image whose
    Fisher information at full counts is F, seen with a fraction of its electrons (DETECTORS)."""
    bi = beta_indices(n_terms).reshape(-1)
    out = {}
    for name, M in (("crb", fraction * F), ("bayes", fraction * F + torch.diag(P))):
        C = covariance(M)
        out[name] = expected_distance(C[bi][:, bi], seed=seed)
    return out


def floors_table(values: np.ndarray, separation: np.ndarray, threshold: float = SEPARATION) -> dict:
    """median / mean of per-image floors, all images, separated (|R1-R2| >= threshold) and overlapping."""
    out = {}
    for name, m in (("all", np.ones_like(separation, bool)), ("separated", separation >= threshold),
                    ("overlapping", separation < threshold)):
        v = values[m]
        out[name] = {"n": int(m.sum()), "median": float(np.median(v)) if len(v) else math.nan,
                     "mean": float(np.mean(v)) if len(v) else math.nan}
    return out
