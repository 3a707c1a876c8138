"""sevi.camera.centroid against simulated frames with known truth (sevi.camera.frames)."""
import dataclasses
from dataclasses import replace

import numpy as np
import torch

from sevi.camera.centroid import centroid_frames, map_cost, refine_positions
from sevi.camera.centroid_config import CentroidConfig
from sevi.camera.frames import FrameModel, simulate_frames

PX = 512.0  # px per detector unit


def grid_hits(n_side=6, jitter=0.01, seed=0):
    """n_side^2 hits on a grid 0.3 units (154 px) apart: every spot isolated."""
    g = torch.Generator().manual_seed(seed)
    c = torch.linspace(-0.75, 0.75, n_side, dtype=torch.float64)
    X, Z = torch.meshgrid(c, c, indexing="ij")
    j = (torch.rand(2, n_side * n_side, generator=g, dtype=torch.float64) - 0.5) * jitter
    return X.reshape(-1) + j[0], Z.reshape(-1) + j[1]


def nearest_errors_px(found, x, z):
    fx, fz = found.x.numpy(), found.z.numpy()
    d = np.hypot(fx[:, None] - x.numpy()[None], fz[:, None] - z.numpy()[None])
    k = d.argmin(0)                                 # the found spot nearest each true one
    return (fx[k] - x.numpy()) * PX, (fz[k] - z.numpy()) * PX


def test_isolated_noise_free_spots_within_a_tenth_of_a_pixel():
    # Noise-free background (20 exactly) but the course's spread of A, sigma and rho, rounding
    # and the 5x5 sub-pixel average: the method's own error, which must be < 0.1 px per spot.
    model = replace(FrameModel(), background_std=0.0, detect_prob=1.0)
    x, z = grid_hits()
    frames, _ = simulate_frames(x, z, torch.zeros(len(x), dtype=torch.long), 1, model, seed=1, device="cpu")
    found = centroid_frames(frames)
    assert len(found) == len(x), f"found {len(found)} of {len(x)} isolated spots"
    ex, ez = nearest_errors_px(found, x, z)
    err = np.hypot(ex, ez)
    assert err.max() < 0.1, f"worst isolated noise-free spot off by {err.max():.3f} px"


def test_isolated_spots_with_course_noise_reach_the_noise_floor():
    # With N(20, 20^2) background a 100-count spot cannot be located better than 0.16 px per
    # axis (Cramer-Rao); ask for <= 0.22 px RMS per axis and no bias over 144 spots.
    model = replace(FrameModel(), detect_prob=1.0)
    x, z = grid_hits()
    xs, zs = torch.cat([x] * 4), torch.cat([z] * 4)
    frame = torch.arange(4).repeat_interleave(len(x))
    frames, _ = simulate_frames(xs, zs, frame, 4, model, seed=2, device="cpu")
    found = centroid_frames(frames)
    assert len(found) == len(xs), f"found {len(found)} of {len(xs)} isolated spots"
    ex, ez = [], []
    for f in range(4):
        sel = found.frame == f
        sub = type(found)(*(getattr(found, f.name)[sel] for f in dataclasses.fields(found)))
        a, b = nearest_errors_px(sub, x, z)
        ex.append(a), ez.append(b)
    ex, ez = np.concatenate(ex), np.concatenate(ez)
    rms = np.sqrt(np.mean(ex ** 2)), np.sqrt(np.mean(ez ** 2))
    assert max(rms) <= 0.22, f"per-axis RMS {rms} px with the course's noise"
    assert abs(ex.mean()) < 0.05 and abs(ez.mean()) < 0.05, f"bias {ex.mean():.3f}, {ez.mean():.3f} px"
    assert (found.multiplicity == 1).all(), "an isolated spot was split"


