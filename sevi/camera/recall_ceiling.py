"""What any centroider could reach: recall ceilings from the Cramer-Rao bound.

An electron counts as found when an estimate lies within ``tol`` px of it. For an unbiased
estimator at the Cramer-Rao bound the 2-D error is Gaussian with the bound's covariance, so the
chance of a match is ``P(|e| <= tol)`` under that covariance. Two ceilings:

- :func:`pair_match_probability` / :func:`recall_ceiling`: each electron with only its nearest
  neighbour (a pair, nothing else near). Optimistic: a third spot only adds uncertainty.
- :func:`cluster_recall_ceiling`: each electron inside its whole cluster (all electrons linked by
  neighbours closer than ``link_px``), every spot with free position, amplitude, width and
  correlation. Still optimistic: the count and the starting point are taken as known, the
  camera's saturation at 255 and the undetected-electron share are ignored, and a biased
  estimator can beat the bound on close pairs (BENCHMARKS.md, section 3).

Common conventions: the spot is the camera's (``sevi.camera.frames.FrameModel``) at its mean
amplitude, width and zero correlation, sampled at pixel centres; the noise is the background's
20 counts per pixel; amplitude, width and correlation carry the camera model's Gaussian priors
(N(100, 10^2), N(7.68, 0.51^2) px, N(0, 0.1^2)), positions a flat one. Electrons closer than
``2 tol`` to each other are one estimate at their midpoint (which matches all of them) and count
as found, as in the pair ceiling. Positions are in px.
"""
from __future__ import annotations

import numpy as np
from scipy.sparse.csgraph import connected_components

from sevi.camera.frames import FrameModel

__all__ = ["NN_BINS_PX", "nearest_neighbour", "pair_match_probability", "recall_ceiling",
           "cluster_recall_ceiling"]

NN_BINS_PX = (0.0, 3.0, 6.0, 9.0, 12.0, 16.0, 23.0, np.inf)  # nearest-neighbour distance bins, px


def nearest_neighbour(t: np.ndarray) -> np.ndarray:
    """Distance (px) from each true electron to the nearest other one of its frame (inf if alone)."""
    if len(t) < 2:
        return np.full(len(t), np.inf)
    d = np.linalg.norm(t[:, None] - t[None], axis=2)
    np.fill_diagonal(d, np.inf)
    return d.min(1)


def _spot_columns(X, Z, x0, z0, model: FrameModel, amp: float) -> list[np.ndarray]:
    """d(model)/d(x0, z0, A, s, rho) of one spot at (x0, z0) on the pixel grid (X, Z), at rho = 0."""
    s = model.sigma_mean * model.grid / 2
    a, c = X - x0, Z - z0
    q = (a * a + c * c) / (2 * s * s)
    g = np.exp(-q)
    return [amp * g * a / s ** 2, amp * g * c / s ** 2, g, amp * g * 2 * q / s, -amp * g * a * c / s ** 2]


def _prior_precision(model: FrameModel) -> np.ndarray:
    return np.array([0.0, 0.0, model.amp_std ** -2, (model.sigma_std * model.grid / 2) ** -2,
                     model.rho_std ** -2])


def _within(cov2: np.ndarray, tol: float, draws: np.ndarray) -> np.ndarray:
    """P(|e| <= tol) for 2-D Gaussian errors with covariances ``cov2`` (n, 2, 2), from shared
    standard-normal ``draws`` (m, 2)."""
    L = np.linalg.cholesky(cov2 + 1e-12 * np.eye(2))
    e = np.einsum("nij,mj->nmi", L, draws)
    return (np.hypot(e[..., 0], e[..., 1]) <= tol).mean(1)


def pair_match_probability(d_px: np.ndarray, model: FrameModel, tol: float, draws: int = 20000) -> np.ndarray:
    """Chance that an estimator at the Cramer-Rao bound puts an electron within ``tol`` px, when its
    nearest neighbour is ``d_px`` away and no other spot is near (pairs only; no saturation).
    At ``d <= 2 tol`` both can be put at the pair's midpoint, so the chance there is 1."""
    s = model.sigma_mean * model.grid / 2
    g = np.arange(-int(4 * s) - 16, int(4 * s) + 17) + 0.3
    X, Z = np.meshgrid(g, g, indexing="ij")
    z = np.random.default_rng(0).standard_normal((draws, 2))
    prior = np.tile(_prior_precision(model), 2)
    out = np.ones(len(d_px))
    for i, d in enumerate(d_px):
        if d <= 2 * tol:
            continue
        cols = _spot_columns(X, Z, -d / 2, 0.0, model, model.amp_mean) + \
            _spot_columns(X, Z, d / 2, 0.0, model, model.amp_mean)
        J = np.stack([c.ravel() for c in cols], 1) / model.background_std
        cov = np.linalg.inv(J.T @ J + np.diag(prior))[:2, :2]
        out[i] = _within(cov[None], tol, z)[0]
    return out


