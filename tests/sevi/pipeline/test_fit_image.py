"""sevi/pipeline/fit_image.py (and sevi/fit/image_fit.py under it) on rendered images with known truth:
an offset centre, an off-centre non-square crop, a masked disc, a dead column, a gain map, one, three
and four shells. Each asserts recovery within the fit's own error bars (|z| < 4 for every parameter,
the centre's included), and the error bars' calibration on repeated draws."""

import numpy as np
import pytest
import torch

from sevi.evaluation.lab_images import LabCase, dead_column, disc_mask, render_case, smooth_gain, truth_betas
from sevi.physics.metric import distance
from sevi.pipeline.fit_image import fit_image
from sevi.runtime.errors import InputError

L = 4
PS = 2 / 256


def two_shells(shape=(110, 96), centre=(57.3, 44.8), seed=1, n=(1.5e5, 2.5e5)):
    return LabCase(shape, centre, (0.2, 0.33), (0.008, 0.011), n, truth_betas(2, L, seed), PS)


def z_scores(f, case):
    z = [(f.centre - case.centre) / f.centre_sd, (f.R - case.R) / f.R_sd, (f.sigma_R - case.sigma_R) / f.sigma_R_sd,
         ((f.beta - case.beta) / f.beta_sd).ravel()]
    return np.concatenate(z)


def check(f, case, bound=4.0):
    assert f.converged and f.n_shells == len(case.R)
    z = z_scores(f, case)
    assert np.all(np.abs(z) < bound), np.round(z, 2)
    assert 0.8 < f.chi2_dof < 1.2


def beta_distance(f, case):
    return float(distance(torch.tensor(f.beta), torch.tensor(case.beta)))


def test_offset_centre_is_fitted_within_its_error_bars():
    case = two_shells(centre=(55 + 14.6, 48 - 17.3), shape=(140, 120))
    img = render_case(case, 0)
    f = fit_image(img, shells=2, n_terms=L, pixel_size=PS)
    check(f, case)
    known = fit_image(img, shells=2, n_terms=L, pixel_size=PS, centre=case.centre)
    assert not known.centre_fitted and np.all(known.centre_sd == 0)
    d, d0 = beta_distance(f, case), beta_distance(known, case)
    assert d < 1.05 * d0 + 0.002, (d, d0)


def test_cropped_non_square_image():
    """The centre 30 pixels from one edge: the outer ring is cut on that side."""
    case = LabCase((80, 130), (30.4, 71.2), (0.19, 0.3), (0.008, 0.009), (2e5, 2e5), truth_betas(2, L, 2), PS)
    img = render_case(case, 1)
    check(fit_image(img, shells=2, n_terms=L, pixel_size=PS), case)


@pytest.mark.parametrize("what", ["disc", "column"])
def test_masked_pixels_leave_no_bias(what):
    case = two_shells(seed=3)
    mask = disc_mask(case.shape, (case.centre[0] + 20, case.centre[1] + 30), 9) if what == "disc" \
        else dead_column(case.shape, int(case.centre[0]) + 9) | dead_column(case.shape, 30, axis=1)
    img = render_case(case, 2, mask=mask)
    f = fit_image(img, mask=mask, shells=2, n_terms=L, pixel_size=PS)
    check(f, case)
    assert f.model[mask].sum() > 0 and f.residuals[mask].sum() == 0


def test_gain_map():
    case = two_shells(seed=4)
    gain = smooth_gain(case.shape, 0.4, seed=1)
    img = render_case(case, 3, gain=gain)
    f = fit_image(img, gain=gain, shells=2, n_terms=L, pixel_size=PS)
    check(f, case)
    ignored = fit_image(img, shells=2, n_terms=L, pixel_size=PS)  # the flat field ignored: a misfit
    assert ignored.chi2_dof > 1.5 * f.chi2_dof


def test_one_shell_auto():
    case = LabCase((90, 90), (44.1, 45.6), (0.25,), (0.01,), (2e5,), truth_betas(1, L, 5), PS)
    f = fit_image(render_case(case, 4), n_terms=L, pixel_size=PS)
    check(f, case)
    assert f.evidence[1] > f.evidence.get(2, -np.inf)


def test_three_shells_auto():
    case = LabCase((120, 120), (61.2, 58.7), (0.12, 0.24, 0.38), (0.007, 0.009, 0.012), (1e5, 2e5, 3e5),
                   truth_betas(3, L, 6), PS)
    f = fit_image(render_case(case, 5), n_terms=L, pixel_size=PS)
    check(f, case)
    assert f.evidence[3] > f.evidence[2]


def test_four_shells():
    case = LabCase((130, 124), (63.7, 60.2), (0.1, 0.19, 0.29, 0.41), (0.006, 0.008, 0.01, 0.012),
                   (1e5, 1.5e5, 2e5, 3e5), truth_betas(4, L, 7), PS)
    check(fit_image(render_case(case, 6), shells=4, n_terms=L, pixel_size=PS), case)


def test_error_bars_are_calibrated_on_repeated_draws():
    """z-scores of centre, radii and betas over 6 draws of an offset-centre image: std near 1."""
    case = two_shells(centre=(50.6, 41.3), n=(5e4, 8e4))
    z = np.concatenate([z_scores(fit_image(render_case(case, 100 + s), shells=2, n_terms=L, pixel_size=PS), case)
                        for s in range(6)])
    assert 0.7 < z.std() < 1.35, f"z-score std {z.std():.2f} over {len(z)}"


def test_more_shells_than_the_image_separates_is_one_line():
    case = LabCase((80, 80), (40.2, 39.1), (0.25,), (0.01,), (1e5,), truth_betas(1, L, 8), PS)
    with pytest.raises(InputError, match=r"img.npy: --shells 3: .*expected"):
        fit_image(render_case(case, 7), shells=3, n_terms=L, pixel_size=PS, source="img.npy")


@pytest.mark.parametrize("kw, match", [
    (dict(mask=np.zeros((10, 12))), r"mask: has 10 x 12 pixels \(x, z\), the image 80 x 80 pixels \(x, z\); expected"),
    (dict(gain=np.zeros((80, 80))), r"gain: pixel \(0, 0\) has gain 0 and is not masked; expected"),
    (dict(gain=np.full((80, 80), np.nan)), r"gain: pixel \(0, 0\) has gain nan"),
    (dict(shells=5), "expected 1..4 or 'auto'"),
    (dict(centre=(500, 3)), "outside the image"),
])
def test_bad_input_is_one_line(kw, match):
    img = np.ones((80, 80))
    with pytest.raises(InputError, match=match):
        fit_image(img, n_terms=L, **kw)


def test_no_counts_and_bad_images():
    with pytest.raises(InputError, match="no counts"):
        fit_image(np.zeros((40, 40)))
    with pytest.raises(InputError, match="one 2-D image"):
        fit_image(np.zeros((40, 40, 3)))
    with pytest.raises(InputError, match=r"pixel \(1, 2\) holds -1"):
        img = np.ones((40, 40))
        img[1, 2] = -1
        fit_image(img)
    # a gain of 0 where the mask leaves the pixel out is fine
    g = np.ones((40, 40))
    g[3, 3] = 0
    m = np.zeros((40, 40), bool)
    m[3, 3] = True
    with pytest.raises(InputError, match="no ring"):
        fit_image(np.random.default_rng(0).poisson(5.0, (40, 40)), mask=m, gain=g)
