"""sevi.camera.camera_response against closed forms and against frames rendered by the camera simulator
(``sevi.camera.frames.render_frames``, spot by spot), including rings that saturate.

The rendered tests use a 256-pixel camera whose spot is the course's in pixels (sigma 0.06 detector
units = 7.68 px, window 28 px): the same physics per pixel at 1/16 of the pixels."""
import math

import numpy as np
import pytest
import torch

from sevi.camera.camera_response import CameraResponse, recorded_value_tables, spot_kernels
from sevi.camera.direct_image import background_moments, spot_flux
from sevi.camera.frames import FrameModel, render_frames

SMALL = FrameModel(grid=256, sigma_mean=0.06, sigma_std=0.004)


def test_recorded_value_tables_are_the_clipped_background_and_saturate():
    cam = FrameModel()
    t = recorded_value_tables(cam, np.array([0.0, 50.0, 400.0]))
    m, sd = background_moments(cam)
    np.testing.assert_allclose(t["f"][0], m, rtol=1e-12, err_msg="f(0) is the background's clipped mean")
    np.testing.assert_allclose(t["f2"][0] - t["f"][0] ** 2, sd * sd, rtol=1e-10, err_msg="and its variance")
    assert abs(t["f"][1] - 70.0) < 0.01, "50 counts of light on a 20-count background: no clip"
    assert abs(t["f"][2] - 255.0) < 1e-6 and t["f1"][2] < 1e-6, "400 counts saturate"
    h = 1e-3
    for key, d in (("f", "f1"), ("f1", "f11"), ("f2", "f2_1"), ("f2_1", "f2_11")):
        lo, hi = recorded_value_tables(cam, np.array([30.0 - h]))[key], recorded_value_tables(cam, np.array([30.0 + h]))[key]
        np.testing.assert_allclose((hi - lo) / (2 * h), recorded_value_tables(cam, np.array([30.0]))[d], rtol=1e-5,
                                   err_msg=f"{d} is the derivative of {key}")


def test_the_mean_spot_is_the_renderers_spot():
    """The kernel's mean spot against an independent quadrature of the renderer's formula at three
    offsets, and its flux against spot_flux (less the window's cut)."""
    cam = FrameModel()
    k = spot_kernels(cam)
    unsharp = (k.lattice * torch.arange(1, k.lattice.shape[0] + 1, dtype=torch.float64)[:, None, None]).sum(0)
    h = k.half
    u = (np.arange(5) + 0.5) / 5 - 0.5
    # dense midpoint rule over the hit's position, Gauss-Hermite over s (rho = 0 part of the average
    # is not separable: compare with rho's spread folded in by 16 Gauss-Hermite nodes)
    pos = (np.arange(8) + 0.5) / 8 - 0.5
    ts, ws = np.polynomial.hermite_e.hermegauss(16)
    ws = ws / ws.sum()
    for dx, dz in ((0, 0), (6, 3), (15, 0)):
        acc = 0.0
        for px in pos:
            for pz in pos:
                ox, oz = dx + u - px, dz + u - pz
                for s_, w_s in zip(cam.sigma_mean + cam.sigma_std * ts, ws):
                    for r_, w_r in zip(cam.rho_std * ts, ws):
                        s_px = s_ * cam.px_per_unit
                        q = (ox[:, None] ** 2 + oz[None, :] ** 2 + 2 * r_ * ox[:, None] * oz[None, :]) / (2 * s_px ** 2)
                        acc += w_s * w_r * np.exp(-q).mean() / len(pos) ** 2
        np.testing.assert_allclose(float(unsharp[h + dx, h + dz]), cam.amp_mean * acc, rtol=2e-3,
                                   err_msg=f"mean spot at offset ({dx}, {dz})")
    cut = 1 - math.erf(28.5 / (7.68 * math.sqrt(2))) ** 2  # ~ the flux outside the window
    np.testing.assert_allclose(float(k.mean.sum()), spot_flux(cam) * (1 - cut), rtol=2e-3)


def _ring_rate(cam: FrameModel, R: float, width: float, peak: float) -> torch.Tensor:
    h = cam.grid // 2
    x = (np.arange(h) + 0.5) / h
    r = np.hypot(x[:, None], x[None, :])
    return torch.tensor(peak * np.exp(-0.5 * ((r - R) / width) ** 2))


def _hits(rate: torch.Tensor, cam: FrameModel, n_frames: int, gen: torch.Generator):
    """Hits of n_frames frames from a quadrant rate (per frame per pixel), mirrored to the four
    quadrants, positions uniform inside their pixel (the response's own assumption)."""
    full = torch.cat([rate.flip(0), rate], 0)
    full = torch.cat([full.flip(1), full], 1)  # the frame: the quadrant's rate in each of its four copies
    counts = torch.poisson(full.expand(n_frames, -1, -1).contiguous(), generator=gen).long()
    f, i, j = counts.nonzero(as_tuple=True)
    rep = counts[f, i, j]
    f, i, j = (t.repeat_interleave(rep) for t in (f, i, j))
    u = torch.rand(len(i), 2, generator=gen, dtype=torch.float64) - 0.5
    to_det = lambda p: -1.0 + (p + 0.5) * (2.0 / cam.grid)  # noqa: E731
    return to_det(i + u[:, 0]), to_det(j + u[:, 1]), f


