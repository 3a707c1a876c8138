"""A fast estimate of a VMI image's centre: the peak of the image's normalised auto-convolution.

PyAbel's ``abel.tools.center.find_origin_by_convolution`` (from its linbasex notebook) convolves each
axis's projection with itself: a projection symmetric about c has its auto-convolution's peak at 2c.
A lab's image breaks that in two ways: a crop that cuts a ring on one side makes the projection
asymmetric, and masked pixels (a gain hole, a dead column) leave holes in it. So the same idea is
taken to two dimensions and restricted to where both a pixel and its mirror image are seen. A VMI
image is symmetric under the point reflection p -> s - p about its centre (s = 2 c), so with J the
square root of the counts over the gain (Poisson noise of equal variance everywhere) and K = 1 on
trusted pixels, 0 elsewhere,

    A(s) = sum_p K(p) K(s - p) J(p) J(s - p),      B(s) = sum_p K(p) K(s - p) J(p)^2,

(both auto-convolutions, by FFT) and 1 - A / B is the mean squared asymmetry about s / 2 relative to
the signal over the overlap: the estimate is the s of the largest A / B among the s whose overlap
holds at least ``min_overlap`` of the image's signal, refined to a fraction of a pixel by a parabola
through its neighbours along each axis. It starts the fit, which fits the centre with the rest
(``sevi.fit.image_fit``).

Pixel index units: pixel i is centred on i (docs/conventions.md, "Any image"); axis 0 = x, axis 1 = z.
"""

from __future__ import annotations

import numpy as np

__all__ = ["estimate_centre"]


def _autoconv(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Full linear convolution of two (nx, nz) arrays: (2 nx - 1, 2 nz - 1)."""
    shape = (a.shape[0] * 2 - 1, a.shape[1] * 2 - 1)
    fa, fb = np.fft.rfft2(a, shape), np.fft.rfft2(b, shape)
    return np.fft.irfft2(fa * fb, shape)


def _vertex(a: float, b: float, c: float) -> float:
    den = a - 2 * b + c
    return float(np.clip(0.5 * (a - c) / den, -0.5, 0.5)) if den < 0 else 0.0


def estimate_centre(image: np.ndarray, keep: np.ndarray | None = None, gain: np.ndarray | None = None,
                    min_overlap: float = 0.3) -> tuple[float, float]:
    """(x0, z0) in pixel index units of an (nx, nz) image (axis 0 = x, axis 1 = z). ``keep``: True
    where a pixel is trusted (default all); ``gain``: expected counts multiplied per pixel."""
    img = np.asarray(image, np.float64)
    K = np.ones(img.shape) if keep is None else np.asarray(keep, bool).astype(np.float64)
    if gain is not None:
        img = np.where(K > 0, img / np.where(K > 0, gain, 1.0), 0.0)
    J = np.sqrt(np.clip(img, 0, None)) * K
    A = _autoconv(J, J)
    B = _autoconv(J * J, K)
    ok = B >= min_overlap * B.max()
    score = np.where(ok, A / np.where(ok, B, 1.0), -np.inf)
    i, k = np.unravel_index(int(np.argmax(score)), score.shape)
    di = _vertex(score[i - 1, k], score[i, k], score[i + 1, k]) if 0 < i < score.shape[0] - 1 and \
        np.isfinite(score[i - 1, k]) and np.isfinite(score[i + 1, k]) else 0.0
    dk = _vertex(score[i, k - 1], score[i, k], score[i, k + 1]) if 0 < k < score.shape[1] - 1 and \
        np.isfinite(score[i, k - 1]) and np.isfinite(score[i, k + 1]) else 0.0
    return float((i + di) / 2), float((k + dk) / 2)
