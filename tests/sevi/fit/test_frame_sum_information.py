"""sevi.fit.frame_sum_information: the GLS estimator's information J C^-1 J^T by conjugate gradients
against a dense solve with C built column by column; the frame-sum fit's (Godambe) information below
it; both below the detected hits' Poisson information (the frame sum is a function of the hits and
independent noise, so it cannot hold more); each estimator's claimed covariance is A C A^T.

Saturating rings on the small camera of tests/sevi/fit/test_frame_sum_fit.py (256 px, the course's
spot in pixels, 30 spots per frame), no frames rendered: the estimators need only theta.
"""
import dataclasses

import torch

from sevi.camera.frames import FrameModel
from sevi.fit.count_fit import FitConfig
from sevi.fit.direct_fit import direct_noise
from sevi.fit.frame_sum_fit import FrameSumRefiner
from sevi.fit.frame_sum_information import linear_estimators, truth_theta
from sevi.physics.forward import ExpectedImage
from sevi.physics.information import fisher_information
from sevi.physics.prior import Prior, PriorConfig

SMALL = FrameModel(grid=256, sigma_mean=0.06, sigma_std=0.004)
FIT_GRID = 32  # folded 16 x 16 pixels: C (256 x 256) can be built densely


def _setup():
    n_frames, per_frame = 1500, 30.0
    n_detected = per_frame * n_frames / 2
    prior = PriorConfig().with_electrons(int(n_detected / 0.9))
    beta = Prior(PriorConfig())(1, 10**9 + 77).params.beta[0]
    ref = FrameSumRefiner(FitConfig(fit_grid=FIT_GRID), prior, "cpu", direct_noise(n_frames, FIT_GRID, SMALL),
                          chi2_block=2)
    theta = truth_theta([0.33, 0.39], [0.006, 0.007], [n_detected, n_detected], beta[:, :ref.L])
    return ref, theta, beta[:, :ref.L]


def _eig_max(A, B):
    """The largest generalised eigenvalue of A v = l B v (B positive definite), at unit diagonal."""
    d = B.diagonal().sqrt()
    s = d[:, None] * d[None, :]
    Li = torch.linalg.inv(torch.linalg.cholesky(B / s))
    return float(torch.linalg.eigvalsh(Li @ (A / s) @ Li.T).max())


def _dense_covariance(ref, n):
    C = ref.covariance_times(torch.eye(n, dtype=torch.float64))
    return 0.5 * (C + C.T)


def test_conjugate_gradients_match_a_dense_solve():
    ref, theta, _ = _setup()
    est = linear_estimators(ref, theta, tol=1e-10)
    assert est["cg_residual"] < 1e-10
    _, J = ref._model(theta, True)
    dense = J @ torch.linalg.solve(_dense_covariance(ref, J.shape[1]), J.T)
    gls = est["gls"]["information"]
    rel = (gls - dense).abs() / (dense.diagonal()[:, None] * dense.diagonal()[None, :]).sqrt()
    assert float(rel.max()) < 1e-6, float(rel.max())


def test_each_estimators_claimed_covariance_is_its_map_through_C():
    ref, theta, _ = _setup()
    est = linear_estimators(ref, theta, tol=1e-10)
    C = _dense_covariance(ref, est["mu"].numel())
    for name in ("wls", "gls"):
        A, claimed = est[name]["A"], est[name]["claimed"]
        direct = A @ C @ A.T
        d = direct.diagonal().sqrt()
        assert float(((claimed - direct).abs() / (d[:, None] * d[None, :])).max()) < 1e-5, name


def test_the_fits_information_is_below_gls_and_that_below_the_hits():
    ref, theta, beta = _setup()
    est = linear_estimators(ref, theta)
    # wls <= gls: gls - wls positive semi-definite (largest eigenvalue of wls relative to gls <= 1)
    assert _eig_max(est["wls"]["information"], est["gls"]["information"]) < 1 + 1e-6
    t = theta.reshape(2, -1)
    hits = fisher_information(ExpectedImage(dataclasses.replace(ref.frame_model.config, grid=SMALL.grid), "cpu"),
                              t[:, 0], t[:, 1], t[:, 2], beta)
    ratio = _eig_max(est["gls"]["information"], hits)
    assert ratio < 1.0, f"the frame sum cannot hold more than its hits ({ratio:.3f})"
    assert ratio > 0.3, f"nor far less (shells one spot sigma apart, betas to 24): {ratio:.3f}"


def _dense_gls_step(ref, theta, n):
    """The GLS step with the fit's prior, by a dense solve: theta + (J C^-1 J^T + P)^-1 (J C^-1 (n - mu) -
    P (theta - m)), and its covariance."""
    mu, J = ref._model(theta, True)
    Ci = torch.linalg.inv(_dense_covariance(ref, mu.numel()))
    post = J @ Ci @ J.T + torch.diag(ref.P)
    cov = torch.linalg.inv(0.5 * (post + post.T))
    return theta + cov @ (J @ Ci @ (n - mu) - ref.P_grad * (theta - ref.m_full)), cov


