"""The direct path: sum the raw camera frames instead of centroiding them.

    frames (N, 1024, 1024) uint8  --sum-->  S (1024, 1024)  --minus N * background mean-->
    --block sums to the model grid G, / mean spot flux-->  direct image (G, G), electron units

and a regressor trained on histograms blurred like the camera spot (``TrainConfig.spot_blur``)
reads it.

Why this works: every detected electron adds a spot ``A exp(-(dx^2 + dz^2 + 2 rho dx dz) /
(2 s^2))`` (sevi.camera.frames). Summed over many electrons the amplitude, width and tilt spreads average
out, so the expected sum of the frames is the detected-hit density convolved with the *mean* spot,
which for ``rho ~ N(0, 0.1^2)`` and ``s ~ N(0.015, 0.001^2)`` is a round Gaussian of sigma
``sqrt(E[s^2]) = 0.01503`` detector units (we use ``FrameModel.sigma_mean`` = 0.015; the 0.2%
difference is far below a model pixel), scaled by the mean spot flux (:func:`spot_flux`). The
amplitude spread only adds variance: the flux of one spot has a relative std of
``sqrt(0.1^2 + (2 * 0.001/0.015)^2) = 0.17``, i.e. 2.8% more variance than Poisson counts.

Known bias, not corrected: the camera clips ``signal + background`` at 0 before we subtract the
background's clipped mean (:func:`background_mean`, 21.67 counts). Where a spot adds ``s`` counts
the clipped mean grows by ``E[clip(20 + s + N)] - E[clip(20 + N)] = Phi((20 + s)/20) s`` to first
order, not ``s``, so the faint wings of a spot are under-counted (by up to 16% where ``s`` -> 0).
Integrated over an isolated 100-count spot this loses 4.9% of its flux, all from the wings
(measured on 40 rendered frames of two shells: 4.3%, overlaps fill the wings in). The direct image
is therefore ~5% dimmer than :func:`spot_flux` predicts (the features normalise the total away;
the electron-count check has 15% slack) and its spot very slightly sharper: on those frames the
chi^2 of the direct image against the hits' histogram blurred by 0.012 / 0.015 / 0.018 units is
1.12 / 0.72 / 0.93 per pixel, so the camera's own 0.015 is still the best match
(tests/sevi/camera/test_direct_image.py).

Background noise (why training images get no noise added): a frame pixel's background has a std
of 17.3 counts after clipping (:func:`background_moments`), so over ``N`` frames a model pixel of
``k x k`` frame pixels carries a noise std of ``17.3 k sqrt(N)`` counts, or
``17.3 k sqrt(N) / spot_flux`` electrons, with ``spot_flux`` = 37,400 counts. At the cpu-smoke
scale (G = 64, k = 16, N ~ 900-2,400 frames for 40k-120k electrons per shell at ~100 electrons per
frame) that is 0.22-0.36 electrons per model pixel, a variance of 0.05-0.13 electrons^2, against
the Poisson variance of the ~80,000-240,000 electrons over the ~3,200 model pixels the shells
cover (~25-75 electrons per pixel on average, rings far more): under 0.5% of the noise variance.
At the course scale (G = 512, k = 2, N = 50,000) it is 0.21 electrons per pixel against ~17
electrons per pixel. Negligible at both, so ``make_batch`` adds none.

Conventions: frames and images are ``(G, G)`` with axis 0 = x, axis 1 = z over ``[-1, 1]``
(sevi.camera.frames); sigmas are in detector units (the field of view is 2 units wide).
"""
from __future__ import annotations

import math
import os
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from sevi.camera.frames import FrameModel

__all__ = [
    "MIN_BLUR_PX", "background_mean", "background_moments", "spot_flux", "sum_frames", "sum_frames_in_batches", "rebin_sum",
    "direct_image", "batch_images", "blur_images", "blur_render_grid",
]

# Ours: a sampled Gaussian kernel is the analytic one to ~1e-8 for sigma >= 1 px (Poisson summation:
# the aliasing error is ~2 exp(-2 pi^2 sigma^2)); we ask for 1.5 px so the kernel is also a good
# discrete stand-in for blurring *positions* (the pixel's own 1/12 px^2 of quantisation is then
# < 4% of sigma^2).
MIN_BLUR_PX = 1.5


