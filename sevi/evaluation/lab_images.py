"""Rendered lab images with known truth (an offset centre, a crop, masked pixels, a gain map, one to
four shells), shared by the tests and ``tools/compare_lab_images.py``.

An image is a Poisson draw around the exact expected image of ``sevi.physics.grid_image.GridImage`` on
any grid and centre (plus a flat background, times a gain map), with masked pixels set to 0: what a
lab's camera software writes after accumulating events. Truth betas come from the course's prior
(``sevi.physics.prior``), cut to ``n_terms``; radii are placed by hand so that the shells are
separated by several widths.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch

from sevi.physics.grid_image import GridImage, PixelGrid
from sevi.physics.legendre import ValidityCheck
from sevi.physics.prior import Prior, PriorConfig

__all__ = ["LabCase", "render_case", "truth_betas", "disc_mask", "dead_column", "smooth_gain"]


@dataclass(frozen=True)
class LabCase:
    """One rendered image's truth. R, sigma_R in detector units, centre in pixel indices."""

    shape: tuple[int, int]
    centre: tuple[float, float]
    R: tuple[float, ...]
    sigma_R: tuple[float, ...]
    n_electrons: tuple[float, ...]
    beta: np.ndarray = field(repr=False)  # (k, L)
    pixel_size: float = 2.0 / 256
    background: float = 0.0


def truth_betas(n_shells: int, n_terms: int, seed: int) -> np.ndarray:
    """(k, L) betas drawn from the course's prior, cut to L terms and kept only where the cut density
    is still non-negative (redrawn otherwise)."""
    check = ValidityCheck(n_terms)
    out, s = [], seed
    while len(out) < n_shells:
        b = Prior(PriorConfig())(4, seed=s).params.beta.reshape(-1, 12)[:, :n_terms]
        s += 1
        for row in b:
            if bool(check(row[None])[0]) and len(out) < n_shells:
                out.append(row.numpy())
    return np.stack(out)


def expected(case: LabCase, model: GridImage | None = None) -> np.ndarray:
    """The case's expected counts per pixel before any gain: (nx, nz)."""
    L = case.beta.shape[1]
    gi = model or GridImage(PixelGrid(case.shape, case.pixel_size), L)
    mu = np.full(case.shape, float(case.background))
    for j in range(len(case.R)):
        mu += gi.shell(case.R[j], case.sigma_R[j], case.n_electrons[j], torch.as_tensor(case.beta[j]),
                       case.centre)[0].cpu().numpy()
    return mu


def render_case(case: LabCase, seed: int, mask: np.ndarray | None = None, gain: np.ndarray | None = None,
                model: GridImage | None = None) -> np.ndarray:
    """Poisson counts (int64) around gain x expected, 0 where ``mask`` is True."""
    mu = expected(case, model) * (1.0 if gain is None else gain)
    img = np.random.default_rng(seed).poisson(mu)
    if mask is not None:
        img[mask] = 0
    return img


def disc_mask(shape, centre, radius: float) -> np.ndarray:
    """True inside a disc (a gain hole where the ion beam hit the MCP), pixel units."""
    i, k = np.meshgrid(np.arange(shape[0]), np.arange(shape[1]), indexing="ij")
    return np.hypot(i - centre[0], k - centre[1]) <= radius


def dead_column(shape, index: int, axis: int = 0) -> np.ndarray:
    """True on one dead line of pixels: a column of the camera, ``index`` along ``axis``."""
    m = np.zeros(shape, bool)
    if axis == 0:
        m[index] = True
    else:
        m[:, index] = True
    return m


def smooth_gain(shape, depth: float = 0.3, seed: int = 0) -> np.ndarray:
    """A flat field: a smooth gain from 1 - depth to 1 + depth/2 (a worn patch and a gradient)."""
    rng = np.random.default_rng(seed)
    i, k = np.meshgrid(np.linspace(-1, 1, shape[0]), np.linspace(-1, 1, shape[1]), indexing="ij")
    a, b = rng.uniform(-0.5, 0.5, 2)
    g = 1 + depth / 2 * (a * i + b * k) - depth * np.exp(-((i - 0.3) ** 2 + (k + 0.2) ** 2) / 0.1)
    return np.clip(g, 0.2, None)
