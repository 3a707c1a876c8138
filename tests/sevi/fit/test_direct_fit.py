"""sevi/fit/direct_fit.py: the direct image's forward model, its noise, and the refinement's error bars.

The reference is independent of the module: every electron rendered as its own spot (the pixel
integrals of a round Gaussian, by erf), summed, as the camera's light adds up in a frame sum.
"""

import dataclasses
import math

import numpy as np
import pytest
import torch
from scipy.special import erf

from sevi.camera.frames import FrameModel
from sevi.fit.count_fit import FitConfig
from sevi.fit.direct_fit import DirectNoise, DirectRefiner, direct_noise, spot_matrix
from sevi.fit.fit_images import refine_answers
from sevi.physics.forward import fold_image
from sevi.physics.generator import GeneratorConfig, SeviGenerator
from sevi.physics.information import poisson_fisher
from sevi.physics.metric import distance
from sevi.physics.prior import Prior, PriorConfig

SPOT = 0.015


def render_spots(x, z, grid, rng, sigma=SPOT, sigma_sd=0.0, amp_sd=0.0):
    """Each electron adds a * (pixel integrals of a round Gaussian of width s): s ~ N(sigma, sigma_sd^2),
    a ~ N(1, amp_sd^2) (s / sigma)^2 (a spot's flux grows with its area). (grid, grid) float64."""
    n = len(x)
    s = np.clip(rng.normal(sigma, sigma_sd, n), 1e-4, None)
    a = rng.normal(1.0, amp_sd, n) * (s / sigma) ** 2 if amp_sd > 0 or sigma_sd > 0 else np.ones(n)
    px = 2.0 / grid
    r = int(math.ceil(5 * (sigma + 5 * sigma_sd) / px)) + 1
    img = np.zeros(grid * grid)
    idx = np.arange(2 * r + 2)

    def weights(v, sv):
        i = np.floor((v + 1) / px).astype(int)[:, None] - r + idx[None, :]
        cdf = 0.5 * (1 + erf((-1 + i * px - v[:, None]) / (sv[:, None] * math.sqrt(2))))
        return i[:, :-1], np.diff(cdf, axis=1)

    for c in range(0, n, 40_000):
        sl = slice(c, c + 40_000)
        ix, wx = weights(x[sl], s[sl])
        iz, wz = weights(z[sl], s[sl])
        w = a[sl, None, None] * wx[:, :, None] * wz[:, None, :]
        ok = (ix[:, :, None] >= 0) & (ix[:, :, None] < grid) & (iz[:, None, :] >= 0) & (iz[:, None, :] < grid)
        img += np.bincount((ix[:, :, None] * grid + iz[:, None, :])[ok], weights=w[ok], minlength=grid * grid)
    return img.reshape(grid, grid)


def hits(pc, n, seed, grid=64):
    """n parameter sets of the prior and each one's detected hits (x, z) float64 (90 % kept)."""
    params = Prior(pc)(n, seed).params
    gen = SeviGenerator(GeneratorConfig(grid=grid), torch.device("cpu"), pc)
    rng = np.random.default_rng(seed)
    out = []
    for i in range(n):
        x, z, _, _ = gen.sample_electrons(params[i], seed + 1 + i)
        keep = rng.random(len(x)) < 0.9
        out.append((x.double().numpy()[keep], z.double().numpy()[keep]))
    return params, out


def theta_of(p, n_each):
    R, s, b = p.R[0].numpy(), p.sigma_R[0].numpy(), p.beta[0].numpy()
    return torch.tensor(np.concatenate([np.r_[R[j], s[j], n_each, b[j]] for j in range(2)]), dtype=torch.float64)


FIXED = dataclasses.replace(DirectNoise(spot_sigma=SPOT), flux_scale=1.0, flux_rel_var=0.0, background_var=0.0)


