"""sevi.camera.frames: the course's spot model, checked against its own closed forms."""
from dataclasses import replace

import numpy as np
import pytest
import torch

from sevi.camera.frames import (
    FrameModel,
    draw_disc_hits,
    draw_shell_hits,
    simulate_frames,
)

# A noise-free, fixed spot: background 20 exactly, A = 100, sigma = 0.015, rho = 0, all detected.
CLEAN = replace(FrameModel(), background_std=0.0, amp_std=0.0, sigma_std=0.0, rho_std=0.0, detect_prob=1.0)


def one(x, z, model=CLEAN, seed=0):
    fr, det = simulate_frames(torch.tensor([x], dtype=torch.float64), torch.tensor([z], dtype=torch.float64),
                              torch.tensor([0]), 1, model, seed=seed, device="cpu")
    return fr[0].numpy().astype(float), det


def test_frames_are_uint8_1024_and_deterministic_per_seed():
    g = torch.Generator().manual_seed(1)
    x, z, f = draw_disc_hits(2, 50, generator=g)
    a, da = simulate_frames(x, z, f, 2, seed=7, device="cpu")
    b, db = simulate_frames(x, z, f, 2, seed=7, device="cpu")
    c, _ = simulate_frames(x, z, f, 2, seed=8, device="cpu")
    assert a.dtype == torch.uint8 and a.shape == (2, 1024, 1024)
    assert torch.equal(a, b) and torch.equal(da, db), "same seed must give the same frames"
    assert not torch.equal(a, c), "another seed must give other frames"


def test_spot_sits_in_the_histogram2d_pixel_with_the_course_flux_and_peak():
    x, z = 0.1 + 0.25 * 2 / 1024, -0.3            # a hit inside pixel, off-centre in x
    img, det = one(x, z)
    assert bool(det[0])
    sig = img - 20.0
    h, _, _ = np.histogram2d([x], [z], bins=1024, range=[[-1, 1], [-1, 1]])
    i, j = np.unravel_index(np.argmax(h), h.shape)
    com = np.array([(sig.sum(1) * np.arange(1024)).sum(), (sig.sum(0) * np.arange(1024)).sum()]) / sig.sum()
    np.testing.assert_allclose(com, [(x + 1) * 512 - 0.5, (z + 1) * 512 - 0.5], atol=0.02,
                               err_msg="spot centre of mass vs the hit, px (axis 0 = x)")
    assert abs(com[0] - i) <= 0.5 and abs(com[1] - j) <= 0.5, "spot not in the histogram2d pixel"
    s_px = 0.015 * 512
    np.testing.assert_allclose(sig.sum(), 2 * np.pi * s_px ** 2 * 100, rtol=0.005,
                               err_msg="flux of an A=100, sigma=0.015 spot = 2 pi sigma^2 A")
    assert 98 <= sig.max() <= 100, f"peak of a 100-count spot after 5x5 averaging, got {sig.max()}"


def test_rho_tilts_the_spot_along_minus_the_diagonal():
    c, d = 511, 8
    x0 = -1 + (c + 0.5) * 2 / 1024                        # the centre of pixel (511, 511)
    round_spot, _ = one(x0, x0)
    assert round_spot[c + d, c - d] == round_spot[c + d, c + d], "a rho = 0 spot must be round"
    # rho ~ N(0, 10^2) clipped to [-1, 1]; with rho = +1 the exponent (dx + dz)^2 vanishes on
    # dx = -dz, with rho = -1 on dx = dz.
    t, _ = one(x0, x0, replace(CLEAN, rho_std=10.0))
    anti, diag = t[c + d, c - d], t[c + d, c + d]
    assert abs(anti - diag) > 50, f"a |rho| = 1 spot must be a ridge along a diagonal: {anti}, {diag}"


def test_about_ten_percent_undetected_and_undetected_leave_no_spot():
    g = torch.Generator().manual_seed(3)
    x, z, f = draw_disc_hits(4, 500, generator=g, poisson=False)
    _, det = simulate_frames(x, z, f, 4, replace(FrameModel(), background_std=0.0), seed=1, device="cpu")
    frac = det.double().mean().item()
    assert abs(frac - 0.9) < 4 * np.sqrt(0.09 / 2000), f"detected fraction {frac}, expected 0.9"
    img, det = one(0.0, 0.0, replace(CLEAN, detect_prob=0.0))
    assert not det.any() and np.all(img == 20), "an undetected electron must add nothing"


def test_background_and_saturation():
    m = replace(FrameModel(), detect_prob=1.0)
    empty, _ = simulate_frames(torch.zeros(0), torch.zeros(0), torch.zeros(0, dtype=torch.long), 1, m,
                               seed=2, device="cpu")
    e = empty.numpy().astype(float)
    # max(0, round(N(20, 20^2))): mean 20 Phi(1) + 20 phi(1) = 21.67, 15.9% zeros.
    np.testing.assert_allclose(e.mean(), 21.67, atol=0.1, err_msg="clipped background mean")
    np.testing.assert_allclose((e == 0).mean(), 0.1587 + 0.0098, atol=0.005,
                               err_msg="fraction of pixels clipped to 0 (N(20,20^2) < 0.5)")
    pile = torch.zeros(5, dtype=torch.float64)
    img, _ = simulate_frames(pile, pile, torch.zeros(5, dtype=torch.long), 1, CLEAN, seed=0, device="cpu")
    assert int(img.max()) == 255, "five spots on one point (~520 counts) must saturate at 255"


def test_shell_hits_lie_on_their_shells():
    g = torch.Generator().manual_seed(0)
    x, z, f = draw_shell_hits(3, 200, radii=(0.4, 0.8), sigma_r=1e-6, generator=g)
    assert f.min() == 0 and f.max() == 2
    # Projection: r sin(theta) |cos(phi)| <= r, and z = r cos(theta): |z| <= r, r^2 >= x^2 + z^2.
    rr = torch.sqrt(x ** 2 + z ** 2)
    assert float(rr.max()) <= 0.8 + 1e-4, "projected hits must lie inside the outer shell"


def test_bad_frame_index_is_refused():
    with pytest.raises(ValueError, match="frame indices"):
        simulate_frames(torch.zeros(1), torch.zeros(1), torch.tensor([3]), 2, seed=0, device="cpu")


def test_prior_hits_are_measurements_from_the_prior():
    from sevi.camera.frames import draw_prior_hits
    from sevi.physics.prior import Prior

    gen = torch.Generator().manual_seed(0)
    x, z, frame = draw_prior_hits(25, 40.0, generator=gen, frames_per_draw=10, seed=7)
    assert x.shape == z.shape == frame.shape and bool((frame[1:] >= frame[:-1]).all())
    assert frame.min() >= 0 and frame.max() <= 24 and abs(len(x) / 25 - 40) < 8
    # Every hit lies within its measurement's outer shell (R + 6 sigma_R); three measurements here.
    p = Prior()(3, 7).params
    r = torch.sqrt(x * x + z * z)
    outer = (p.R[:, 1] + 6 * p.sigma_R[:, 1])[frame // 10]
    assert bool((r <= outer).all())
    # Deterministic for the generator's seed and the prior seed.
    x2, _, f2 = draw_prior_hits(25, 40.0, generator=torch.Generator().manual_seed(0), frames_per_draw=10, seed=7)
    assert torch.equal(x, x2) and torch.equal(frame, f2)
