"""sevi.fit.centred_frame_sum_fit: the frame-sum fit with the centre fitted, on the saturating frame sum
of tests/sevi/fit/test_frame_sum_fit.py. Held at the course's centre it gives the folded fit's answer
(to a fraction of an error bar: the whole image's pixels are weighted one by one, the fold's mirror
pairs together); with the frames shifted by whole camera pixels (np.roll: the wrapped edge holds only
background, so the shifted sum is a frame sum of the shifted measurement), the centre is found within
its error bars and the answer is the held fit's. The whole-frame camera response is the quadrant's,
mirrored, where the frame is symmetric.

The hits are computed on a grid 3 x finer than the fit's (``oversample``): this camera's rings are a
fifth of a fit pixel wide, and on the fit's own grid the linear surrogate's Jacobian depends on where
the centre falls inside a pixel (measured: R's error bar 40 % wider, R 1.5 sd away, at a shift of
(5, -3) camera pixels).
"""
import numpy as np
import pytest
import torch

from sevi.camera.camera_response import CameraResponse
from sevi.camera.direct_image import direct_image
from sevi.fit.centred_fit import centre_on_grid, to_input_pixels
from sevi.fit.centred_frame_sum_fit import CentredFrameSumRefiner
from sevi.fit.count_fit import FitConfig
from sevi.fit.direct_fit import direct_noise
from sevi.fit.frame_sum_fit import FrameSumRefiner
from sevi.physics.forward import ExpectedImage, ForwardConfig
from tests.sevi.fit.test_frame_sum_fit import FIT_GRID, SMALL, _prior, saturated  # noqa: F401 (a fixture)

OVERSAMPLE = 3


def _start(p):
    return p.R[0].numpy() + 0.003, p.sigma_R[0].numpy(), p.beta[0].numpy() + 0.03, np.full(2, 0.01)


@pytest.fixture(scope="module")
def held(saturated):  # noqa: F811
    p, image, n_frames, _, _ = saturated
    noise = direct_noise(n_frames, FIT_GRID, SMALL)
    folded = FrameSumRefiner(FitConfig(fit_grid=FIT_GRID), _prior(), "cpu", noise, OVERSAMPLE,
                             chi2_block=2)(image, *_start(p))
    G = SMALL.grid
    ref = CentredFrameSumRefiner(FitConfig(fit_grid=FIT_GRID), _prior(), "cpu", noise, OVERSAMPLE, chi2_block=2)
    return folded, ref(image, *_start(p), centre=((G - 1) / 2, (G - 1) / 2))


def test_the_whole_frames_response_is_the_mirrored_quadrants():
    fm = ExpectedImage(ForwardConfig(grid=SMALL.grid, n_terms=4), "cpu")
    q = fm.shell_quadrant(0.35, 0.006, 30000.0, torch.tensor([0.8, 0.5, 0.2, 0.1], dtype=torch.float64)) / 100
    full = torch.cat([torch.cat([q.flip(0).flip(1), q.flip(0)], 1), torch.cat([q.flip(1), q], 1)], 0)
    a, b = CameraResponse(SMALL)(q), CameraResponse(SMALL, symmetric=False)(full)
    h = SMALL.grid // 2
    for k in ("mean", "var", "scaled"):
        assert float((b[k][h:, h:] - a[k]).abs().max()) < 1e-5 * float(a[k].abs().max()), k


def test_the_anchors_response_off_centre_is_the_whole_frames():
    """The exact model at a centre snapped to a pixel corner off the middle, computed on the largest
    quadrant about it, against the camera's response computed on the whole frame."""
    from sevi.fit.frame_sum_information import truth_theta
    from sevi.physics.grid_image import GridImage, PixelGrid
    from sevi.physics.prior import Prior, PriorConfig

    ref = CentredFrameSumRefiner(FitConfig(fit_grid=FIT_GRID), _prior(), "cpu", direct_noise(1500, FIT_GRID, SMALL))
    beta = Prior(PriorConfig())(1, 5).params.beta[0, :, :ref.L]
    theta = torch.cat([truth_theta([0.33, 0.45], [0.006, 0.007], [20000, 20000], beta),
                       torch.tensor([33.3, 29.6], dtype=torch.float64)])
    snapped = ref.snapped(theta)
    cx, cz = centre_on_grid(snapped, ref.k)
    assert cx % 1 == 0.5 and cz % 1 == 0.5 and abs(cx - (33.3 * 4 + 1.5)) <= 0.5
    G = SMALL.grid
    full = GridImage(PixelGrid((G, G), 2.0 / G), ref.L, ref.config.forward)
    R, s, N, b = ref._unpack(snapped)
    hits = sum(full.shell(float(R[j]), float(s[j]), float(N[j]), b[j], (cx, cz))[0] for j in range(2))
    whole = ref._exact_per_fit_pixel(CameraResponse(SMALL, symmetric=False)(hits / 1500))
    fast = ref.exact(snapped)
    for key in ("mean", "light", "excess"):
        assert float((fast[key] - whole[key]).abs().max()) < 1e-5 * float(whole[key].abs().max()), key
    with pytest.raises(ValueError, match="corner between camera pixels"):
        ref.exact(theta)