def test_spot_matrix_is_the_folded_blur_and_rebin():
    """W X W^T on a folded quadrant = blur the full image (a 2-D convolution with the same kernel),
    rebin, fold: built independently with np.convolve on the unfolded axis."""
    n_fine, n_out, s = 32, 8, 2.3
    W = spot_matrix(n_out, n_fine, s).numpy()
    assert W.shape == (n_out, n_fine)
    col = W.sum(0)
    assert np.allclose(col[: n_fine - 15], 1.0, atol=1e-12), "light away from the outer edge is kept"
    assert col[-1] < 0.7, "light past the outer edge is lost"
    # the same operator on the full axis: delta at fine pixel x of the quadrant, mirrored both sides
    r = int(math.ceil(5 * s)) + 1
    d = np.arange(-r, r + 1)
    t, w = np.polynomial.legendre.leggauss(24)
    u, wu = 0.5 * (t + 1), 0.5 * w
    kern = np.array([(wu * (1 - u) * (np.exp(-0.5 * ((k + u) / s) ** 2) + np.exp(-0.5 * ((k - u) / s) ** 2))).sum()
                     for k in d])
    kern /= kern.sum()
    for x in (0, 3, 20, 31):
        full = np.zeros(2 * n_fine)
        full[n_fine + x] = 1.0  # the pixel right of the centre line, index x from it
        blurred = np.convolve(full, kern, mode="same")
        k = n_fine // n_out
        binned = blurred.reshape(-1, k).sum(1)
        folded = binned[n_out:] + binned[:n_out][::-1]
        np.testing.assert_allclose(W[:, x], folded, atol=1e-12)


def test_forward_model_matches_rendered_spots():
    """chi^2/dof of a spot-rendered direct image against the model at the truth, with the model's own
    pixel variance: within 5 sigma of 1 at the camera's spot; a spot 20 % too wide is rejected."""
    pc = PriorConfig().with_electrons(150_000)
    params, h = hits(pc, 1, 10**9 + 4100)
    G = 64
    img = render_spots(*h[0], G, np.random.default_rng(0))
    n = fold_image(torch.tensor(img)).reshape(-1)
    th = theta_of(params[0], len(h[0][0]) / 2)

    def chi2(noise):
        ref = DirectRefiner(FitConfig(fit_grid=G), pc, "cpu", noise)
        mu, _ = ref._model(th, False)
        var = ref._pixel_variance(mu)
        bright = mu > 20
        return float(((n + ref.offset - mu) ** 2 / var)[bright].mean()), int(bright.sum())

    c, m = chi2(FIXED)
    assert abs(c - 1) < 5 * math.sqrt(2 / m), (c, m)
    c_wide, _ = chi2(dataclasses.replace(FIXED, spot_sigma=1.2 * SPOT))
    assert c_wide > 1 + 10 * math.sqrt(2 / m), c_wide


def test_score_covariance_is_the_sandwich_and_differs_from_poisson():
    """The quasi-score's covariance M against Monte Carlo (40 rendered images of one parameter set):
    the variance of the score along R1 and beta_2 of shell 1 within chance of M's, while M itself is
    far from the Poisson curvature H (which ignores the correlation)."""
    pc = PriorConfig().with_electrons(20_000)
    params = Prior(pc)(1, 10**9 + 4200).params
    G = 64
    gen = SeviGenerator(GeneratorConfig(grid=G), torch.device("cpu"), pc)
    rng = np.random.default_rng(2)
    ref = DirectRefiner(FitConfig(fit_grid=G), pc, "cpu", FIXED)
    x0, _, _, _ = gen.sample_electrons(params[0], 1)
    th = theta_of(params[0], 0.9 * len(x0) / 2)
    mu, J = ref._model(th, True)
    M = ref.score_covariance(mu, J)
    H = poisson_fisher(mu, J)
    g = J / mu
    picks = [0, 3]  # R of shell 1, beta_2 of shell 1
    scores = []
    for k in range(40):
        x, z, _, _ = gen.sample_electrons(params[0], 100 + k)
        keep = rng.random(len(x)) < 0.9
        y = fold_image(torch.tensor(render_spots(x.double().numpy()[keep], z.double().numpy()[keep], G, rng)))
        scores.append((g @ (y.reshape(-1) + ref.offset - mu)).numpy()[picks])
    var = np.var(np.array(scores), axis=0, ddof=1)
    ratio_m = var / M.numpy().diagonal()[picks]
    lo, hi = 0.5, 1.7  # chi^2 with 39 dof / 39: 0.54 .. 1.57 at 99.6 %
    assert np.all((ratio_m > lo) & (ratio_m < hi)), ratio_m
    # the correction matters: along R a pixel of 64^2 holds a spot's light only in part, so the score
    # varies far less than the Poisson curvature says (0.50 of it here); beta_2, smooth in angle, ~1
    m_over_h = M.numpy().diagonal()[picks] / H.numpy().diagonal()[picks]
    assert m_over_h[0] < 0.7 and 0.8 < m_over_h[1] < 1.2, m_over_h


