"""Refinement: a prior narrowed around first-pass predictions of a measurement (the notes' second,
narrower prior, then fine-tuning on it).

``PriorConfig`` holds one distribution per beta index, shared by both shells (shells are drawn
alike and then sorted by radius), so the narrowed prior is, per coefficient, the union over shells
(and over images, when the Answer holds several) of the boxes prediction +- width * sigma,
intersected with the original limits; within a box beta is drawn from a broad truncated normal
(mean = box centre, sigma = box half-width: near uniform, which does not over-trust the first
pass). The radius range is the union of R +- width * sigma_R_pred likewise. sigma_R and the
electron counts keep the base prior's ranges.

Uncertainties come from the ``AnswerUncertainty`` dataset that ``sevi predict`` writes beside
``Answer``; without it, a fraction ``fallback_sd`` of each coefficient's prior sigma is used.
"""

from __future__ import annotations

import dataclasses

import h5py
import numpy as np

from sevi.physics.prior import PriorConfig


def narrow_prior(base: PriorConfig, beta: np.ndarray, beta_sd: np.ndarray, R: np.ndarray, R_sd: np.ndarray,
                 width: float = 3.0) -> PriorConfig:
    """beta, beta_sd: (n, 2, L); R, R_sd: (n, 2). Returns the narrowed PriorConfig (module doc)."""
    if width <= 0:
        raise ValueError(f"refine width must be positive, got {width}")
    beta, beta_sd = np.asarray(beta, float).reshape(-1, base.n_terms), np.asarray(beta_sd, float).reshape(-1, base.n_terms)
    lo0, hi0 = np.array(base.beta_low), np.array(base.beta_high)
    lo = np.clip((beta - width * beta_sd).min(0), lo0, hi0)
    hi = np.clip((beta + width * beta_sd).max(0), lo0, hi0)
    # Keep every box non-empty: at least 2% of the original range wide, inside the limits.
    min_w = 0.02 * (hi0 - lo0)
    short = hi - lo < min_w
    mid = np.clip((lo + hi) / 2, lo0 + min_w / 2, hi0 - min_w / 2)
    lo, hi = np.where(short, mid - min_w / 2, lo), np.where(short, mid + min_w / 2, hi)
    R, R_sd = np.asarray(R, float).ravel(), np.asarray(R_sd, float).ravel()
    r_lo0, r_hi0 = base.radius_range
    r_lo = float(np.clip((R - width * R_sd).min(), r_lo0, r_hi0))
    r_hi = float(np.clip((R + width * R_sd).max(), r_lo0, r_hi0))
    if r_hi - r_lo < 0.01:
        c = min(max((r_lo + r_hi) / 2, r_lo0 + 0.005), r_hi0 - 0.005)
        r_lo, r_hi = c - 0.005, c + 0.005
    return dataclasses.replace(base, beta_low=tuple(lo.tolist()), beta_high=tuple(hi.tolist()),
                               beta_mean=tuple(((lo + hi) / 2).tolist()),
                               beta_sigma=tuple(((hi - lo) / 2).tolist()), radius_range=(r_lo, r_hi),
                               min_separation=min(base.min_separation, r_hi - r_lo))


def narrow_prior_from_file(base: PriorConfig, answer_path: str, width: float = 3.0,
                           fallback_sd: float = 0.1) -> PriorConfig:
    """Read ``Answer`` (+ ``AnswerUncertainty`` if present) from a sevi predict output."""
    from sevi.io.tables import read_answer
    rows = read_answer(answer_path)
    L = rows["beta"].shape[1]
    if L != base.n_terms:
        raise ValueError(f"{answer_path}: Answer has {L} betas per shell, the prior has {base.n_terms}")
    with h5py.File(answer_path, "r") as f:
        unc = f["AnswerUncertainty"][()] if "AnswerUncertainty" in f else None
    if unc is None:
        beta_sd = np.broadcast_to(fallback_sd * np.array(base.beta_sigma), rows["beta"].shape)
        R_sd = np.full(len(rows), 0.02)
    else:
        if len(unc) != len(rows):
            raise ValueError(f"{answer_path}: AnswerUncertainty has {len(unc)} rows, Answer {len(rows)}")
        beta_sd, R_sd = unc["beta"], unc["R"]
    return narrow_prior(base, rows["beta"], beta_sd, rows["R"], R_sd, width)
