"""sevi/physics/information.py: the Fisher information of an image against what the electrons themselves carry."""

import math

import numpy as np
import torch
from numpy.polynomial import legendre as npleg
from numpy.testing import assert_allclose

from sevi.physics.forward import ExpectedImage, ForwardConfig
from sevi.physics.information import (
    beta_indices,
    covariance,
    expected_distance,
    fisher_information,
    image_floors,
    prior_precision,
)
from sevi.physics.prior import PriorConfig

L = 12


def test_expected_distance_closed_form():
    """One coefficient with variance s^2: E|N(0, w s^2)| = sqrt(w) s sqrt(2/pi), w = 2/5 for beta_2."""
    cov = torch.zeros(2 * L, 2 * L, dtype=torch.float64)
    s = 0.03
    cov[0, 0] = s * s
    got = expected_distance(cov, n_draws=200_000)
    assert_allclose(got, math.sqrt(0.4) * s * math.sqrt(2 / math.pi), rtol=0.01)


def test_image_carries_less_than_the_true_cos_theta():
    """With R, sigma_R and N known, the image's information about one shell's betas is at most
    that of the electrons' own cos(theta): N * integral P_i P_j / I dc (Loewner order)."""
    fm = ExpectedImage(ForwardConfig(grid=128))
    beta = torch.zeros(2, L, dtype=torch.float64)
    beta[0, :3] = torch.tensor([0.6, 0.2, 0.05])
    beta[1, :2] = torch.tensor([-0.3, 0.1])
    N = torch.tensor([2e5, 2e5], dtype=torch.float64)
    F = fisher_information(fm, torch.tensor([0.4, 0.75]), torch.tensor([0.006, 0.008]), N, beta)
    bi = beta_indices(L)[0]
    F_img = F[bi][:, bi].numpy()
    c, w = npleg.leggauss(400)
    I = 0.5 + sum(float(beta[0, i]) * npleg.legval(c, np.eye(2 * i + 3)[2 * i + 2]) for i in range(L))
    P = np.stack([npleg.legval(c, np.eye(2 * i + 3)[2 * i + 2]) for i in range(L)])  # (L, nodes)
    F_cos = float(N[0]) * (P * (w / I)) @ P.T
    evals = np.linalg.eigvalsh(F_cos - F_img)
    assert evals.min() > -1e-6 * np.abs(evals).max(), f"image carries more than cos(theta): {evals.min():.3g}"
    # ... but not much less for a well-separated shell: the projection loses only y
    assert np.trace(F_img) > 0.3 * np.trace(F_cos)


def test_floors_order_and_singular_fisher():
    fm = ExpectedImage(ForwardConfig(grid=64))
    beta = torch.zeros(2, L, dtype=torch.float64)
    beta[:, 0] = 0.5
    F = fisher_information(fm, torch.tensor([0.4, 0.7]), torch.tensor([0.006, 0.008]),
                           torch.tensor([1e5, 1e5], dtype=torch.float64), beta)
    P = prior_precision(PriorConfig(), L)
    f = image_floors(F, P, L)
    assert 0 < f["bayes"] < f["crb"] < math.inf
    # more electrons, lower floors: the CRB scales as 1/sqrt(N)
    f4 = image_floors(4 * F, P, L)
    assert_allclose(f4["crb"], f["crb"] / 2, rtol=0.03)
    # two identical shells cannot be told apart: infinite variance, never NaN
    assert math.isinf(float(covariance(torch.zeros(4, 4, dtype=torch.float64))[0, 0]))