def test_direct_refinement_recovers_the_truth_with_honest_error_bars():
    """Three spot-rendered images with the camera's spot spread (sizes, amplitudes), fitted from a start
    0.003 off in R: converged, chi^2/dof near 1, Distance small, beta_2..6 z-scores of plausible size."""
    cam = FrameModel(rho_std=0.0)
    noise = dataclasses.replace(direct_noise(1, 64, cam, clipped=False), background_var=0.0)
    pc = PriorConfig().with_electrons(150_000)
    params, h = hits(pc, 3, 10**9 + 4300)
    ref = DirectRefiner(FitConfig(fit_grid=64), pc, "cpu", noise)
    rng = np.random.default_rng(3)
    z = []
    for i in range(3):
        img = render_spots(*h[i], 64, rng, sigma=cam.sigma_mean, sigma_sd=cam.sigma_std, amp_sd=0.1)
        p = params[i]
        f = ref(img, p.R[0].numpy() + 0.003, p.sigma_R[0].numpy(), p.beta[0].numpy(), np.r_[0.01, 0.01])
        assert f.converged
        assert 0.8 < f.chi2_dof < 1.25, f.chi2_dof
        assert np.all(np.abs(f.R - p.R[0].numpy()) < 5 * f.R_sd), (f.R, p.R[0], f.R_sd)
        assert float(distance(torch.tensor(f.beta)[None], p.beta)) < 0.08
        z.append(((f.beta - p.beta[0].numpy()) / f.beta_sd)[:, :3].ravel())
    z = np.concatenate(z)
    assert 0.5 < z.std() < 1.6, z.std()


