"""sevi.camera.frame_renderer against an independent numpy renderer of the course's formula.

The reference below (``ref_windows``, ``ref_frames``) is written from docs/camera.md alone: every
detected spot is evaluated sub-sample by sub-sample in float64 in its window and added; nothing
of the module under test is used in it. The tests:

(a) the distribution of recorded values, pixel group by pixel group (groups binned by expected
    light, saturated ones included), new renderer against the reference: z-tests of the mean and
    the mean square over many frames, and the spot-free group against the exact
    ``background_moments``;
(b) isolated spots: flux, centre and second moments against the drawn A, sigma, rho (the draws
    are replayed from the generator in the documented order); and, noise off, every pixel equal to
    the reference's rendering of the same draws except where the exact value lies within the
    claimed error of a rounding edge, across all three kinds of spot (Taylor orders 6, 12, exact)
    and the frame's borders;
(c) reproducibility by seed; frames independent of threads, of the step and of the background
    thread; shapes and dtypes as ``render_frames``; typed errors;
(d) the streaming sum equals the sum of the frames rendered from the same chunks and seed;
    per-frame counts are Poisson;
and the truncation bound: the Taylor windows' error never exceeds ``truncation_bound``, and the
renderer never lets it exceed ``TRUNCATION_TOL``.
"""
from __future__ import annotations

import math
from dataclasses import replace

import numpy as np
import pytest
import torch
from scipy.stats import chi2

from sevi.camera.direct_image import background_moments
from sevi.camera.frame_renderer import (
    ORDERS,
    TRUNCATION_TOL,
    FrameRenderer,
    FrameRendererError,
    accumulate_frames,
    shell_hit_chunks,
    spot_patches,
    truncation_bound,
)
from sevi.camera.frames import FrameModel, render_frames
from sevi.physics.prior import ShellParams

CPU = torch.device("cpu")
# A 256-px frame with the course's spot in pixels: sigma 0.06 units = 7.68 px (sd 0.512 px), as
# 0.015 units on 1024 px. A quarter of the pixels per frame: the statistics test stays fast.
SMALL = replace(FrameModel(), grid=256, sigma_mean=0.06, sigma_std=0.004)


# -- the independent reference ------------------------------------------------------------------
def ref_windows(px, pz, amp, s_px, rho, h, S):
    """Spot by spot: window rows/cols (int) and values (float64) of the course's formula, averaged
    on the S x S sub-pixel grid. ``px, pz``: hit in pixel coordinates (pixel i's centre at i)."""
    sub = (np.arange(S) + 0.5) / S - 0.5
    u = np.arange(-h, h + 1)
    for k in range(len(px)):
        ci, cj = int(np.round(px[k])), int(np.round(pz[k]))
        dx = (ci + u)[:, None] + sub[None, :] - px[k]                        # (W, S) px
        dz = (cj + u)[:, None] + sub[None, :] - pz[k]
        DX, DZ = dx[:, :, None, None], dz[None, None, :, :]
        q = (DX ** 2 + DZ ** 2 + 2 * rho[k] * DX * DZ) / (2 * s_px[k] ** 2)
        yield ci + u, cj + u, amp[k] * np.exp(-q).mean(axis=(1, 3))


def ref_signal(x, z, frame, n_frames, amp, sigma, rho, detected, model):
    """Float64 noise-free signal (B, G, G) of the detected spots."""
    G, h, S = model.grid, model.window_half_px, model.subpixel
    sig = np.zeros((n_frames, G, G))
    px, pz = (x + 1) * G / 2 - 0.5, (z + 1) * G / 2 - 0.5
    d = np.flatnonzero(detected)
    for k, (rows, cols, win) in zip(d, ref_windows(px[d], pz[d], amp[d], sigma[d] * G / 2, rho[d], h, S)):
        ri, ci = (rows >= 0) & (rows < G), (cols >= 0) & (cols < G)
        sig[frame[k]][np.ix_(rows[ri], cols[ci])] += win[np.ix_(ri, ci)]
    return sig


def ref_draws(n, model, rng):
    """The course's per-electron laws (docs/camera.md), numpy."""
    detected = rng.random(n) < model.detect_prob
    amp = np.clip(rng.normal(model.amp_mean, model.amp_std, n), 0, None)
    sigma = np.clip(rng.normal(model.sigma_mean, model.sigma_std, n), 1e-6, None)
    rho = np.clip(rng.normal(0.0, model.rho_std, n), -1, 1)
    return amp, sigma, rho, detected


