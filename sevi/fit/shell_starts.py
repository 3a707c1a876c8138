"""Where the fit of a lab's image starts: shells from the peaks of the radial distribution, their
angular distributions from a Legendre projection.

The two-shell regressor proposes the course's two shells only. For any number of shells the start is
the classical estimate a VMI physicist makes first, done on the image itself:

1. **The radial distribution** around the centre estimate: the mean counts per pixel (divided by the
   gain, masked pixels left out) in rings half a pixel wide. A shell of radius R projects to a ring
   whose brightness peaks just inside R (the projection's 1 / sqrt(R^2 - rho^2) edge, smoothed by
   sigma_R), so its peaks are the shells. A peak counts when its prominence exceeds ``min_sigmas``
   times the Poisson error of the smoothed ring mean (rings of too few pixels, near the centre and
   in the corners, bridged by their neighbours); its outer half width at half maximum over 1.18
   starts sigma_R (a Gaussian's HWHM is 1.18 sigma).
2. **The Legendre projection**: with the radii and widths fixed, the image is linear in each shell's
   N b_l (b_0 = 1/2, b_l = beta_l), so the coefficients are one weighted linear least-squares fit of
   the image by the shells' Legendre basis images (``sevi.physics.grid_image.GridImage.basis``, the exact
   pixel integrals) and a flat background, weights 1 / max(n, 1) (Poisson). This is the Legendre
   projection of ``sevi.evaluation.abel_baselines`` done in the image's own domain, without an inverse
   Abel transform (and without PyAbel). Betas whose density dips below zero are shrunk towards the
   isotropic density until it is valid.

Units: R and sigma_R in detector units (x = (index - x0) pixel_size; docs/conventions.md).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from sevi.physics.grid_image import GridImage
from sevi.physics.legendre import ValidityCheck

__all__ = ["RadialPeak", "radial_profile", "radial_peaks", "legendre_start", "shrink_to_valid"]


@dataclass(frozen=True)
class RadialPeak:
    """A ring of the radial distribution: radius and width in pixels, prominence over its error."""

    r: float
    width: float
    significance: float


def radial_profile(image, keep, gain, centre, step: float = 0.5, model=None):
    """(radius of each bin's centre (px), mean counts per trusted pixel / gain, its Poisson sd,
    trusted pixels per bin). With ``model`` (expected counts, gain applied), the mean of the
    residuals image - model, the sd still the image's."""
    img = np.asarray(image, np.float64)
    sub = img if model is None else img - np.asarray(model, np.float64)
    nx, nz = img.shape
    ii, kk = np.meshgrid(np.arange(nx), np.arange(nz), indexing="ij")
    r = np.hypot(ii - centre[0], kk - centre[1])
    k = np.asarray(keep, bool)
    g = np.asarray(gain, np.float64)
    b = (r[k] / step).astype(int)
    nb = int(b.max()) + 1 if b.size else 1
    cnt = np.bincount(b, minlength=nb).astype(float)
    s = np.bincount(b, sub[k] / g[k], minlength=nb)
    v = np.bincount(b, img[k] / g[k] ** 2, minlength=nb)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean = np.where(cnt > 0, s / cnt, 0.0)
        sd = np.where(cnt > 0, np.sqrt(np.maximum(v, 1.0)) / cnt, np.inf)
    return (np.arange(nb) + 0.5) * step, mean, sd, cnt


def radial_peaks(image, keep, gain, centre, min_sigmas: float = 8.0, step: float = 0.5,
                 min_pixels: int = 12, model=None) -> list[RadialPeak]:
    """The rings of the radial distribution (of the residuals from ``model``, when given), most
    significant first (module docstring)."""
    from scipy.ndimage import gaussian_filter1d
    from scipy.signal import find_peaks, peak_prominences

    r, mean, sd, cnt = radial_profile(image, keep, gain, centre, step, model)
    ok = cnt >= min_pixels  # rings of a few pixels (the image's corners, the centre) are noise
    if ok.sum() < 5:
        return []
    # Rings with too few trusted pixels take their neighbours' values (not 0, which would make any
    # level beside them a peak); the smoothed profile's noise is the sd propagated through the
    # kernel's squared weights.
    pos = np.flatnonzero(ok)
    filled = np.interp(np.arange(len(mean)), pos, mean[pos])
    var = np.interp(np.arange(len(sd)), pos, sd[pos] ** 2)
    prof = gaussian_filter1d(filled, 1.0)
    w = gaussian_filter1d(np.eye(1, 9, 4).ravel(), 1.0)  # the kernel's weights
    noise = np.sqrt(np.convolve(var, w ** 2, mode="same"))
    idx, _ = find_peaks(prof)
    idx = idx[ok[idx]]
    if len(idx) == 0:
        return []
    prom = peak_prominences(prof, idx)[0]
    out = []
    for i, p in zip(idx, prom):
        sig = p / max(noise[i], 1e-12)
        if sig < min_sigmas:
            continue
        half = prof[i] - p / 2
        j = i
        while j + 1 < len(prof) and prof[j + 1] > half:
            j += 1
        hwhm = (j - i + 0.5) * step
        out.append(RadialPeak(float(r[i]), max(hwhm / 1.18, 0.5), float(sig)))
    return sorted(out, key=lambda q: -q.significance)


def shrink_to_valid(beta: np.ndarray, check: ValidityCheck, limits: np.ndarray) -> np.ndarray:
    """The largest t beta (t in [0, 1]) inside ``limits`` (|beta_l| bound) with a non-negative density."""
    beta = np.asarray(beta, np.float64)
    t = min(1.0, float(np.min(np.where(np.abs(beta) > 0, limits / np.maximum(np.abs(beta), 1e-300), np.inf))))
    b = beta * t

    def ok(x):
        return bool(check(torch.as_tensor(x)[None])[0])

    if ok(b):
        return b
    lo, hi = 0.0, 1.0
    for _ in range(30):
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if ok(b * mid) else (lo, mid)
    return b * lo


def legendre_start(model: GridImage, counts, keep, gain, centre, R, sigma_R, background: bool = True):
    """N (k,), beta (k, L) and the background (counts per pixel) by the weighted linear fit of the
    image by the shells' Legendre basis images at the given centre (pixels), R and sigma_R (detector
    units): module docstring, step 2."""
    k = np.asarray(keep, bool)
    n = np.asarray(counts, np.float64)[k]
    g = np.asarray(gain, np.float64)[k]
    cols = [model.basis(float(r), float(s), centre).cpu().numpy()[:, k] * g for r, s in zip(R, sigma_R)]
    A = np.concatenate(cols + ([g[None]] if background else []), axis=0).T  # (pixels, columns)
    w = 1 / np.sqrt(np.maximum(n, 1.0))
    coef, *_ = np.linalg.lstsq(A * w[:, None], n * w, rcond=None)
    L = model.L
    per = coef[:len(R) * (L + 1)].reshape(len(R), L + 1)
    N = 2 * per[:, 0]
    total = max(float(n.sum()), 1.0)
    floor = 1e-3 * total / max(len(R), 1)
    beta = np.where(N[:, None] > floor, per[:, 1:] / np.maximum(N[:, None], floor), 0.0)
    N = np.maximum(N, floor)
    check = ValidityCheck(L) if L else None
    limits = np.array([(4 * i + 1) / 2 for i in range(1, L + 1)])
    if check is not None:
        beta = np.stack([shrink_to_valid(b, check, limits) for b in beta]) if len(beta) else beta
    bg = max(float(coef[-1]), 0.0) if background else 0.0
    return N, beta, bg
