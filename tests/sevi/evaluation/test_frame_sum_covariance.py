"""sevi.evaluation.frame_sum_covariance: on sums drawn from the modelled covariance itself (a
Gaussian with the model's mean and C), both estimators vary as much as they claim (ratio 1 within its
sampling error) and their means sit at the model's; with C halved in the draws, both ratios halve.
Rendering is covered by the check's own smoke test (a few sums of a few frames)."""
import numpy as np
import pytest
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


def test_the_fits_estimator_alone_matches_its_part_of_the_full_comparison():
    ref, theta, sums = _model_draws(1.0, n=50)
    both, wls = compare_estimators(ref, theta, sums), compare_estimators(ref, theta, sums, gls=False)
    assert "gls" not in wls and "cg_residual" not in wls
    np.testing.assert_allclose(wls["wls"]["ratio"], both["wls"]["ratio"], rtol=1e-10)


def test_the_course_check_is_the_course_camera_fitted_as_sevi_analyze_fits_it():
    from sevi.camera.frames import FrameModel
    from sevi.fit.direct_fit import REFINE_GRID

    check = CovarianceCheck.course(n_frames=7, R=(0.45, 0.75))
    assert check.camera == FrameModel() and check.fit_grid == REFINE_GRID and check.n_frames == 7
    ref = check.refiner()
    assert ref.chi2_block == 4 and ref.config.fit_grid == REFINE_GRID



def test_fits_of_grouped_sums_add_the_groups_and_score_against_the_truth():
    """Wiring (the fit's calibration itself is the tool's measurement, BENCHMARKS section 3): the sums
    are added in groups, each group is fitted once, and each z-score is (answer - truth) / error bar."""
    from sevi.evaluation.frame_sum_covariance import fit_grouped_sums

    check = CHECK
    _, _, sums = _model_draws(1.0, n=7, seed=3)
    out = fit_grouped_sums(check, sums, group=3)
    assert len(out["fits"]) == 2 and out["frames_per_fit"] == 3 * check.n_frames  # the 7th sum left out
    for f in out["fits"]:
        np.testing.assert_allclose(f["z_R"], (np.array(f["R"]) - check.R) / np.array(f["R_sd"]))
        assert np.all(np.abs(f["z_R"]) < 5), f  # (sigma_R, a tenth of a 32^2 fit pixel here, is not resolved)
        assert np.all(np.isfinite(f["z_sigma_R"])) and f["chi2_dof"] < 2, f
    np.testing.assert_allclose(out["R_actual_sd"], np.array([f["R"] for f in out["fits"]]).std(0, ddof=1))
    with pytest.raises(ValueError, match="fewer than 2 fits"):
        fit_grouped_sums(check, sums[:3], group=2)


def test_a_gls_step_from_each_fit_is_the_linear_gls_estimator_at_its_optimum():
    """Wiring of ``gls_step``: each step is the Newton step of GLS with the fit's prior from theta_hat,
    with the inverse's diagonal as its sd (recomputed here from linear_estimators), the summary's spreads are the fits' own, and N (the
    course's fixed count) gets no z-score."""
    from sevi.evaluation.frame_sum_covariance import fit_grouped_sums
    from sevi.fit.frame_sum_information import linear_estimators

    _, _, sums = _model_draws(1.0, n=6, seed=4)
    out = fit_grouped_sums(CHECK, sums, group=3, gls_step=True)
    ref = CovarianceCheck(fit_grid=32, n_frames=3 * CHECK.n_frames).refiner()
    for f, n in list(zip(out["fits"], sums.reshape(2, 3, -1).sum(1)))[:1]:
        theta = torch.tensor(f["wls_theta"], dtype=torch.float64)
        est = linear_estimators(ref, theta)
        X = est["gls"]["information"] @ est["gls"]["A"]                    # J C^-1
        post = est["gls"]["information"] + torch.diag(ref.P)
        want = theta + torch.linalg.solve(post, X @ (n - est["mu"]) - ref.P_grad * (theta - ref.m_full))
        np.testing.assert_allclose(f["gls_theta"], want.numpy(), rtol=1e-6, atol=1e-9)
        np.testing.assert_allclose(f["gls_sd"], torch.linalg.inv(post).diagonal().sqrt().numpy(), rtol=1e-5)
        assert abs(f["wls_theta"][0] - f["R"][0]) < 1e-12
    g = out["gls"]
    np.testing.assert_allclose(g["gls"]["actual_sd"], np.array([f["gls_theta"] for f in out["fits"]]).std(0, ddof=1))
    assert [g["gls"]["z_rms"][i] is None for i, nm in enumerate(g["names"])] == [nm.startswith("N[") for nm in g["names"]]
    assert np.isfinite(g["z_rms_R"]) and np.isfinite(g["z_rms_sigma_R"])