def ref_frames(x, z, frame, n_frames, model, rng):
    """Frames (B, G, G) uint8 by the course's recipe, every draw from ``rng``."""
    amp, sigma, rho, detected = ref_draws(len(x), model, rng)
    detected &= (x >= -1) & (x < 1) & (z >= -1) & (z < 1)
    sig = ref_signal(x, z, frame, n_frames, amp, sigma, rho, detected, model)
    bg = rng.normal(model.background_mean, model.background_std, sig.shape)
    return np.clip(np.round(sig + bg), 0, 255).astype(np.uint8)


def replay_draws(n, model, seed):
    """The renderer's per-electron draws, replayed from a generator seeded ``seed`` in the
    documented order: rand (detection), randn (A), randn (sigma), randn (rho)."""
    g = torch.Generator().manual_seed(seed)
    det = (torch.rand(n, generator=g) < model.detect_prob).numpy()
    amp = (model.amp_mean + model.amp_std * torch.randn(n, generator=g)).clamp_min(0).double().numpy()
    sigma = (model.sigma_mean + model.sigma_std * torch.randn(n, generator=g)).clamp_min(1e-6).double().numpy()
    rho = (model.rho_std * torch.randn(n, generator=g)).clamp(-1, 1).double().numpy()
    return amp, sigma, rho, det


def render(model, x, z, frame, n_frames, seed, **kw):
    r = FrameRenderer(model, CPU, **kw)
    f, d = r(torch.as_tensor(x), torch.as_tensor(z), torch.as_tensor(frame), n_frames,
             torch.Generator().manual_seed(seed))
    return f.numpy(), d.numpy()


def to_units(p, G):
    return (np.asarray(p, dtype=np.float64) + 0.5) * 2 / G - 1


# -- (a) the distribution of recorded values -------------------------------------------------
def test_recorded_values_have_the_reference_distribution_in_every_light_group():
    m, G = SMALL, SMALL.grid
    # Fixed sites, the same hits in every frame: 5 single spots, 2 doubles (peak ~200: the
    # saturation edge), 1 triple (~300: saturated), 1 pair 9 px apart (overlap).
    sites = [(48, 48, 1), (48, 128, 1), (128, 48, 1), (208, 128, 1), (128, 208, 1),
             (48, 208, 2), (208, 48, 2), (208, 208, 3)]
    hx, hz = [], []
    for i, j, k in sites:
        hx += [i + 0.3] * k
        hz += [j - 0.2] * k
    hx += [124.0, 132.5]
    hz += [126.0, 130.0]
    per = len(hx)
    # Grouping by nominal light (A = 100, s = 7.68 px, rho = 0, all detected); grouping only.
    nominal = ref_signal(to_units(hx, G), to_units(hz, G), np.zeros(per, int), 1, np.full(per, 100.0),
                         np.full(per, m.sigma_mean), np.zeros(per), np.ones(per, bool), m)[0]
    edges = [0, 1e-300, 0.3, 1, 3, 10, 30, 60, 100, 150, 200, 250, np.inf]
    group = np.digitize(nominal, edges) - 1                   # 0: outside every window
    names = ["spot-free"] + [f"light [{a:g}, {b:g})" for a, b in zip(edges[1:-1], edges[2:])]

    F = 600
    x = np.tile(to_units(hx, G), F)
    z = np.tile(to_units(hz, G), F)
    frame = np.repeat(np.arange(F), per)
    new, _ = render(m, x, z, frame, F, seed=11)
    ref = ref_frames(x, z, frame, F, m, np.random.default_rng(12))

    def per_frame_moments(frames):  # (F, n_groups, 2): mean of y and of y^2 per frame and group
        y = frames.reshape(F, -1).astype(np.float64)
        g = group.reshape(-1)
        out = np.zeros((F, len(names), 2))
        for k in range(len(names)):
            sel = y[:, g == k]
            out[:, k] = np.stack([sel.mean(1), (sel ** 2).mean(1)], 1)
        return out

    a, b = per_frame_moments(new), per_frame_moments(ref)
    z_scores, lines = [], []
    for k, name in enumerate(names):
        assert (group == k).sum() >= 20, f"group {name} has too few pixels"
        for j, what in enumerate(("mean", "mean square")):
            d = a[:, k, j].mean() - b[:, k, j].mean()
            se = math.sqrt(a[:, k, j].var(ddof=1) / F + b[:, k, j].var(ddof=1) / F)
            zz = d / se if se > 0 else (0.0 if d == 0 else math.inf)
            z_scores.append(zz)
            lines.append(f"{name} {what}: new {a[:, k, j].mean():.3f} ref {b[:, k, j].mean():.3f} z {zz:+.2f}")
            # 4.5 sigma per test: with 24 tests a correct renderer fails one with probability 2e-4.
            assert abs(zz) < 4.5, f"group {name} ({(group == k).sum()} px): {what} differs: " + lines[-1]
    # All together: chi^2 of the z's at the 1e-4 level.
    c2 = float(np.sum(np.square(z_scores)))
    assert c2 < chi2.ppf(1 - 1e-4, len(z_scores)), f"chi^2 {c2:.1f} over {len(z_scores)} tests:\n" + "\n".join(lines)
    # The saturated group really saturates, and both renderers agree on how often.
    sat = group == len(names) - 1
    p_new = (new.reshape(F, -1)[:, sat.reshape(-1)] == 255).mean()
    p_ref = (ref.reshape(F, -1)[:, sat.reshape(-1)] == 255).mean()
    assert p_new > 0.5 and abs(p_new - p_ref) < 0.05, f"saturated fraction new {p_new:.3f} ref {p_ref:.3f}"
    # Spot-free pixels against the exact law of clip(round(N(20, 20^2))) (background_moments).
    mu, sd = background_moments(m)
    y = new.reshape(F, -1)[:, (group == 0).reshape(-1)].astype(np.float64)
    n = y.size
    assert abs(y.mean() - mu) < 4.5 * sd / math.sqrt(n), f"spot-free mean {y.mean():.4f}, exact {mu:.4f}"
    assert abs(y.std() / sd - 1) < 4.5 * math.sqrt(0.6 / n) + 1e-3, f"spot-free std {y.std():.4f}, exact {sd:.4f}"


