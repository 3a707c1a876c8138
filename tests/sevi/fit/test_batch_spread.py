"""sevi.fit.batch_spread: error bars from batches of frames.

Batches drawn from a known pixel covariance (Gaussian, built densely on the small camera of
tests/sevi/fit/test_frame_sum_information.py) must give the answer's covariance
``H^-1 (U C_true U^T + P) H^-1`` whatever the model's C claims: equal to the model's own GLS bars
when C is the truth, twice the data's part when the frames vary twice as much. The step is the
estimator's own.
"""
import pytest
import torch

from sevi.fit.batch_spread import (
    BatchSpreadError,
    batch_residuals,
    spread_error_curvature,
)
from sevi.fit.frame_sum_information import gls_gradient_and_curvature
from sevi.physics.information import covariance
from tests.sevi.fit.test_frame_sum_information import _dense_covariance, _setup


def _draw_batches(C, mu, frames, scale, seed):
    """Batch sums y_k ~ N(mu n_k / N, scale C n_k / N), (K, n)."""
    gen = torch.Generator().manual_seed(seed)
    nk = torch.as_tensor(frames, dtype=torch.float64)
    share = nk / nk.sum()
    L = torch.linalg.cholesky(C + 1e-9 * C.diagonal().mean() * torch.eye(len(C), dtype=torch.float64))
    z = torch.randn(len(nk), len(C), generator=gen, dtype=torch.float64)
    return share[:, None] * mu[None, :] + (scale * share).sqrt()[:, None] * (z @ L.T)


def test_equal_batches_deviate_from_their_share_with_the_factor_K_over_K_minus_1():
    y = torch.arange(12.0, dtype=torch.float64).reshape(4, 3) ** 2
    b = batch_residuals(y, [5, 5, 5, 5])
    assert b.factor == pytest.approx(4 / 3)
    assert torch.allclose(b.residuals.sum(0), torch.zeros(3, dtype=torch.float64), atol=1e-12)
    assert torch.allclose(b.residuals, y - y.mean(0))
    assert b.frames == 20 and len(b) == 4


def test_unequal_batches_give_an_unbiased_spread():
    """E[factor sum_k r_k r_k^T] = Cov(y) for batches of unequal frames: 4000 repeats of 3 batches of
    1, 2 and 7 frames of unit variance per frame (Cov(y) = 10)."""
    gen = torch.Generator().manual_seed(3)
    nk = torch.tensor([1.0, 2.0, 7.0], dtype=torch.float64)
    est = []
    for _ in range(4000):
        y = (nk.sqrt() * torch.randn(3, generator=gen, dtype=torch.float64))[:, None]
        b = batch_residuals(y, nk)
        est.append(float(b.score_covariance(torch.ones(1, 1, dtype=torch.float64))))
    m = torch.tensor(est)
    assert abs(float(m.mean()) - 10.0) < 4 * float(m.std()) / len(m) ** 0.5 + 1e-9


def test_too_few_or_empty_batches_are_refused():
    with pytest.raises(BatchSpreadError, match="at least 5"):
        batch_residuals(torch.ones(3, 4), [1, 1, 1], min_batches=5)
    with pytest.raises(BatchSpreadError, match="no frames"):
        batch_residuals(torch.ones(3, 4), [1, 0, 1])
    with pytest.raises(BatchSpreadError, match="expected"):
        batch_residuals(torch.ones(3, 4), [1, 1])


@pytest.mark.parametrize("scale", [1.0, 2.0])
def test_the_bars_follow_the_frames_spread_not_the_model(scale):
    ref, theta, _ = _setup()
    ref._set_anchor(theta)
    mu, J = ref._model(theta, True)
    C = _dense_covariance(ref, mu.numel())
    frames = torch.randint(20, 40, (3000,), generator=torch.Generator().manual_seed(1))
    y = _draw_batches(C, mu, frames, scale, seed=2)
    n = y.sum(0)
    g, H, residual, X = gls_gradient_and_curvature(ref, theta, mu, J, n, tol=1e-10)
    assert residual < 1e-10
    out = spread_error_curvature(g, H, X, batch_residuals(y, frames), ref.P)
    assert out is not None
    g_eff, H_eff = out
    Hi = covariance(H)
    # the step is the estimator's own
    assert torch.allclose(covariance(H_eff) @ g_eff, Hi @ g, rtol=1e-6, atol=1e-12 * float(theta.abs().max()))
    # the covariance is H^-1 (U C_true U^T + P) H^-1; its variances' standard error is sqrt(2/K) = 2.6 %
    expected = Hi @ (scale * X @ C @ X.T + torch.diag(ref.P)) @ Hi
    ratio = covariance(H_eff).diagonal() / expected.diagonal()
    assert float((ratio - 1).abs().max()) < 0.15, ratio
    assert abs(float(ratio.mean()) - 1) < 0.05, ratio
    if scale == 1.0:  # C is the truth: the model's own GLS bars
        ratio_model = covariance(H_eff).diagonal() / Hi.diagonal()
        assert float((ratio_model - 1).abs().max()) < 0.15, ratio_model
    else:  # the data's part doubled: far from the model's bars for the well-measured parameters
        assert float((covariance(H_eff).diagonal() / Hi.diagonal()).max()) > 1.7


def test_the_refiner_uses_the_batches_for_both_estimators_and_refuses_too_few():
    ref, theta, beta = _setup()
    ref._set_anchor(theta)
    mu, J = ref._model(theta, True)
    C = _dense_covariance(ref, mu.numel())
    frames = [25] * 400
    y = _draw_batches(C, mu, frames, 2.0, seed=5)
    n = y.sum(0)
    g, H = ref._gradient_and_curvature(theta, mu, J, n)  # the weighted fit's posterior
    _, gls_H, _, X = gls_gradient_and_curvature(ref, theta, mu, J, n)
    for estimator, U, Hp in (("gls", X, gls_H), ("wls", J / ref.anchor["var"], H)):
        ref.estimator = estimator
        ref.batches = None
        _, H_model = ref._error_curvature(theta, mu, J, n, g, H)
        ref.batches = batch_residuals(y, frames)
        _, H_spread = ref._error_curvature(theta, mu, J, n, g, H)
        Hi = covariance(Hp)
        expected = (Hi @ (2.0 * U @ C @ U.T + torch.diag(ref.P)) @ Hi).diagonal()
        r = covariance(H_spread).diagonal() / expected
        assert float((r - 1).abs().max()) < 0.25, (estimator, r)  # 400 batches: 7 % standard error
        # and not the model's bars: the well-measured radii's variances nearly doubled
        assert float((covariance(H_spread).diagonal() / covariance(H_model).diagonal())[[0, 3 + ref.L]].min()) > 1.5
    h = ref.config.fit_grid
    with pytest.raises(BatchSpreadError, match="at least"):
        ref.set_batches(torch.zeros(5, h, h), [10] * 5)
    ref.set_batches(torch.ones(ref.P.numel() + 2, h, h), [10] * (ref.P.numel() + 2))
    assert len(ref.batches) == ref.P.numel() + 2
    with pytest.raises(BatchSpreadError, match="do not add up"):  # batches of another measurement
        ref(torch.ones(h, h), [0.33, 0.39], [0.006, 0.007], beta)
    ref.set_batches(None)
    assert ref.batches is None