# -- the camera's background ------------------------------------------------------------------
def background_moments(model: FrameModel = FrameModel()) -> tuple[float, float]:
    """Mean and std (counts) of one frame pixel with no spot: ``Y = clip(round(X), 0, 255)``,
    ``X ~ N(background_mean, background_std^2)``.

    Exact, from the normal CDF: ``Y`` is integer in ``0..255``, so
    ``E[Y] = sum_{k=1}^{255} P(Y >= k) = sum_{k=1}^{255} (1 - Phi((k - 1/2 - mu) / sigma))`` and
    ``E[Y^2] = sum_{k=1}^{255} (2k - 1) P(Y >= k)`` (rounding half-way cases have probability 0).
    For the course's ``N(20, 20^2)``: mean 21.666 counts (the continuous ``mu Phi(mu/sigma) + sigma
    phi(mu/sigma)`` = 21.667 agrees to 0.001), std 17.34.
    """
    mu, sigma = float(model.background_mean), float(model.background_std)
    k = np.arange(1, 256, dtype=np.float64)
    if sigma == 0.0:
        y = float(np.clip(np.round(mu), 0, 255))
        return y, 0.0
    z = (k - 0.5 - mu) / (sigma * math.sqrt(2.0))
    tail = 0.5 * np.array([math.erfc(v) for v in z])  # P(X >= k - 1/2) = P(Y >= k)
    m1 = float(tail.sum())
    m2 = float(((2 * k - 1) * tail).sum())
    return m1, math.sqrt(max(m2 - m1 * m1, 0.0))


def clipped_means(means, model: FrameModel = FrameModel()) -> np.ndarray:
    """``E[clip(round(X), 0, 255)]`` for ``X ~ N(m, background_std^2)``, for each ``m`` in ``means``
    (counts): ``sum_{k=1}^{255} P(X >= k - 1/2)``, as in :func:`background_moments`. A pixel whose
    spot adds ``v`` counts records ``clipped_means(background_mean + v) - background_mean(model)``."""
    from scipy.special import ndtr

    m = np.atleast_1d(np.asarray(means, dtype=np.float64))
    if model.background_std == 0:
        return np.clip(np.round(m), 0, 255)
    k = np.arange(1, 256, dtype=np.float64)
    return ndtr((m[:, None] - (k[None, :] - 0.5)) / model.background_std).sum(1)


def background_mean(model: FrameModel = FrameModel()) -> float:
    """Expected per-pixel value (counts) of the camera background after rounding and clipping;
    see :func:`background_moments`. Subtract it ``N_frames`` times from a sum of ``N_frames``."""
    return background_moments(model)[0]


def spot_flux(model: FrameModel = FrameModel()) -> float:
    """Mean summed intensity (counts, over frame pixels) of one detected electron's spot.

    The integral of ``A exp(-(dx^2 + dz^2 + 2 rho dx dz) / (2 s^2))`` over the plane is
    ``2 pi s^2 A / sqrt(1 - rho^2)``; with independent draws its mean is
    ``2 pi E[A] E[s^2] E[(1 - rho^2)^(-1/2)]`` in px^2 counts, ``s`` in px. For the course's camera
    ``100 * 2 pi * (7.68^2 + 0.512^2) * 1.0051 = 37,400`` counts. Clipping of A at 0 and of s at
    1e-6 (10 and 15 sigmas away) and the spot window cut (3.6 spot sigmas, 0.05% of the flux) are
    ignored, as is the wing bias described in the module docstring (~5%).
    """
    s2 = (model.sigma_mean ** 2 + model.sigma_std ** 2) * model.px_per_unit ** 2
    # E[(1 - rho^2)^(-1/2)], rho ~ N(0, rho_std^2) clipped to [-1, 1]: Gauss-Hermite, 64 nodes.
    if model.rho_std > 0:
        t, w = np.polynomial.hermite_e.hermegauss(64)
        rho = np.clip(model.rho_std * t, -0.999, 0.999)
        tilt = float((w * (1 - rho ** 2) ** -0.5).sum() / w.sum())
    else:
        tilt = 1.0
    return 2 * math.pi * model.amp_mean * s2 * tilt