# -- (b) isolated spots against the drawn truth ------------------------------------------------
def test_isolated_spots_have_the_drawn_flux_centre_and_shape():
    # A background of 20 +- 1 counts: far from the clip at 0, and the 1-count noise dithers the
    # rounding (without it, every pixel under 0.5 counts rounds to 0 and 0.35% of the flux is lost).
    m = replace(FrameModel(), background_std=1.0, detect_prob=1.0)
    G, h, B = m.grid, m.window_half_px, 2
    rng = np.random.default_rng(5)
    c = np.arange(60, G - 60, 75)                                   # 13 x 13 sites 75 px apart (> 2h + 1)
    ci, cj = (v.ravel() for v in np.meshgrid(c, c, indexing="ij"))
    px = np.concatenate([ci + rng.uniform(-0.5, 0.5, ci.size) for _ in range(B)])
    pz = np.concatenate([cj + rng.uniform(-0.5, 0.5, cj.size) for _ in range(B)])
    frame = np.repeat(np.arange(B), ci.size)
    frames, det = render(m, to_units(px, G), to_units(pz, G), frame, B, seed=3)
    amp, sigma, rho, _ = replay_draws(px.size, m, seed=3)
    assert det.all()
    s2 = (sigma * G / 2) ** 2
    var_sub = (m.subpixel ** 2 - 1) / (12 * m.subpixel ** 2)        # the 5 x 5 sub-sample spread, px^2
    u = np.arange(-h, h + 1)
    flux, cx, cz, vx, vz, cxz = (np.zeros(px.size) for _ in range(6))
    for k in range(px.size):
        r0, c0 = int(np.round(px[k])), int(np.round(pz[k]))
        w = frames[frame[k], r0 - h:r0 + h + 1, c0 - h:c0 + h + 1].astype(np.float64) - 20.0
        flux[k] = w.sum()
        dx, dz = r0 + u - px[k], c0 + u - pz[k]
        cx[k], cz[k] = (w.sum(1) * dx).sum() / flux[k], (w.sum(0) * dz).sum() / flux[k]
        vx[k] = (w.sum(1) * (dx - cx[k]) ** 2).sum() / flux[k]
        vz[k] = (w.sum(0) * (dz - cz[k]) ** 2).sum() / flux[k]
        cxz[k] = (w * np.outer(dx - cx[k], dz - cz[k])).sum() / flux[k]
    # Noise per spot, from the 1-count dither and the rounding (variance 1 + 1/12 per pixel) over the
    # 57 x 57 window, relative to a ~37,000-count spot: flux 0.16%, centre 0.025 px, second moments
    # 0.9% of the variance. Tolerances: 5 of those per spot; the means over 338 spots are tighter.
    f_true = 2 * np.pi * amp * s2 / np.sqrt(1 - rho ** 2)           # the integral of the drawn spot
    rel = flux / f_true - 1
    # The window (+-28.5 px, 3.7 sigma) keeps all but ~0.05% of the flux.
    assert np.abs(rel).max() < 0.008 and -0.002 < rel.mean() < 0.0003, \
        f"flux / drawn flux - 1: mean {rel.mean():.5f}, worst {rel[np.abs(rel).argmax()]:.5f}"
    err = np.hypot(cx, cz)
    assert err.max() < 0.15 and abs(cx.mean()) < 0.01 and abs(cz.mean()) < 0.01, \
        f"centre of mass off the hit by up to {err.max():.4f} px, on average ({cx.mean():.4f}, {cz.mean():.4f})"
    # Shape: the covariance of A exp(-(dx^2 + dz^2 + 2 rho dx dz)/(2 s^2)) is
    # s^2/(1 - rho^2) [[1, -rho], [-rho, 1]], plus the sub-sample spread on the diagonal; the
    # window removes ~0.4% of the variance.
    v_true = s2 / (1 - rho ** 2)
    for name, v in (("var x", vx), ("var z", vz)):
        q = v / (v_true + var_sub) - 1
        assert np.abs(q).max() < 0.05 and -0.01 < q.mean() < 0.002, \
            f"{name} / drawn - 1: mean {q.mean():.5f}, worst {q[np.abs(q).argmax()]:.5f}"
    dc = (cxz - (-rho * v_true)) / v_true
    assert np.abs(dc).max() < 0.05 and abs(dc.mean()) < 0.003, \
        f"covariance off the drawn -rho s^2/(1-rho^2) by up to {np.abs(dc).max():.4f} of the variance"
    assert np.corrcoef(cxz / v_true, -rho)[0, 1] > 0.98, "the spot's tilt must follow the drawn rho"