def test_merged_pairs_are_counted_as_two():
    # Pairs 10-14 px apart (1.3-1.8 sigma): one intensity maximum each, course noise.
    model = replace(FrameModel(), detect_prob=1.0)
    x, z = grid_hits(seed=3)
    g = torch.Generator().manual_seed(4)
    n = len(x)
    sep = (10 + 4 * torch.rand(n, generator=g, dtype=torch.float64)) / PX
    ang = torch.rand(n, generator=g, dtype=torch.float64) * np.pi
    dx, dz = 0.5 * sep * torch.cos(ang), 0.5 * sep * torch.sin(ang)
    xs, zs = torch.cat([x - dx, x + dx]), torch.cat([z - dz, z + dz])
    frames, _ = simulate_frames(xs, zs, torch.zeros(2 * n, dtype=torch.long), 1, model, seed=5, device="cpu")
    found = centroid_frames(frames)
    assert 0.95 * 2 * n <= len(found) <= 1.05 * 2 * n, f"{len(found)} spots found for {2 * n} electrons"
    two = (found.multiplicity == 2).float().mean().item()
    assert two >= 0.95, f"only {two:.2f} of the found spots come from blobs counted as two"
    ex, ez = nearest_errors_px(found, xs, zs)
    within = (np.hypot(ex, ez) <= 1.5).mean()
    assert within >= 0.85, f"only {within:.2f} of the pair members placed within 1.5 px"


def test_empty_frames_and_device_agnostic_output():
    empty = torch.full((2, 1024, 1024), 20, dtype=torch.uint8)
    found = centroid_frames(empty, CentroidConfig())
    assert len(found) == 0 and found.x.dtype == torch.float64


def test_frame_index_is_kept_per_frame():
    model = replace(FrameModel(), background_std=0.0, detect_prob=1.0)
    x = torch.tensor([0.5, -0.5, 0.0], dtype=torch.float64)
    z = torch.tensor([0.1, 0.2, -0.6], dtype=torch.float64)
    frames, _ = simulate_frames(x, z, torch.tensor([0, 2, 2]), 3, model, seed=0, device="cpu")
    found = centroid_frames(frames, CentroidConfig(frame_batch=2))    # spans two batches
    assert found.frame.tolist() == [0, 2, 2], found.frame.tolist()
    np.testing.assert_allclose(sorted(found.z[1:].tolist()), [-0.6, 0.2], atol=0.1 / PX,
                               err_msg="z of the spots in frame 2")


