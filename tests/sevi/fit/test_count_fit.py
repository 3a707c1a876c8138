"""sevi/fit/count_fit.py: the refinement finds the truth's optimum, stays a distribution, and its error bars mean what they say."""

import dataclasses

import numpy as np
import pytest
import torch

from sevi.fit.count_fit import FitConfig, Refiner
from sevi.physics.expected_renderer import ExpectedRenderer
from sevi.physics.generator import GeneratorConfig
from sevi.physics.legendre import ValidityCheck
from sevi.physics.metric import distance
from sevi.physics.prior import Prior, PriorConfig, ShellParams

L = 12


PRIOR_BETAS = Prior(PriorConfig())(4, seed=11).params.beta  # (4, 2, L): inside the prior's boxes


def one_image(R, sigma, n, beta, G=64, seed=0):
    """A Poisson image of one parameter set; beta (2, L) must lie in the prior's boxes (the fit's bounds)."""
    p = ShellParams(torch.tensor([R], dtype=torch.float64), torch.tensor([sigma], dtype=torch.float64),
                    torch.as_tensor(beta, dtype=torch.float64)[None], torch.tensor([n]))
    img = ExpectedRenderer(GeneratorConfig(grid=G), "cpu", PriorConfig(), "poisson").render(p, seed).images[0]
    return img.numpy(), p


def test_refinement_recovers_a_perturbed_answer():
    img, p = one_image([0.45, 0.75], [0.006, 0.008], [400_000, 600_000], PRIOR_BETAS[0])
    truth = p.beta[0].numpy()
    lo, hi = np.array(PriorConfig().beta_low), np.array(PriorConfig().beta_high)
    start = np.clip(truth + np.random.default_rng(1).normal(0, 0.3, truth.shape) * np.array(PriorConfig().beta_sigma), lo, hi)
    ref = Refiner(FitConfig(fit_grid=64))
    f = ref(img, p.R[0].numpy() + [0.004, -0.003], [0.007, 0.007], start)
    assert f.converged and f.iterations < 20
    d0 = float(distance(torch.tensor(start)[None], p.beta))
    d1 = float(distance(torch.tensor(f.beta)[None], p.beta))
    assert d1 < 0.5 * d0, (d0, d1)
    assert np.all(np.abs(f.R - p.R[0].numpy()) < 4 * f.R_sd)
    assert 0.7 < f.chi2_dof < 1.3
    assert bool(ValidityCheck(L)(torch.tensor(f.beta)).all())
    assert f.R[0] < f.R[1]


def test_overlapping_shells_find_the_right_assignment():
    """Shells 0.02 apart with different anisotropies: a start with the betas on the wrong shells
    still ends at the truth (the swapped start)."""
    beta = torch.stack([PRIOR_BETAS[1, 0], PRIOR_BETAS[2, 1]])
    img, p = one_image([0.55, 0.57], [0.005, 0.005], [1_000_000, 1_000_000], beta, G=128, seed=3)
    ref = Refiner(FitConfig(fit_grid=128))
    wrong = p.beta[0].numpy()[::-1].copy()
    f = ref(img, [0.55, 0.57], [0.006, 0.006], wrong)
    d = float(distance(torch.tensor(f.beta)[None], p.beta))
    d_wrong = float(distance(torch.tensor(wrong)[None], p.beta))
    assert d < 0.3 * d_wrong, f"Distance {d:.3f} against {d_wrong:.3f} for the swapped start (won: {f.start})"


def test_error_bars_are_calibrated():
    """z-scores of the refined betas over 12 images: std near 1 for the well-measured coefficients."""
    pc = PriorConfig().with_electrons(300_000)
    params = Prior(pc)(12, seed=5).params
    params = ShellParams(params.R, params.sigma_R, params.beta, params.n_electrons)
    r = ExpectedRenderer(GeneratorConfig(grid=64), "cpu", pc, "poisson")
    ref = Refiner(FitConfig(fit_grid=64), pc)
    z = []
    for i in range(len(params)):
        if abs(float(params.R[i, 1] - params.R[i, 0])) < 0.05:
            continue
        img = r.render(params[i], seed=i).images[0].numpy()
        f = ref(img, params.R[i].numpy(), params.sigma_R[i].numpy(), params.beta[i].numpy())
        z.append(((f.beta - params.beta[i].numpy()) / f.beta_sd)[:, :3].ravel())
    z = np.concatenate(z)
    assert len(z) >= 30
    assert 0.7 < z.std() < 1.35, f"z-score std {z.std():.2f} over {len(z)}"


def test_bad_images_are_refused():
    ref = Refiner(FitConfig(fit_grid=64))
    args = ([0.4, 0.7], [0.006, 0.006], np.zeros((2, L)))
    with pytest.raises(ValueError, match="no counts"):
        ref(np.zeros((64, 64)), *args)
    with pytest.raises(ValueError, match="square"):
        ref(np.ones((64, 32)), *args)
    with pytest.raises(ValueError, match="rebin exactly"):
        ref(np.ones((96, 96)), *args)


def _result(R, beta, log_post, sd=0.01, L=2):
    from sevi.fit.count_fit import FitResult
    P = 2 * (3 + L)
    return FitResult(np.array(R, float), np.array([0.006, 0.006]), np.array([1e5, 1e5]), np.array(beta, float),
                     np.full(2, sd), np.full(2, sd), np.full((2, L), sd), 0.0, log_post, 1.0, 3, True, "s",
                     np.eye(P) * sd ** 2)


def test_mixture_of_modes_weights_by_evidence_and_widens_the_error_bars():
    """Two distinct optima of equal evidence: the answer is their mean and each error bar holds both
    (sd^2 + half the gap squared); an optimum 1e-3 sd from the best is the same mode; a far worse one
    gets a negligible weight."""
    from sevi.fit.count_fit import mix_modes

    a = _result([0.50, 0.51], [[0.2, 0.1], [0.8, 0.3]], -100.0)
    b = _result([0.50, 0.51], [[0.8, 0.3], [0.2, 0.1]], -100.0)  # the shells traded betas
    m = mix_modes([a, b])
    np.testing.assert_allclose(m.beta, [[0.5, 0.2], [0.5, 0.2]])
    np.testing.assert_allclose(m.beta_sd[0], np.sqrt(0.01 ** 2 + np.array([0.3, 0.1]) ** 2))
    assert "0.50" in m.start
    same = _result([0.50, 0.51], [[0.2 + 1e-5, 0.1], [0.8, 0.3]], -90.0)
    assert mix_modes([a, same]) is a, "the same optimum reached twice is one mode"
    worse = mix_modes([a, dataclasses.replace(b, log_posterior=-130.0)])
    np.testing.assert_allclose(worse.beta, a.beta, atol=1e-9)
    narrow = dataclasses.replace(b, cov=b.cov / 100)  # same height, 10x narrower in each of 10 parameters
    np.testing.assert_allclose(mix_modes([a, narrow]).beta, a.beta, atol=1e-6)