def test_noise_free_frames_equal_the_reference_of_the_same_draws_but_at_rounding_edges():
    # Wide rho (sd 0.3) so all three kinds of spot occur (Taylor 6, Taylor 12, exact); hits
    # anywhere, the borders and corners included; spots overlap.
    m = replace(FrameModel(), background_std=0.0, rho_std=0.3)
    G, B = m.grid, 3
    rng = np.random.default_rng(8)
    n = 3 * 150
    x, z = rng.uniform(-1, 1, n), rng.uniform(-1, 1, n)
    x[:8] = [-1.0, -0.9995, 0.9999, -1.0, 0.9999, 0.5, -0.99, 1.0]      # edges, corners, one outside
    z[:8] = [-1.0, 0.3, 0.9999, 0.9995, -1.0, -0.9999, 0.9999, 0.0]
    frame = rng.integers(0, B, n)
    frames, det = render(m, x, z, frame, B, seed=21)
    amp, sigma, rho, d0 = replay_draws(n, m, seed=21)
    inside = (x >= -1) & (x < 1) & (z >= -1) & (z < 1)
    np.testing.assert_array_equal(det, d0 & inside, err_msg="detected = drawn detection and inside [-1, 1)^2")
    exact = 20.0 + ref_signal(x, z, frame, B, amp, sigma, rho, det, m)
    want = np.clip(np.round(exact), 0, 255)
    diff = frames.astype(np.float64) - want
    # Allowed to differ: a pixel whose exact value lies within the claimed error (TRUNCATION_TOL,
    # plus 1e-4 for float32 and several spots) of a rounding edge k + 1/2.
    edge = np.abs(exact - np.floor(exact) - 0.5) < TRUNCATION_TOL + 1e-4
    bad = (diff != 0) & ~edge
    assert np.abs(diff).max() <= 1, f"a pixel off by {np.abs(diff).max()} counts"
    assert not bad.any(), (f"{bad.sum()} pixels differ from the reference away from a rounding edge, e.g. "
                           f"frame/row/col {np.argwhere(bad)[0]}: got {frames[tuple(np.argwhere(bad)[0])]}, "
                           f"exact {exact[tuple(np.argwhere(bad)[0])]:.5f}")
    assert (diff != 0).sum() <= max(5, edge.sum() // 5), f"{(diff != 0).sum()} edge pixels differ, of {edge.sum()}"
    # All three kinds of spot were exercised.
    s_px = torch.tensor(sigma * G / 2, dtype=torch.float32)
    b = [truncation_bound(torch.tensor(amp), torch.tensor(rho), s_px, k, m.window_half_px, m.subpixel).numpy()
         for k in ORDERS]
    kinds = [(det & (b[0] <= TRUNCATION_TOL)).sum(), (det & (b[0] > TRUNCATION_TOL) & (b[1] <= TRUNCATION_TOL)).sum(),
             (det & (b[1] > TRUNCATION_TOL)).sum()]
    assert min(kinds) >= 10, f"spots per kind (order {ORDERS[0]}, order {ORDERS[1]}, exact): {kinds}"


# -- the truncation bound ------------------------------------------------------------------------
def test_taylor_windows_stay_within_the_truncation_bound():
    rng = np.random.default_rng(2)
    n = 160
    frac = torch.tensor(rng.uniform(-0.5, 0.5, (n, 2)), dtype=torch.float32)
    s_px = torch.tensor(rng.uniform(5.5, 10.0, n), dtype=torch.float32)
    amp = torch.tensor(rng.uniform(60, 160, n), dtype=torch.float32)
    rho = torch.tensor(rng.uniform(-0.45, 0.45, n), dtype=torch.float32)
    d = lambda t: t.double()
    exact = spot_patches(d(frac), d(s_px), d(amp), d(rho), order=None)
    for k in ORDERS:
        bound = truncation_bound(amp, rho, s_px, k, FrameModel.window_half_px, FrameModel.subpixel)
        # Truncation alone (float64): never above the bound.
        err64 = (spot_patches(d(frac), d(s_px), d(amp), d(rho), order=k) - exact).abs().amax(dim=(1, 2))
        worst = (err64 - bound).max().item()
        assert worst < 1e-12, f"order {k}: Taylor truncation exceeds its bound by {worst:.2e} counts"
        # As the renderer computes it (float32): the bound plus float32 rounding, < 5e-5 counts
        # for windows up to 160 counts (module docstring).
        err = (spot_patches(frac, s_px, amp, rho, order=k).double() - exact).abs().amax(dim=(1, 2))
        assert (err - bound).max().item() < 5e-5, f"order {k}: float32 Taylor error exceeds bound + 5e-5"
        covered = bound <= TRUNCATION_TOL
        assert covered.sum() >= 20, f"order {k} covers too few of the test spots ({int(covered.sum())})"
        assert err[covered].max() <= TRUNCATION_TOL + 5e-5, f"order {k}: error {err[covered].max():.2e} > tol"
        assert (err64[~covered] > TRUNCATION_TOL).any() or k == ORDERS[-1], f"order {k}: the test never needs it"
    # The course's spots: order 6 covers ~90%, order 12 all but ~1 in 700 (module docstring).
    g = torch.Generator().manual_seed(0)
    N = 200_000
    m = FrameModel()
    a = (m.amp_mean + m.amp_std * torch.randn(N, generator=g)).clamp_min(0)
    s = (m.sigma_mean + m.sigma_std * torch.randn(N, generator=g)) * m.px_per_unit
    r = (m.rho_std * torch.randn(N, generator=g)).clamp(-1, 1)
    share = [(truncation_bound(a, r, s, k, m.window_half_px, m.subpixel) <= TRUNCATION_TOL).double().mean().item()
             for k in ORDERS]
    assert 0.87 < share[0] < 0.93 and 0.997 < share[1] < 0.9995, f"shares covered by orders {ORDERS}: {share}"


# -- (c) reproducibility, shapes, errors --------------------------------------------------------
def _hits(n_frames, per_frame, seed, G=1024):
    rng = np.random.default_rng(seed)
    n = n_frames * per_frame
    r, phi = 0.95 * np.sqrt(rng.random(n)), 2 * np.pi * rng.random(n)
    return (torch.tensor(r * np.cos(phi)), torch.tensor(r * np.sin(phi)),
            torch.tensor(rng.integers(0, n_frames, n)))


def test_frames_are_reproducible_by_seed_and_independent_of_threads_and_steps():
    x, z, f = _hits(4, 110, seed=1)
    a, da = FrameRenderer(device=CPU)(x, z, f, 4, torch.Generator().manual_seed(7))
    b, db = FrameRenderer(device=CPU)(x, z, f, 4, torch.Generator().manual_seed(7))
    c, _ = FrameRenderer(device=CPU)(x, z, f, 4, torch.Generator().manual_seed(8))
    assert torch.equal(a, b) and torch.equal(da, db), "same seed, other frames"
    assert not torch.equal(a, c), "another seed must give other frames"
    threads = torch.get_num_threads()
    try:
        # Step 2100: past 2^31 buffer elements at G = 1024, so the int64 index path.
        for nt, step, overlap in ((1, 1, False), (2, 3, True), (1, 4, True), (2, 1, True), (1, 2, False),
                                  (1, 16, False), (1, 2100, False)):
            torch.set_num_threads(nt)
            e, de = FrameRenderer(device=CPU, frames_per_step=step, overlap=overlap)(
                x, z, f, 4, torch.Generator().manual_seed(7))
            assert torch.equal(a, e) and torch.equal(da, de), \
                f"frames changed with {nt} threads, step {step}, overlap {overlap}"
    finally:
        torch.set_num_threads(threads)


def test_shapes_and_dtypes_are_render_frames_ones():
    x, z, f = _hits(2, 40, seed=2)
    new, dn = FrameRenderer(device=CPU)(x, z, f, 2, torch.Generator().manual_seed(1))
    old, do = render_frames(x, z, f, 2, generator=torch.Generator().manual_seed(1))
    assert new.shape == old.shape == (2, 1024, 1024) and new.dtype == old.dtype == torch.uint8
    assert dn.shape == do.shape == (x.numel(),) and dn.dtype == do.dtype == torch.bool
    assert new.device == old.device == CPU
    # Same first draws, in the same order: the same electrons detected.
    assert torch.equal(dn, do)
    # No hits: background only; float32 inputs and a list of frames are accepted.
    e, de = FrameRenderer(device=CPU)(torch.zeros(0), torch.zeros(0), torch.zeros(0, dtype=torch.long), 3,
                                      torch.Generator().manual_seed(1))
    assert e.shape == (3, 1024, 1024) and de.shape == (0,)
    f32, _ = FrameRenderer(device=CPU)(x.float(), z.float(), f.tolist(), 2, torch.Generator().manual_seed(1))
    assert f32.shape == (2, 1024, 1024)


def test_bad_input_raises_typed_one_line_errors():
    r = FrameRenderer(SMALL, CPU)
    g = torch.Generator().manual_seed(0)
    x = torch.zeros(3, dtype=torch.float64)
    cases = [
        (lambda: r(x, x, torch.tensor([0, 1, 5]), 5, g), "frame indices must be in [0, 5)"),
        (lambda: r(x, x[:2], torch.zeros(3, dtype=torch.long), 1, g), "one shape"),
        (lambda: r(x, x, torch.zeros(3), 1, g), "integer frame indices"),
        (lambda: r(x, x, torch.zeros(3, dtype=torch.long), 0, g), "n_frames must be >= 1"),
        (lambda: r(x, x, torch.zeros(3, dtype=torch.long), 1, "seed"), "torch.Generator"),
        (lambda: FrameRenderer(SMALL, CPU, orders=(12, 6)), "increasing"),
        (lambda: FrameRenderer(SMALL, CPU, tol=0), "tol"),
    ]
    if torch.cuda.is_available():
        cases.append((lambda: r(x, x, torch.zeros(3, dtype=torch.long), 1, torch.Generator("cuda")), "renderer on"))
    for call, text in cases:
        with pytest.raises(FrameRendererError) as e:
            call()
        assert isinstance(e.value, ValueError) and text in str(e.value) and "\n" not in str(e.value), str(e.value)


# -- (d) streaming -------------------------------------------------------------------------------
def _params(n1, n2):
    beta = torch.zeros(1, 2, 12, dtype=torch.float64)
    beta[0, :, 0] = torch.tensor([1.5, -0.5])
    f64 = torch.float64
    return ShellParams(torch.tensor([[0.35, 0.7]], dtype=f64), torch.tensor([[0.01, 0.01]], dtype=f64), beta,
                       torch.tensor([[n1, n2]]))


def test_streaming_sum_equals_the_sum_of_the_rendered_frames():
    params, n_frames, chunk = _params(700, 500), 7, 3
    r = FrameRenderer(SMALL, CPU)
    res = accumulate_frames(r, params, n_frames, generator=torch.Generator().manual_seed(4), chunk_frames=chunk,
                            progress=False)
    g = torch.Generator().manual_seed(4)
    frames, xs, zs, total = [], [], [], 0
    for x, z, f, nb, counts in shell_hit_chunks(params, n_frames, generator=g, chunk_frames=chunk):
        fr, det = r(x, z, f, nb, g)
        frames.append(fr.numpy())
        xs.append(x[det].numpy())
        zs.append(z[det].numpy())
        total += int(counts.sum())
    frames = np.concatenate(frames)
    assert frames.shape == (n_frames, SMALL.grid, SMALL.grid) and res.n_frames == n_frames
    assert res.frame_sum.dtype == np.int64 and res.frame_sum.shape == (SMALL.grid, SMALL.grid)
    np.testing.assert_array_equal(res.frame_sum, frames.sum(0, dtype=np.int64))
    np.testing.assert_array_equal(res.x, np.concatenate(xs))
    np.testing.assert_array_equal(res.z, np.concatenate(zs))
    assert res.n_emitted == (700, 500) and total == 1200, "exact totals: every electron of each shell is drawn"
    assert abs(len(res.x) / 1200 - 0.9) < 4 * math.sqrt(0.09 / 1200), f"detected {len(res.x)} of 1200"
    assert res.x.dtype == np.float32 and np.all(np.hypot(res.x, res.z) < 1)


def test_streaming_batches_are_the_frames_contiguous_sums():
    params, n_frames, chunk = _params(700, 500), 7, 3
    r = FrameRenderer(SMALL, CPU)
    res = accumulate_frames(r, params, n_frames, generator=torch.Generator().manual_seed(4), chunk_frames=chunk,
                            progress=False, batches=3, batch_grid=SMALL.grid // 4)
    g = torch.Generator().manual_seed(4)
    frames = np.concatenate([r(x, z, f, nb, g)[0].numpy()
                             for x, z, f, nb, _ in shell_hit_chunks(params, n_frames, generator=g, chunk_frames=chunk)])
    np.testing.assert_array_equal(res.frame_sum, frames.sum(0, dtype=np.int64))
    np.testing.assert_array_equal(res.batch_frames, [3, 2, 2])  # frame i in batch i * 3 // 7
    h = SMALL.grid // 4
    for b, (a, e) in enumerate(((0, 3), (3, 5), (5, 7))):
        want = frames[a:e].sum(0, dtype=np.int64).reshape(h, 4, h, 4).sum(axis=(1, 3))
        np.testing.assert_array_equal(res.batch_sums[b], want)


def test_per_frame_counts_are_poisson_with_or_without_exact_totals():
    params, n_frames = _params(30_000, 20_000), 1000
    for exact in (True, False):
        g = torch.Generator().manual_seed(9)
        counts = []
        for x, z, f, nb, c in shell_hit_chunks(params, n_frames, generator=g, chunk_frames=64, exact_totals=exact):
            counts.append(np.bincount(f.numpy(), minlength=nb))
        k = np.concatenate(counts)
        assert k.size == n_frames
        if exact:
            assert k.sum() == 50_000
        else:
            assert abs(k.sum() - 50_000) < 4.5 * math.sqrt(50_000), k.sum()
        # Poisson(50): the dispersion index var/mean is 1 within 4.5 * sqrt(2/(n-1)).
        disp = k.var(ddof=1) / k.mean()
        assert abs(disp - 1) < 4.5 * math.sqrt(2 / (n_frames - 1)), f"exact_totals={exact}: var/mean {disp:.3f}"