def test_held_at_the_course_centre_it_is_the_folded_fit(held):
    folded, fit = held
    assert fit.converged and np.allclose(fit.centre_sd, 0, atol=1e-5)
    assert np.all(np.abs(fit.R - folded.R) < 0.6 * folded.R_sd), (fit.R, folded.R, folded.R_sd)
    assert np.all(np.abs(fit.beta[:, :3] - folded.beta[:, :3]) < 0.5 * folded.beta_sd[:, :3])
    assert np.allclose(fit.beta_sd[:, :3], folded.beta_sd[:, :3], rtol=0.1)


@pytest.mark.parametrize("shift", [(5, -3), (-11, 7)])
def test_shifted_frames_the_centre_is_found_within_its_error_bars(saturated, held, shift):  # noqa: F811
    p, _, n_frames, _, fs = saturated
    image = direct_image(np.roll(fs.frame_sum, shift, axis=(0, 1)).astype(np.float64), n_frames, FIT_GRID, SMALL)
    ref = CentredFrameSumRefiner(FitConfig(fit_grid=FIT_GRID), _prior(), "cpu", direct_noise(n_frames, FIT_GRID, SMALL),
                                 OVERSAMPLE, chi2_block=2)
    fit = ref(image, *_start(p))
    G = SMALL.grid
    centre, sd = to_input_pixels(fit.centre, fit.centre_sd, G, FIT_GRID)
    truth = np.array([(G - 1) / 2 + shift[0], (G - 1) / 2 + shift[1]])
    assert np.all(np.abs(centre - truth) < 3 * sd) and np.all(sd < 0.5), (centre, truth, sd)
    _, known = held
    assert np.all(np.abs(fit.R - known.R) < known.R_sd)
    assert np.all(np.abs(fit.beta[:, :3] - known.beta[:, :3]) < known.beta_sd[:, :3])
    assert fit.chi2_dof < 1.5 and ref.exact_evaluations <= ref.max_anchors


def test_refine_answers_fits_a_frame_sums_centre_in_its_frames_pixels(saturated):  # noqa: F811
    """The pipeline's wiring (sevi.fit.fit_images.refine_answers with fit_centre and a frame sum's
    noise): the centre comes back in the camera's frame pixels, where the frames were shifted. The
    weighted fit's bars: on this small camera's 30 spots per frame the spots pile up, where the
    covariance C, and so the GLS answer's bars, claim too little (measured: z 3.9 for the centre's z;
    docs/forward_model.md, "The frame sum's covariance, checked")."""
    from sevi.fit.fit_images import refine_answers

    p, _, n_frames, _, fs = saturated
    shift = (-6, 4)
    image = direct_image(np.roll(fs.frame_sum, shift, axis=(0, 1)).astype(np.float64), n_frames, FIT_GRID, SMALL)
    R, s, beta, R_sd = _start(p)
    first = {"R": R[None], "R_sd": R_sd[None], "sigma_R": s[None], "sigma_R_sd": np.full((1, 2), 0.001),
             "beta": beta[None], "beta_sd": np.full_like(beta[None], 0.1)}
    out, diag = refine_answers([image], first, _prior(), "cpu", FitConfig(fit_grid=FIT_GRID), progress=False,
                               noise=direct_noise(n_frames, FIT_GRID, SMALL), fit_centre=True, estimator="wls")
    truth = (SMALL.grid - 1) / 2 + np.array(shift)
    assert np.all(np.abs(diag["centre"][0] - truth) < 3 * diag["centre_sd"][0]), (diag["centre"], truth)
    assert np.all(np.abs(out["R"][0] - p.R[0].numpy()) < 4 * out["R_sd"][0])


