"""The classical baselines of the evaluation tools: PyAbel's inverse Abel transforms (three_point,
rBasex) followed by a Legendre projection over each shell's window, in the course's beta
convention (I = 1/2 + sum beta_2i P_2i). PyAbel is optional (the ``abel`` extra); it is imported
only when a baseline is computed.

Both windows are taken from the TRUE R and sigma_R (R +- 3 sigma_R): an oracle that favours the
baselines; overlapping shells share a window. PyAbel's symmetry axis is vertical (rows = z): our
axis 1 is z, so images are transposed before the transform.
"""

from __future__ import annotations

import numpy as np


def legendre_projection(slice_img: np.ndarray, grid: int, R: np.ndarray, sigma_R: np.ndarray, n_terms: int) -> np.ndarray:
    """Course-convention betas (2, L) of an inverse-Abel slice (rows = z, columns = x, centred):
    beta_2i = (4i + 1)/2 E[P_2i(cos theta)], the expectation over the slice weighted by |x| (the
    sin(theta) of the sphere) inside each shell's window R +- 3 sigma_R."""
    from numpy.polynomial import legendre as npleg
    nr, nc = slice_img.shape
    zz, xx = np.mgrid[0:nr, 0:nc]
    z, x = (zz - (nr - 1) / 2) * 2 / grid, (xx - (nc - 1) / 2) * 2 / grid
    r = np.hypot(x, z)
    ct = np.where(r > 0, z / np.maximum(r, 1e-12), 0.0)
    P = [npleg.legval(ct, np.eye(2 * i + 1)[2 * i]) for i in range(1, n_terms + 1)]
    out = np.zeros((2, n_terms))
    for j in range(2):
        w = (np.abs(r - R[j]) <= 3 * sigma_R[j]) * np.abs(x) * slice_img
        tot = w.sum()
        if tot > 0:
            out[j] = [(4 * i + 1) / 2 * (w * P[i - 1]).sum() / tot for i in range(1, n_terms + 1)]
    return out


def classical(counts: np.ndarray, method: str, R, sigma_R, n_terms: int) -> np.ndarray:
    import abel
    G = counts.shape[0]
    opts = {"order": 20} if method == "rbasex" else {}
    # PyAbel's symmetry axis is vertical (rows = z): our axis 1 is z, so transpose; the centre lies
    # between the middle pixels of an even grid.
    t = abel.Transform(counts.T.astype(float), direction="inverse", method=method, origin=(G / 2 - 0.5, G / 2 - 0.5),
                       transform_options=opts).transform
    return legendre_projection(t, G, R, sigma_R, n_terms)


def rbasex_betas(counts: np.ndarray, R_px: np.ndarray, sig_px: np.ndarray, order: int, n_terms: int) -> np.ndarray:
    """(2, n_terms) course-convention betas of one (G, G) image (axis 0 = x, axis 1 = z)."""
    import abel.rbasex

    # PyAbel's symmetry axis is vertical (rows): our z is axis 1, so transpose.
    _, distr = abel.rbasex.rbasex_transform(counts.T.astype(float), origin="center", order=order, out=None)
    harm = distr.harmonics()  # (order/2 + 1, rmax + 1): P_0, P_2, ..., P_order
    r = distr.r
    out = np.zeros((2, n_terms))
    for j in range(2):
        w = (r >= R_px[j] - 3 * sig_px[j]) & (r <= R_px[j] + 3 * sig_px[j])
        s = harm[:, w].sum(1)
        k = min(n_terms, len(s) - 1)
        out[j, :k] = 0.5 * s[1:k + 1] / s[0]
    return out
