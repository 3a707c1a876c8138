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