# -- summing frames ---------------------------------------------------------------------------
def sum_frames(path: str | os.PathLike, chunk: int = 64) -> tuple[np.ndarray, int]:
    """Stream a frame file's ``FinalImage`` and sum its frames: ``(S (1024, 1024) float64, n_frames)``.

    Reads ``chunk`` frames at a time (``chunk`` MB), never the whole file; sums exactly in integers
    (``sevi.camera.frame_batches``). Raises ``sevi.io.frame_files.FrameFileError`` for a missing,
    malformed or corrupt file, and ``ValueError`` for ``chunk < 1`` or a file without frames.
    """
    s = sum_frames_in_batches(path, 0, chunk=chunk)
    return s.total.astype(np.float64), s.n_frames


def sum_frames_in_batches(path: str | os.PathLike, batches: int, grid: int = 256, chunk: int = 64):
    """As :func:`sum_frames`, and the sums of ``batches`` contiguous batches of the frames at
    ``grid`` (``sevi.camera.frame_batches.BatchedSum``; ``batches`` 0: none; more batches than frames:
    one frame each)."""
    from sevi.camera.frame_batches import FrameBatcher
    from sevi.io.frame_files import frame_count, iter_frame_chunks

    if chunk < 1:
        raise ValueError(f"chunk must be >= 1, got {chunk}")
    n = frame_count(path)
    if n == 0:
        raise ValueError(f"{path}: FinalImage holds no frames; nothing to sum")
    acc = FrameBatcher(n, min(batches, n), grid)
    for _, _, imgs in iter_frame_chunks(path, chunk):
        acc.add(imgs)
    return acc.result()


def rebin_sum(img: np.ndarray, grid: int) -> np.ndarray:
    """Exact rebinning of a ``(G_in, G_in)`` image to ``(grid, grid)`` by ``k x k`` block sums,
    ``k = G_in / grid`` (the same as ``sevi.regressor.features.rebin``, on numpy float64)."""
    g_in = img.shape[-1]
    if img.ndim != 2 or img.shape[0] != g_in:
        raise ValueError(f"expected a square (G, G) image, got shape {img.shape}")
    if grid < 1 or g_in % grid:
        raise ValueError(f"a {g_in} x {g_in} frame does not rebin exactly to a {grid} x {grid} grid "
                         f"(the grid must divide {g_in})")
    k = g_in // grid
    return img.reshape(grid, k, grid, k).sum(axis=(1, 3))


