"""sevi.evaluation.frame_sum_covariance: on sums drawn from the modelled covariance itself (a
Gaussian with the model's mean and C), both estimators vary as much as they claim (ratio 1 within its
sampling error) and their means sit at the model's; with C halved in the draws, both ratios halve.
Rendering is covered by the check's own smoke test (a few sums of a few frames)."""
import numpy as np
import torch

from sevi.evaluation.frame_sum_covariance import CovarianceCheck, compare_estimators, render_sums
from sevi.fit.frame_sum_information import truth_theta

CHECK = CovarianceCheck(fit_grid=32, n_frames=300)  # folded 16 x 16 pixels: C can be built densely


def _model_draws(scale, n=400, seed=0):
    ref, p = CHECK.refiner(), CHECK.params()
    n_det = CHECK.per_frame * CHECK.n_frames / 2
    theta = truth_theta(p.R[0], p.sigma_R[0], [n_det, n_det], p.beta[0, :, :ref.L])
    ref._set_anchor(theta)
    mu, _ = ref._model(theta, False)
    C = ref.covariance_times(torch.eye(mu.numel(), dtype=torch.float64))
    L = torch.linalg.cholesky(0.5 * (C + C.T) * scale + 1e-9 * torch.eye(mu.numel(), dtype=torch.float64))
    z = torch.randn(n, mu.numel(), generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
    return ref, theta, mu + z @ L.T


def test_sums_from_the_model_vary_as_claimed():
    ref, theta, sums = _model_draws(1.0)
    out = compare_estimators(ref, theta, sums)
    se = np.sqrt(2 / (out["n_sums"] - 1))
    for name in ("wls", "gls"):
        ratio = np.array(out[name]["ratio"])
        assert np.all(np.abs(ratio - 1) < 5 * se), (name, ratio.round(2))
        assert np.all(np.abs(out[name]["mean_offset"]) < 5 / np.sqrt(out["n_sums"])), name


def test_less_noise_than_claimed_shows_as_a_ratio_below_one():
    ref, theta, sums = _model_draws(0.5)
    out = compare_estimators(ref, theta, sums)
    for name in ("wls", "gls"):
        assert abs(np.median(out[name]["ratio"]) - 0.5) < 0.1, name


def test_rendered_sums_have_the_folded_shape():
    sums, detected = render_sums(CovarianceCheck(fit_grid=32, n_frames=4), 2)
    assert sums.shape == (2, 16 * 16) and torch.isfinite(sums).all() and 0 < detected < 4 * 40
