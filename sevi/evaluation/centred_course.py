"""The course refinement with its centre fitted, measured on images whose centre is off by a known amount.

Each draw: two shells from the course's prior (``electrons`` per shell), the centre moved from the
course's (the corner between the middle pixels) by up to ``max_offset`` pixels on each axis
(uniform), the exact expected image (``sevi.physics.grid_image.GridImage``) drawn as Poisson counts
on a ``grid`` x ``grid`` image. Both fits start from the truth perturbed as a regressor's answer
would be (R + 0.004, betas x 0.8): one fits the centre (``sevi.fit.centred_fit.CentredRefiner``),
one holds it at the truth. Per draw: the centre's z-scores (error / its error bar), both fits'
Distances to the truth, their times. The summary: the z-scores' rms per axis and all together, the
ratio of the mean Distances, the largest per-draw ratio.
"""

from __future__ import annotations

import time

import numpy as np
import torch

from sevi.evaluation.calibration import centre_fit_summary

__all__ = ["draw_offset_case", "evaluate_centred", "summarise_centred"]


def draw_offset_case(prior, grid: int, max_offset: float, seed: int):
    """(params, centre (x0, z0) in pixel indices, Poisson image) of one draw."""
    from sevi.physics.grid_image import GridImage, PixelGrid
    from sevi.physics.prior import Prior

    rng = np.random.default_rng(seed)
    p = Prior(prior)(1, seed).params
    centre = (grid - 1) / 2 + rng.uniform(-max_offset, max_offset, 2)
    gi = GridImage(PixelGrid((grid, grid), 2.0 / grid), prior.n_terms)
    mu = sum(gi.shell(float(p.R[0, j]), float(p.sigma_R[0, j]), float(p.n_electrons[0, j]), p.beta[0, j],
                      tuple(centre))[0] for j in range(2)).numpy()
    return p, centre, rng.poisson(mu)


def evaluate_centred(n: int, grid: int, electrons: tuple[int, int], max_offset: float, seed: int = 0,
                     progress: bool = True) -> list[dict]:
    """The module's measurement on ``n`` draws (seeds ``seed`` .. ``seed + n - 1``)."""
    from tqdm import tqdm

    from sevi.fit.centred_fit import CentredRefiner
    from sevi.fit.count_fit import FitConfig
    from sevi.physics.metric import distance
    from sevi.physics.prior import PriorConfig

    prior = PriorConfig().with_electrons(*electrons)
    fit = CentredRefiner(FitConfig(fit_grid=grid), prior)
    rows = []
    for s in tqdm(range(seed, seed + n), desc="draws", unit="draw", disable=None if progress else True):
        p, centre, img = draw_offset_case(prior, grid, max_offset, s)
        start = (p.R[0].numpy() + 0.004, p.sigma_R[0].numpy(), 0.8 * p.beta[0].numpy())
        truth = p.beta[0].double()[None]
        t0 = time.process_time()
        free = fit(img, *start)
        t1 = time.process_time()
        known = fit(img, *start, centre=tuple(centre))
        t2 = time.process_time()
        d = {k: float(distance(torch.as_tensor(f.beta)[None], truth)[0]) for k, f in (("free", free), ("known", known))}
        rows.append({"seed": s, "centre": centre.tolist(), "fitted_centre": free.centre.tolist(),
                     "centre_sd": free.centre_sd.tolist(), "centre_z": ((free.centre - centre) / free.centre_sd).tolist(),
                     "d_free": d["free"], "d_known": d["known"], "cpu_free_s": t1 - t0, "cpu_known_s": t2 - t1,
                     "converged": bool(free.converged and known.converged)})
    return rows


def summarise_centred(rows: list[dict]) -> dict:
    """The centre's calibration and the Distance ratios (``centre_fit_summary``), and this study's own figures."""
    own = {
        "cpu_free_s_median": float(np.median([r["cpu_free_s"] for r in rows])),
        "cpu_known_s_median": float(np.median([r["cpu_known_s"] for r in rows])),
        "all_converged": bool(all(r["converged"] for r in rows))}
    return centre_fit_summary([r["centre_z"] for r in rows], [r["d_free"] for r in rows],
                              [r["d_known"] for r in rows]) | own