@pytest.mark.parametrize("peak, saturates", [(0.002, False), (0.016, True)])
def test_the_frame_sum_of_rendered_frames_matches_the_response(peak, saturates):
    """Radial profile of 400 rendered frames (10 batches; the batches' spread is the error) against
    the response: every 2-px ring bin within 4 sigma, chi^2 of the bins within 5 sigma of its
    expectation; where the ring saturates, the linear model is refused by the same test."""
    cam = SMALL
    rate = _ring_rate(cam, 0.35, 2.5 / 128, peak)
    gen = torch.Generator().manual_seed(11)
    h = cam.grid // 2
    xx = torch.arange(h, dtype=torch.float64) + 0.5
    r = torch.sqrt(xx[:, None] ** 2 + xx[None, :] ** 2)
    edges = torch.arange(20, 90, 2.0)

    def radial(q):
        return torch.stack([q[(r >= a) & (r < a + 2)].sum() for a in edges])

    batches = []
    for _ in range(10):
        x, z, f = _hits(rate, cam, 40, gen)
        frames, _ = render_frames(x, z, f, 40, cam, generator=gen)
        S = frames.double().sum(0)
        q = S[h:, h:] + S[:h, h:].flip(0) + S[h:, :h].flip(1) + S[:h, :h].flip(0, 1)
        batches.append(radial(q))
    B = torch.stack(batches)
    mean, sem = B.mean(0), B.std(0) / math.sqrt(len(B))
    cr = CameraResponse(cam)
    out = cr(rate * 0.9)  # the renderer detects 90 % of the hits
    model = radial(4 * 40 * (out["mean"] + cr.no_light))
    z = ((mean - model) / sem).numpy()
    assert np.all(np.abs(z) < 4.5), f"bins off the response: z = {np.round(z, 1)}"
    # Student-t-ish bins (10 batches): E[z^2] = 9/7; chi^2 over ~35 correlated bins, loosely
    assert (z ** 2).mean() < 1.29 * (1 + 5 * math.sqrt(2 / len(z))), (z ** 2).mean()
    linear = radial(4 * 40 * (out["light"] + cr.no_light))
    zl = ((mean - linear) / sem).numpy()
    brightest = float((out["mean"] + cr.no_light).max())
    if saturates:
        assert brightest > 150, f"the test ring must saturate (brightest {brightest:.0f} counts per frame)"
        assert np.abs(zl).max() > 10, "the linear model must fail where the camera saturates"
    else:
        assert brightest < 80


def test_response_statistics_agree_with_their_definitions():
    """mean and var of a flat field against a direct compound-Poisson Monte Carlo of f(L), with L drawn
    spot by spot from the kernels' own spot law (rendered light of one pixel)."""
    cam = SMALL
    rate = torch.full((64, 64), 0.004, dtype=torch.float64)  # dense enough for pile-up, flat
    out = CameraResponse(cam)(rate)
    c = (32, 32)
    # Monte Carlo of one pixel: spots of the window around it, each frame
    rng = np.random.default_rng(5)
    h, S = cam.window_half_px, cam.subpixel
    u = (np.arange(S) + 0.5) / S - 0.5
    n = 20000
    count = rng.poisson(0.004 * (2 * h + 1) ** 2, n)  # spots whose window holds the pixel, per frame
    m = int(count.sum())
    d = rng.integers(-h, h + 1, (m, 2)) + rng.uniform(-0.5, 0.5, (m, 2))
    s = (cam.sigma_mean + cam.sigma_std * rng.standard_normal(m)) * cam.px_per_unit
    rho = np.clip(cam.rho_std * rng.standard_normal(m), -1, 1)
    A = np.clip(cam.amp_mean + cam.amp_std * rng.standard_normal(m), 0, None)
    ox, oz = u[None, :] - d[:, :1], u[None, :] - d[:, 1:]  # (m, S)
    q = (ox[:, :, None] ** 2 + oz[:, None, :] ** 2 + 2 * rho[:, None, None] * ox[:, :, None] * oz[:, None, :]) \
        / (2 * s[:, None, None] ** 2)
    light = np.bincount(np.repeat(np.arange(n), count), A * np.exp(-q).mean(axis=(1, 2)), minlength=n)
    y = np.clip(np.round(cam.background_mean + light + cam.background_std * rng.standard_normal(n)), 0, 255)
    f0 = background_moments(cam)[0]
    se = y.std() / math.sqrt(n)
    assert abs(float(out["light"][c]) - light.mean()) < 4 * light.std() / math.sqrt(n)
    assert abs(float(out["mean"][c]) - (y.mean() - f0)) < 4 * se, (float(out["mean"][c]), y.mean() - f0, se)
    assert abs(math.sqrt(float(out["var"][c])) / y.std() - 1) < 0.03