def test_separable_max_filter_equals_max_pool():
    from sevi.camera.spot_detection import _max_filter
    x = torch.randn(3, 40, 33, generator=torch.Generator().manual_seed(0))
    x[0, 5:9, 5:9] = 7.0                                                  # plateaus tie exactly
    for k in (3, 5, 7):
        ref = torch.nn.functional.max_pool2d(x[:, None], k, 1, k // 2)[:, 0]
        assert torch.equal(_max_filter(x, k), ref)


def test_clusters_are_connected_components_within_frames():
    from sevi.camera.cluster_refit import _clusters
    fb = torch.tensor([0, 0, 0, 0, 1, 1])
    U = torch.tensor([0.0, 4.0, 8.0, 30.0, 0.0, 4.0], dtype=torch.float64)   # a chain, a loner; a pair
    V = torch.zeros(6, dtype=torch.float64)
    lab = _clusters(fb, U, V, 5.0).tolist()
    assert lab[0] == lab[1] == lab[2] != lab[3] and lab[4] == lab[5] != lab[0]


def test_joint_cluster_refit_finds_more_of_a_chain_of_spots():
    """Chains of 4 spots 10 px apart (1.3 spot sigmas), as on a crowded ring: the joint refit
    of clusters must place more of them within 1.5 px than the per-candidate fits alone."""
    G = 1024
    rng = np.random.default_rng(0)
    c = np.arange(100, G - 100, 150)
    xs, zs, fs = [], [], []
    for f in range(2):
        cx, cz = (v.ravel() for v in np.meshgrid(c, c, indexing="ij"))
        a = rng.uniform(0, np.pi, cx.size)
        for k in range(4):
            s = (k - 1.5) * 10 + rng.uniform(-1.5, 1.5, cx.size)
            xs.append((cx + s * np.cos(a) + 0.5) * 2 / G - 1)
            zs.append((cz + s * np.sin(a) + 0.5) * 2 / G - 1)
            fs.append(np.full(cx.size, f))
    x, z, f = (torch.tensor(np.concatenate(v)) for v in (xs, zs, fs))
    frames, _ = simulate_frames(x, z, f, 2, replace(FrameModel(), detect_prob=1.0), seed=1, device="cpu")
    true = np.stack([(x.numpy() + 1) * G / 2 - 0.5, (z.numpy() + 1) * G / 2 - 0.5], 1)

    def found_within(cfg):
        r = centroid_frames(frames, cfg)
        got = np.stack([(r.x.numpy() + 1) * G / 2 - 0.5, (r.z.numpy() + 1) * G / 2 - 0.5], 1)
        n = 0
        for fr in range(2):
            t, g = true[f.numpy() == fr], got[r.frame.numpy() == fr]
            d = np.linalg.norm(t[:, None] - g[None], axis=2)
            n += int((d.min(1) <= 1.5).sum())
        return n / len(true)
    on, off = found_within(CentroidConfig()), found_within(CentroidConfig(cluster_max=0))
    assert on > off + 0.05, (on, off)


def _pair_frames(sep_px, seed):
    """Isolated pairs sep_px apart along x on a 0.3-unit grid, one frame."""
    model = replace(FrameModel(), detect_prob=1.0)
    x, z = grid_hits(n_side=4, seed=seed)
    xs = torch.cat([x - sep_px / 2 / PX, x + sep_px / 2 / PX])
    zs = torch.cat([z, z])
    frames, _ = simulate_frames(xs, zs, torch.zeros(len(xs), dtype=torch.long), 1, model, seed=seed, device="cpu")
    return frames, xs, zs


def test_refine_positions_from_the_truth_keeps_the_count_and_lands_near_it():
    frames, xs, zs = _pair_frames(12.0, seed=5)
    start_x, start_z = xs + 1.0 / PX, zs - 1.0 / PX        # every start 1.4 px off
    fit, unfitted = refine_positions(frames, torch.zeros(len(xs), dtype=torch.long), start_x, start_z)
    assert unfitted == 0 and len(fit) == len(xs)
    d = np.hypot(fit.x.numpy()[:, None] - xs.numpy()[None], fit.z.numpy()[:, None] - zs.numpy()[None]) * PX
    assert np.median(d.min(0)) < 0.6, f"refined pair spots off by {np.median(d.min(0)):.2f} px (median)"


def test_refine_positions_with_recount_drops_a_duplicate_start():
    model = replace(FrameModel(), detect_prob=1.0)
    x, z = grid_hits(n_side=3, seed=6)
    frames, _ = simulate_frames(x, z, torch.zeros(len(x), dtype=torch.long), 1, model, seed=6, device="cpu")
    # Every spot started twice, 1 px apart: without recount 18 spots come back, with it 9.
    sx, sz = torch.cat([x, x + 1.0 / PX]), torch.cat([z, z])
    fr = torch.zeros(len(sx), dtype=torch.long)
    kept, _ = refine_positions(frames, fr, sx, sz)
    counted, _ = refine_positions(frames, fr, sx, sz, recount=True)
    assert len(kept) == 18 and len(counted) == 9


def test_map_cost_prefers_the_full_configuration_to_one_missing_a_spot():
    model = replace(FrameModel(), detect_prob=1.0)
    x, z = grid_hits(n_side=3, seed=7)
    frames, _ = simulate_frames(x, z, torch.zeros(len(x), dtype=torch.long), 1, model, seed=7, device="cpu")
    fr = torch.zeros(len(x), dtype=torch.long)
    full, _ = refine_positions(frames, fr, x, z)
    short, _ = refine_positions(frames, fr[1:], x[1:], z[1:])
    c_full, c_short = map_cost(frames, full), map_cost(frames, short)
    # A missed isolated 100-count spot leaves ~4,800 chi^2 of residual (A^2 pi s^2 / noise^2,
    # s = 1.95 bins, noise 5 per bin); the spot's own prior and penalty are ~15.
    assert 3000 < c_short.item() - c_full.item() < 7000