def direct_image(frame_sum: np.ndarray, n_frames: int, grid: int, model: FrameModel = FrameModel(),
                 *, electron_units: bool = True) -> np.ndarray:
    """The direct image: ``(frame_sum - n_frames * background_mean)`` block-summed to ``(grid, grid)``
    float64, divided by :func:`spot_flux` when ``electron_units`` (then its total estimates the
    detected electron count, which ``sevi.cli.predict`` checks against the model's training range).
    ``frame_sum`` is at the camera's grid (``model.grid``) or already block-summed to a coarser one
    that divides it (a batch's sum, ``sevi.camera.frame_batches``): the background is taken out of
    every camera pixel it holds.

    Pixels can be slightly negative where there is no signal (background noise); the model's
    features clamp at 0 after folding.
    """
    if n_frames < 1:
        raise ValueError(f"n_frames must be >= 1, got {n_frames}")
    frame_sum = np.asarray(frame_sum, dtype=np.float64)
    g_in = frame_sum.shape[-1]
    if g_in < 1 or model.grid % g_in:
        raise ValueError(f"a {g_in} x {g_in} frame sum is not the camera's {model.grid} x {model.grid} pixels or a block "
                         f"sum of them")
    per = (model.grid // g_in) ** 2  # camera pixels per input pixel
    img = rebin_sum(frame_sum - n_frames * per * background_mean(model), grid)
    return img / spot_flux(model) if electron_units else img


def batch_images(batch_sums: np.ndarray, batch_frames: np.ndarray, grid: int,
                 model: FrameModel = FrameModel()) -> np.ndarray:
    """The direct images (K, grid, grid), electron units, of K batches of a measurement's frames
    (``sevi.camera.frame_batches.BatchedSum``: their sums, block-summed, and frame counts), as the
    error bars from their spread read them (``sevi.fit.batch_spread``)."""
    return np.stack([direct_image(b, int(k), grid, model) for b, k in zip(batch_sums, batch_frames)])


# -- blurring rendered images -----------------------------------------------------------------
def blur_render_grid(grid: int, sigma: float) -> int:
    """The grid to render at before blurring by ``sigma`` (detector units) and rebinning to ``grid``:
    the smallest multiple ``k * grid`` on which ``sigma`` spans at least :data:`MIN_BLUR_PX` px.
    ``sigma <= 0``: ``grid`` (no blur). E.g. grid 64, sigma 0.015 (0.48 px): 256 (1.92 px);
    grid 512 (3.84 px): 512."""
    if sigma <= 0:
        return grid
    return grid * max(1, math.ceil(MIN_BLUR_PX / (sigma * grid / 2.0)))


def _kernel(sigma_px: float, device, dtype) -> torch.Tensor:
    r = max(1, math.ceil(4.0 * sigma_px))  # ours: +-4 sigma, the cut tail is 6e-5 of the flux per axis
    u = torch.arange(-r, r + 1, device=device, dtype=torch.float64)
    k = torch.exp(-0.5 * (u / sigma_px) ** 2)
    return (k / k.sum()).to(dtype)


def blur_images(images: torch.Tensor, sigma: float) -> torch.Tensor:
    """Blur ``(B, G, G)`` (or ``(G, G)``) images with a round Gaussian of ``sigma`` detector units.

    Separable convolution with the sampled, normalised Gaussian (radius 4 sigma) on the images'
    device, float32 out. The border is zero-padded: flux blurred past the field-of-view edge is
    lost, as the camera loses it; away from the border the sum is conserved. ``sigma`` must span at
    least :data:`MIN_BLUR_PX` px on this grid (else the sampled kernel is not a Gaussian): render
    at :func:`blur_render_grid` and rebin after. ``sigma == 0`` returns the images as float32.
    """
    squeeze = images.ndim == 2
    x = images[None] if squeeze else images
    if x.ndim != 3 or x.shape[-1] != x.shape[-2]:
        raise ValueError(f"expected (B, G, G) or (G, G) images, got shape {tuple(images.shape)}")
    x = x.to(torch.float32)
    if sigma < 0:
        raise ValueError(f"sigma must be >= 0, got {sigma}")
    if sigma == 0:
        return x[0] if squeeze else x
    G = x.shape[-1]
    s_px = sigma * G / 2.0
    if s_px < MIN_BLUR_PX:
        raise ValueError(f"sigma {sigma} units is {s_px:.2f} px on a {G}-px grid, under {MIN_BLUR_PX} px: "
                         f"render at blur_render_grid({G}, {sigma}) = {blur_render_grid(G, sigma)} and rebin")
    k = _kernel(s_px, x.device, torch.float32)
    r = (len(k) - 1) // 2
    y = x[:, None]                                                        # (B, 1, G, G)
    y = F.conv2d(y, k.view(1, 1, -1, 1), padding=(r, 0))                  # along axis 0 (x)
    y = F.conv2d(y, k.view(1, 1, 1, -1), padding=(0, r))                  # along axis 1 (z)
    y = y[:, 0]
    return y[0] if squeeze else y


def write_direct_image(path: str | os.PathLike, image: np.ndarray, n_frames: int, attrs: dict | None = None) -> None:
    """Write a direct image as a ``sevi predict`` input (2-D dataset ``image``), atomically."""
    from sevi.io.tables import atomic_h5

    with atomic_h5(Path(path)) as f:
        d = f.create_dataset("image", data=np.asarray(image, dtype="<f8"))
        d.attrs["n_frames"] = n_frames
        d.attrs["units"] = "detected electrons (background-subtracted frame sum / mean spot flux)"
        d.attrs["axes"] = "axis 0 = x, axis 1 = z, bins of [-1, 1]"
        for key, v in (attrs or {}).items():
            f.attrs[key] = v