def test_without_blur_the_adjusted_curvature_is_the_poisson_one():
    """W = identity, E[a^2] = 1, no background: M = H, so the error bars are the count fit's."""
    pc = PriorConfig().with_electrons(50_000)
    params = Prior(pc)(1, 10**9 + 4400).params
    ref = DirectRefiner(FitConfig(fit_grid=32), pc, "cpu", FIXED, oversample=1)
    h = ref.W.shape[1]  # 112 fine pixels per half-axis onto 16
    ref.W = torch.kron(torch.eye(16, dtype=torch.float64), torch.ones(1, h // 16, dtype=torch.float64))
    ref.W2, ref.offset = ref.W ** 2, 0.0
    th = theta_of(params[0], 50_000)
    mu, J = ref._model(th, True)
    n = mu.clone()
    H = poisson_fisher(mu, J)
    g0 = torch.zeros(len(th), dtype=torch.float64)
    # rebinning fine pixels into one (W = block sums) keeps independent Poisson pixels: M = H
    np.testing.assert_allclose(ref.score_covariance(mu, J).numpy(), H.numpy(), rtol=1e-9)
    g, Hadj = ref._error_curvature(th, mu, J, n, g0, H + torch.eye(len(th), dtype=torch.float64))
    np.testing.assert_allclose(Hadj.numpy(), (H + torch.eye(len(th), dtype=torch.float64)).numpy(), rtol=1e-6, atol=1e-9)


def test_direct_noise_from_the_camera():
    n = direct_noise(3600, 256, response=False)  # the linear model alone: the clipped spot
    assert abs(n.spot_sigma - 0.01497) < 5e-5, "the mean recorded spot of the course's camera"
    framed = direct_noise(3600, 256)  # with the camera's response: its surrogate is the unclipped spot
    assert framed.n_frames == 3600 and framed.camera is not None and framed.flux_scale == 1.0
    assert abs(direct_noise(3600, 256, clipped=False).spot_sigma - 0.01524) < 5e-5, "flux-weighted, unclipped"
    assert abs(n.flux_scale - 0.951) < 0.002, "sevi/camera/direct_image.py: an isolated spot loses 4.9 % to the clipping"
    assert 0.025 < n.flux_rel_var < 0.031
    # 17.34 counts x 4 px x 60 frames^0.5 / 37,400 counts per electron, squared
    assert abs(n.background_var - (17.34 * 4 * 60 / 37_400) ** 2) < 1e-4
    with pytest.raises(ValueError, match="divide"):
        direct_noise(10, 300)
    with pytest.raises(ValueError, match="n_frames"):
        direct_noise(0, 256)


def test_recorded_spot_matches_the_camera_simulator():
    """The mean spot of frames rendered by sevi.camera.frames (the camera: noise, rounding, clipping), summed
    and background-subtracted: its flux per electron and its sigma per axis are recorded_spot's
    (0.951, 0.01497) and not the unclipped spot's (1, 0.01524). 640 isolated spots, +-32 px windows."""
    from sevi.camera.direct_image import background_mean, spot_flux
    from sevi.camera.frames import render_frames
    from sevi.fit.direct_fit import recorded_spot

    cam = FrameModel(detect_prob=1.0)
    n_frames, lattice = 40, np.array([-0.6, -0.2, 0.2, 0.6])
    rng = np.random.default_rng(7)
    gx, gz = np.meshgrid(lattice, lattice, indexing="ij")
    x = np.tile(gx.ravel(), n_frames) + rng.uniform(-0.01, 0.01, 16 * n_frames)
    z = np.tile(gz.ravel(), n_frames) + rng.uniform(-0.01, 0.01, 16 * n_frames)
    frame = np.repeat(np.arange(n_frames), 16)
    frames, _ = render_frames(torch.tensor(x), torch.tensor(z), torch.tensor(frame), n_frames, cam,
                              generator=torch.Generator().manual_seed(7))
    img = frames.double().numpy() - background_mean(cam)
    G, h = cam.grid, 32
    centre = -1 + (np.arange(G) + 0.5) * 2 / G  # pixel centres, detector units
    flux = second = 0.0
    for f, xi, zi in zip(frame, x, z):
        i, k = int((xi + 1) * G / 2), int((zi + 1) * G / 2)
        win = img[f, i - h:i + h + 1, k - h:k + h + 1]
        dx, dz = centre[i - h:i + h + 1, None] - xi, centre[None, k - h:k + h + 1] - zi
        flux += win.sum()
        second += (win * (dx ** 2 + dz ** 2) / 2).sum()
    sigma, scale = math.sqrt(second / flux), flux / len(x) / spot_flux(cam)
    want_sigma, want_scale = recorded_spot(cam)
    unclipped = direct_noise(1, 256, cam, clipped=False).spot_sigma
    assert abs(scale - want_scale) < 0.01, (scale, want_scale)
    assert abs(sigma - want_sigma) < 0.4 * (unclipped - want_sigma), (sigma, want_sigma, unclipped)


def test_refine_answers_takes_direct_images():
    """refine_answers with noise fits each image with DirectRefiner at 256^2 (a 512^2 image is rebinned)."""
    pc = PriorConfig().with_electrons(100_000)
    params, h = hits(pc, 1, 10**9 + 4500)
    img = render_spots(*h[0], 256, np.random.default_rng(4))
    img = np.kron(img, np.full((2, 2), 0.25))  # a 512^2 image of the same light
    p = params[0]
    first = {"R": p.R.numpy() + 0.002, "R_sd": np.full((1, 2), 0.01), "sigma_R": p.sigma_R.numpy(),
             "sigma_R_sd": np.full((1, 2), 0.001), "beta": p.beta.numpy(), "beta_sd": np.full_like(p.beta.numpy(), 0.1)}
    out, diag = refine_answers([img], first, pc, noise=FIXED, progress=False)
    assert diag["converged"][0] and 0.7 < diag["chi2_dof"][0] < 1.4
    assert np.all(np.abs(out["R"][0] - p.R[0].numpy()) < 5 * out["R_sd"][0])