def test_the_gls_gradient_and_curvature_give_the_dense_gls_step():
    from sevi.fit.frame_sum_information import gls_gradient_and_curvature

    ref, theta, _ = _setup()
    ref._set_anchor(theta)
    mu, J = ref._model(theta, True)
    n = mu + torch.randn(mu.shape, generator=torch.Generator().manual_seed(3), dtype=torch.float64) * ref.anchor["var"].sqrt()
    start = theta * (1 + 1e-3)  # off the truth: the prior's and the data's terms both pull
    mu, J = ref._model(start, True)
    g, H, residual, _ = gls_gradient_and_curvature(ref, start, mu, J, n, tol=1e-10)
    assert residual < 1e-10
    want, want_cov = _dense_gls_step(ref, start, n)
    cov = torch.linalg.inv(H)
    got = start - cov @ g
    sd = want_cov.diagonal().sqrt()
    assert float(((got - want).abs() / sd).max()) < 1e-5
    assert float(((cov.diagonal().sqrt() - sd).abs() / sd).max()) < 1e-5


def test_a_gls_answer_is_one_gls_step_from_the_optimum_with_the_gls_error_bars():
    """``_result`` (the answer at an optimum) of the refiner with estimator="gls" is the dense GLS step
    from that optimum, its error bars the GLS covariance's, for every parameter whose prior box lies
    more than 5 sd away (the answer is the Laplace posterior truncated to the box: elsewhere it moves)."""
    import numpy as np

    ref, theta, _ = _setup()
    gls = FrameSumRefiner(ref.config, ref.prior, "cpu", ref.noise, chi2_block=2, estimator="gls")
    gls._set_anchor(theta)
    mu, _ = gls._model(theta, True)
    n = mu + torch.randn(mu.shape, generator=torch.Generator().manual_seed(5), dtype=torch.float64) * gls.anchor["var"].sqrt()
    opt = theta.clone()
    opt[0::3 + ref.L] += 0.002  # R a little off, as an optimum is: the step has work to do
    r = gls._result(opt, 0.0, 1, True, "test", n)
    assert gls.gls_residuals and max(gls.gls_residuals) < 1e-4
    want, cov = _dense_gls_step(gls, opt, n)
    sd = cov.diagonal().sqrt()
    lo, hi = gls.lo, gls.hi
    far = ((want - lo) / sd > 5) & ((hi - want) / sd > 5) & torch.isfinite(hi)
    assert int(far.sum()) >= 6, int(far.sum())  # R and the low betas of both shells
    got = torch.as_tensor(np.concatenate([np.column_stack([r.R, r.sigma_R, r.n_electrons]), r.beta], 1).reshape(-1))
    got_sd = torch.as_tensor(np.concatenate([np.column_stack([r.R_sd, r.sigma_R_sd, np.ones(2)]), r.beta_sd], 1).reshape(-1))
    assert float(((got - want).abs() / sd)[far].max()) < 1e-4
    assert float(((got_sd - sd).abs() / sd)[far].max()) < 1e-4
    assert float(((got - opt).abs() / sd)[far].max()) > 1.0  # it moved: R's offset taken back


def test_the_gls_refiner_fits_and_differs_from_wls_where_rings_are_closer_than_a_spot():
    import numpy as np

    ref, theta, beta = _setup()
    gls = FrameSumRefiner(ref.config, ref.prior, "cpu", ref.noise, chi2_block=2, estimator="gls")
    ref._set_anchor(theta)
    mu, _ = ref._model(theta, True)
    n = mu + torch.randn(mu.shape, generator=torch.Generator().manual_seed(5), dtype=torch.float64) * ref.anchor["var"].sqrt()
    args = (n, np.array([0.33, 0.39]), np.array([0.006, 0.007]), beta.numpy(), np.full(2, 0.005))
    fw, fg = ref.fit_folded(*args), gls.fit_folded(*args)
    assert gls.gls_residuals and max(gls.gls_residuals) < 1e-4
    assert np.isfinite(fg.beta).all() and np.isfinite(fg.beta_sd).all()
    assert fg.chi2_dof == fw.chi2_dof  # the same optimum: the goodness of fit is the WLS fit's
    assert np.max(np.abs(fg.beta - fw.beta) / fw.beta_sd) > 0.1
    assert np.all(fg.R_sd < fw.R_sd)  # GLS claims more where the spots' fine structure tells the rings apart


def test_a_gls_solve_that_does_not_converge_falls_back_to_wls_and_says_so(monkeypatch):
    import warnings

    import numpy as np

    import sevi.fit.frame_sum_information as info
    from sevi.runtime.errors import InputWarning

    ref, theta, beta = _setup()
    gls = FrameSumRefiner(ref.config, ref.prior, "cpu", ref.noise, chi2_block=2, estimator="gls")
    ref._set_anchor(theta)
    n, _ = ref._model(theta, True)
    monkeypatch.setattr(info, "conjugate_gradient", lambda apply, B, diag, tol, it: (torch.zeros_like(B), 0.5, it))
    args = (n, np.array([0.33, 0.39]), np.array([0.006, 0.007]), beta.numpy(), np.full(2, 0.005))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        fg = gls.fit_folded(*args)
    assert any(issubclass(w.category, InputWarning) and "weighted least-squares" in str(w.message) for w in caught)
    fw = ref.fit_folded(*args)
    np.testing.assert_allclose(fg.beta, fw.beta, rtol=0, atol=1e-9)
    np.testing.assert_allclose(fg.R_sd, fw.R_sd, rtol=1e-9)


def test_an_unknown_estimator_is_refused():
    import pytest

    ref, _, _ = _setup()
    with pytest.raises(ValueError, match="estimator"):
        FrameSumRefiner(ref.config, ref.prior, "cpu", ref.noise, estimator="ols")
