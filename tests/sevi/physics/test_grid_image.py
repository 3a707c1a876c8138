"""sevi/physics/grid_image.py against ExpectedImage (itself checked against Monte Carlo): the centred
grid, a half-pixel offset (ExpectedImage at twice the grid, shifted one fine pixel and rebinned), an
off-centre non-square crop, and the closed-form derivatives (finite differences; the centre's by
integrating the derivative over half a pixel)."""

import numpy as np
import pytest
import torch

from sevi.physics.forward import ExpectedImage, ForwardConfig, unfold_quadrant
from sevi.physics.grid_image import GridImage, PixelGrid
from sevi.physics.prior import Prior, PriorConfig

L = 12
P = Prior(PriorConfig())(1, seed=3).params
R, S, B = float(P.R[0, 0]), float(P.sigma_R[0, 0]), P.beta[0, 0]
G = 64


def reference(grid: int) -> torch.Tensor:
    """ExpectedImage's full (grid, grid) image of the shell, 1000 electrons."""
    fm = ExpectedImage(ForwardConfig(grid=grid, n_terms=L))
    return unfold_quadrant(fm.shell_quadrant(R, S, 1000.0, B))


def test_centred_square_grid_is_the_course_model():
    gi = GridImage(PixelGrid((G, G), 2 / G), L)
    mu, _ = gi.shell(R, S, 1000.0, B, (G / 2 - 0.5, G / 2 - 0.5))
    ref = reference(G)
    assert float((mu - ref).abs().max() / ref.max()) < 1e-9


def test_half_pixel_offset_matches_the_finer_model_rebinned():
    fine = torch.roll(reference(2 * G), 1, 0)  # centre one fine pixel (half a coarse one) along x
    fine[0] = 0
    coarse = fine.reshape(G, 2, G, 2).sum((1, 3))
    gi = GridImage(PixelGrid((G, G), 2 / G), L)
    mu, _ = gi.shell(R, S, 1000.0, B, (G / 2, G / 2 - 0.5))
    assert float((mu - coarse).abs().max() / coarse.max()) < 1e-4


def test_off_centre_non_square_crop_is_the_centred_image_cut():
    ref = reference(G)
    crop = ref[5:50, 12:64]  # 45 x 52 pixels, the centre at (31.5 - 5, 31.5 - 12)
    gi = GridImage(PixelGrid(tuple(crop.shape), 2 / G), L)
    mu, _ = gi.shell(R, S, 1000.0, B, (26.5, 19.5))
    assert float((mu - crop).abs().max() / crop.max()) < 1e-4


def test_basis_adds_up_to_the_shell():
    gi = GridImage(PixelGrid((40, 50), 2 / G), L)
    c = (20.3, 23.9)
    basis = gi.basis(R, S, c)
    mu, _ = gi.shell(R, S, 1000.0, B, c)
    img = 1000.0 * (basis[0] / 2 + torch.einsum("l,lhw->hw", B, basis[1:]))
    assert float((img - mu).abs().max() / mu.max()) < 1e-10


def test_derivatives_in_closed_form():
    gi = GridImage(PixelGrid((44, 52), 2 / G), L)
    c = [21.3, 27.6]
    mu, J = gi.shell(R, S, 1000.0, B, c, jacobian=True, resolution=S)
    for row, (dR, dS) in ((2, (1e-6, 0)), (3, (0, 1e-7))):
        a, _ = gi.shell(R + dR, S + dS, 1000.0, B, c, resolution=S)
        b, _ = gi.shell(R - dR, S - dS, 1000.0, B, c, resolution=S)
        fd = (a - b) / (2 * (dR + dS))
        assert float((fd - J[row]).abs().max() / J[row].abs().max()) < 1e-5
    a, _ = gi.shell(R, S, 1001.0, B, c)
    assert float((a - mu - J[4]).abs().max() / mu.max()) < 1e-9  # N: linear
    # the centre: integrate d mu / d x0 over half a pixel (Simpson, 17 points) against the change of mu
    for k in (0, 1):
        ds = np.linspace(0, 0.5, 17)
        vals = []
        for d in ds:
            cc = list(c)
            cc[k] += d
            m, JJ = gi.shell(R, S, 1000.0, B, cc, jacobian=True)
            vals.append((m, JJ[k]))
        w = np.ones(17)
        w[1:-1:2], w[2:-1:2] = 4, 2
        integral = sum(wi * v[1] for wi, v in zip(w * (ds[1] / 3), vals))
        change = vals[-1][0] - vals[0][0]
        assert float((integral - change).abs().max() / change.abs().max()) < 3e-4, k


def test_bad_grid_is_refused():
    with pytest.raises(ValueError, match="pixel_size"):
        PixelGrid((10, 10), 0.0)
    with pytest.raises(ValueError, match="shape"):
        PixelGrid((0, 10), 1.0)
