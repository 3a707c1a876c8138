"""sevi.fit.centred_fit: the course refinement with the centre fitted. At the course's centre, held, it
is the folded fit exactly (the fold is a sufficient statistic there); off centre it finds the centre
within its error bars and the betas of the fit that knows the centre."""

import numpy as np
import pytest
import torch

from sevi.fit.centred_fit import CentredRefiner, to_input_pixels
from sevi.fit.count_fit import FitConfig, Refiner
from sevi.physics.grid_image import GridImage, PixelGrid
from sevi.physics.prior import Prior, PriorConfig

G = 64
PRIOR = PriorConfig().with_electrons(150_000, 200_000)


def _case(seed: int, centre):
    torch.manual_seed(0)
    p = Prior(PRIOR)(1, seed).params
    gi = GridImage(PixelGrid((G, G), 2.0 / G), PRIOR.n_terms)
    mu = sum(gi.shell(float(p.R[0, j]), float(p.sigma_R[0, j]), float(p.n_electrons[0, j]), p.beta[0, j], centre)[0]
             for j in range(2)).numpy()
    img = np.random.default_rng(seed).poisson(mu)
    start = (p.R[0].numpy() + 0.004, p.sigma_R[0].numpy(), 0.8 * p.beta[0].numpy())
    return img, start


@pytest.fixture(scope="module")
def refiners():
    torch.set_num_threads(1)
    cfg = FitConfig(fit_grid=G)
    return CentredRefiner(cfg, PRIOR), Refiner(cfg, PRIOR)


def test_held_at_the_course_centre_it_is_the_folded_fit(refiners):
    centred, folded = refiners
    course = ((G - 1) / 2, (G - 1) / 2)
    img, start = _case(3, course)
    a, b = centred(img, *start, centre=course), folded(img, *start)
    np.testing.assert_allclose(a.beta, b.beta, atol=1e-7)
    np.testing.assert_allclose(a.R, b.R, atol=1e-9)
    np.testing.assert_allclose(a.beta_sd, b.beta_sd, rtol=1e-5)
    # (log-likelihoods differ by a constant of the data: the fold sums four pixels into one)
    np.testing.assert_allclose(a.centre, course) and np.testing.assert_allclose(a.centre_sd, 0, atol=1e-5)


@pytest.mark.parametrize("seed", [5, 6])
def test_off_centre_the_centre_is_found_within_its_error_bars(refiners, seed):
    centred, _ = refiners
    truth = np.array([(G - 1) / 2 + 2.6, (G - 1) / 2 - 1.7])
    img, start = _case(seed, tuple(truth))
    free = centred(img, *start)
    known = centred(img, *start, centre=tuple(truth))
    assert free.converged and (free.centre_sd > 0).all() and (free.centre_sd < 0.05).all()
    assert (np.abs(free.centre - truth) < 4 * free.centre_sd).all(), (free.centre, free.centre_sd)
    # the betas: the same answer as the fit that knows the centre, to a fraction of their error bars
    assert (np.abs(free.beta - known.beta) < 0.5 * known.beta_sd).all()
    # the betas hardly depend on where the centre is (the image's symmetry), so their bars barely widen
    np.testing.assert_allclose(free.beta_sd, known.beta_sd, rtol=0.02)


def test_the_centre_in_the_inputs_pixels():
    c, sd = to_input_pixels([255.5, 250.0], [0.01, 0.02], 1024, 512)
    np.testing.assert_allclose(c, [511.5, 500.5]) and np.testing.assert_allclose(sd, [0.02, 0.04])
    c, sd = to_input_pixels([10.0, 3.0], [0.5, 0.5], 64, 64)
    np.testing.assert_allclose(c, [10.0, 3.0])