def test_a_gls_answer_with_the_centre_fitted_matches_the_folded_gls_answer(saturated, held):  # noqa: F811
    """estimator="gls" with the centre fitted (the whole image's covariance, not the fold's) and held at
    the course's centre: the folded GLS answer, to a fraction of its error bars."""
    p, image, n_frames, _, _ = saturated
    noise = direct_noise(n_frames, FIT_GRID, SMALL)
    folded = FrameSumRefiner(FitConfig(fit_grid=FIT_GRID), _prior(), "cpu", noise, OVERSAMPLE, chi2_block=2,
                             estimator="gls")(image, *_start(p))
    ref = CentredFrameSumRefiner(FitConfig(fit_grid=FIT_GRID), _prior(), "cpu", noise, OVERSAMPLE, chi2_block=2,
                                 estimator="gls")
    G = SMALL.grid
    fit = ref(image, *_start(p), centre=((G - 1) / 2, (G - 1) / 2))
    assert ref.gls_residuals and max(ref.gls_residuals) < 1e-4
    assert np.all(np.abs(fit.R - folded.R) < 0.6 * folded.R_sd), (fit.R, folded.R, folded.R_sd)
    assert np.all(np.abs(fit.beta[:, :3] - folded.beta[:, :3]) < 0.5 * folded.beta_sd[:, :3])
    assert np.allclose(fit.R_sd, folded.R_sd, rtol=0.15)
    wls, _ = held
    assert np.all(folded.R_sd < wls.R_sd)  # GLS claims more than the weighted fit here


def test_refine_answers_hands_a_frame_sum_to_the_chosen_estimator(saturated):  # noqa: F811
    """sevi.fit.fit_images.refine_answers: a frame sum is answered by the estimator asked for, by
    default the package's; the two share the optimum's diagnostics and differ in the answer."""
    from sevi.fit.estimators import DEFAULT_ESTIMATOR
    from sevi.fit.fit_images import refine_answers

    p, image, n_frames, _, _ = saturated
    R, s, beta, R_sd = _start(p)
    first = {"R": R[None], "R_sd": R_sd[None], "sigma_R": s[None], "sigma_R_sd": np.full((1, 2), 0.001),
             "beta": beta[None], "beta_sd": np.full_like(beta[None], 0.1)}
    kw = {"config": FitConfig(fit_grid=FIT_GRID), "progress": False, "noise": direct_noise(n_frames, FIT_GRID, SMALL)}
    other = "wls" if DEFAULT_ESTIMATOR == "gls" else "gls"
    out = {DEFAULT_ESTIMATOR: refine_answers([image], first, _prior(), "cpu", **kw),  # no estimator named
           other: refine_answers([image], first, _prior(), "cpu", estimator=other, **kw)}
    assert out["gls"][1]["chi2_dof"][0] == out["wls"][1]["chi2_dof"][0]
    assert np.all(out["gls"][0]["R_sd"] < out["wls"][0]["R_sd"])


def test_batches_of_frames_are_read_on_the_whole_fit_grid_with_the_centres_parameters():
    """The error bars from batches of frames (sevi.fit.batch_spread) with the centre free: each batch is
    the whole image at the fit grid (nothing folded), and the fit's 2 (3 + L) + 2 parameters need that
    many batches + 2."""
    from sevi.fit.batch_spread import BatchSpreadError

    ref = CentredFrameSumRefiner(FitConfig(fit_grid=FIT_GRID), _prior(), "cpu", direct_noise(1500, FIT_GRID, SMALL))
    need = 2 * (3 + ref.L) + 2 + 2
    imgs = np.random.default_rng(0).normal(size=(need, FIT_GRID, FIT_GRID))
    with pytest.raises(BatchSpreadError, match=f"at least {need}"):
        ref.set_batches(imgs[:-1], [10] * (need - 1))
    ref.set_batches(imgs, [10] * need)
    assert ref.batches.residuals.shape == (need, FIT_GRID * FIT_GRID)
    np.testing.assert_allclose(ref.batches.residuals.numpy(), (imgs - imgs.mean(0)).reshape(need, -1), atol=1e-12)