def _bin_means(values: np.ndarray, nn: np.ndarray) -> list[float]:
    b = np.clip(np.digitize(nn, NN_BINS_PX) - 1, 0, len(NN_BINS_PX) - 2)
    return [float(values[b == k].mean()) if np.any(b == k) else float("nan") for k in range(len(NN_BINS_PX) - 1)]


def recall_ceiling(true_by_frame, model: FrameModel, tol: float) -> tuple[float, list[float]]:
    """Mean over true electrons of :func:`pair_match_probability` at their nearest-neighbour
    distance. Returns the ceiling and its value per ``NN_BINS_PX`` bin."""
    nn = np.concatenate([nearest_neighbour(t) for t in true_by_frame] or [np.zeros(0)])
    table_d = np.arange(0.0, 40.5, 0.5)
    table_p = pair_match_probability(table_d, model, tol)
    p = np.interp(np.minimum(nn, 1e9), table_d, table_p, right=1.0)
    return (float(p.mean()) if len(p) else 1.0), _bin_means(p, nn)


def cluster_match_probability(t: np.ndarray, model: FrameModel, tol: float, link_px: float = 23.0,
                              draws: int = 4000) -> np.ndarray:
    """Per electron of one frame (``t`` (n, 2) px), the chance that an estimator at the Cramer-Rao
    bound of its whole cluster puts it within ``tol`` px (see the module docstring)."""
    n = len(t)
    out = np.ones(n)
    if n < 2:
        return out
    d = np.linalg.norm(t[:, None] - t[None], axis=2)
    # Electrons closer than 2 tol: one estimate at their midpoint, its amplitude their sum.
    _, merged = connected_components(d <= 2 * tol, directed=False)
    centres = np.stack([np.bincount(merged, weights=t[:, k]) / np.bincount(merged) for k in (0, 1)], 1)
    mult = np.bincount(merged)
    dc = np.linalg.norm(centres[:, None] - centres[None], axis=2)
    ncl, lab = connected_components(dc < link_px, directed=False)
    s = model.sigma_mean * model.grid / 2
    margin = 4 * s
    z = np.random.default_rng(0).standard_normal((draws, 2))
    prior1 = _prior_precision(model)
    p_centre = np.ones(len(centres))
    for c in range(ncl):
        mem = np.flatnonzero(lab == c)
        if len(mem) < 2:
            continue                      # alone within link_px: the bound is ~0.16 px, found
        lo = np.floor(centres[mem].min(0) - margin)
        hi = np.ceil(centres[mem].max(0) + margin)
        X, Z = np.meshgrid(np.arange(lo[0], hi[0] + 1), np.arange(lo[1], hi[1] + 1), indexing="ij")
        cols, prior = [], []
        for m in mem:
            cols += _spot_columns(X, Z, centres[m, 0], centres[m, 1], model, model.amp_mean * mult[m])
            prior.append(prior1)
        J = np.stack([c_.ravel() for c_ in cols], 1) / model.background_std
        cov = np.linalg.inv(J.T @ J + np.diag(np.concatenate(prior)))
        pos = np.stack([cov[5 * k:5 * k + 2, 5 * k:5 * k + 2] for k in range(len(mem))])
        p_centre[mem] = _within(pos, tol, z)
    out = p_centre[merged]
    out[mult[merged] > 1] = 1.0           # the midpoint matches every member
    return out


def cluster_recall_ceiling(true_by_frame, model: FrameModel, tol: float,
                           link_px: float = 23.0) -> tuple[float, list[float]]:
    """Mean over true electrons of :func:`cluster_match_probability`; also per ``NN_BINS_PX`` bin."""
    p = np.concatenate([cluster_match_probability(t, model, tol, link_px) for t in true_by_frame] or [np.zeros(0)])
    nn = np.concatenate([nearest_neighbour(t) for t in true_by_frame] or [np.zeros(0)])
    return (float(p.mean()) if len(p) else 1.0), _bin_means(p, nn)
