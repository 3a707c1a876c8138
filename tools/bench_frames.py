"""Benchmark the centroider: recall, precision, position RMS and frames/s.

Simulates frames with the course's camera (sevi.frames, ~100 detected electrons per frame),
centroids them with sevi.centroid and with a straightforward per-frame scipy method
(maximum_filter local maxima + threshold + centre of mass), and matches found positions to the
true detected ones within 1.5 px (Hungarian assignment per frame).

A true electron is "isolated" when no other detected electron of its frame lies within
``--overlap-px`` (default 23 px = 3 spot sigmas: closer spots share a fit window and, under
~2 sigmas, a single intensity maximum), else "overlapping".

    python tools/bench_frames.py --frames 200 --hits shells
"""
from __future__ import annotations

import argparse
import math
import os
import platform
import time

import numpy as np
import torch
from scipy import ndimage
from scipy.optimize import linear_sum_assignment

from sevi.centroid import CentroidConfig, centroid_frames
from sevi.frames import FrameModel, default_device, draw_disc_hits, draw_prior_hits, draw_shell_hits, render_frames


def scipy_centroid(frame: np.ndarray, *, smooth_px: float = 2.0, size: int = 15, threshold: float = 70.0,
                   background: float = 20.0, half: int = 7) -> tuple[np.ndarray, np.ndarray]:
    """The straightforward method: local maxima over ``size x size`` px (2 spot sigmas) above
    ``threshold`` counts of the frame lightly smoothed (``smooth_px``; on the raw frame the
    N(20, 20^2) noise makes thousands of false maxima), then the background-subtracted centre
    of mass of the raw frame in a ``(2 half + 1)^2`` window around each. Returns pixel
    coordinates (axis 0, axis 1)."""
    f = frame.astype(np.float32)
    s = ndimage.gaussian_filter(f, smooth_px)
    peaks = (ndimage.maximum_filter(s, size=size) == s) & (s > threshold)
    # Plateaus (saturation) give several equal maxima: keep one per connected plateau.
    lab, n = ndimage.label(peaks)
    if n == 0:
        return np.zeros(0), np.zeros(0)
    pos = np.array(ndimage.center_of_mass(peaks, lab, np.arange(1, n + 1))).round().astype(int)
    pad = np.pad(f - background, half)
    o = np.arange(-half, half + 1)
    rows = pos[:, 0, None] + o + half
    cols = pos[:, 1, None] + o + half
    win = np.clip(pad[rows[:, :, None], cols[:, None, :]], 0, None)      # (n, W, W)
    tot = win.sum((1, 2)) + 1e-9
    return (pos[:, 0] + (win.sum(2) * o).sum(1) / tot,
            pos[:, 1] + (win.sum(1) * o).sum(1) / tot)


def match_frame(true_px: np.ndarray, found_px: np.ndarray, tol: float):
    """Hungarian matching within ``tol`` px. Returns (true_idx, found_idx) of matched pairs."""
    if len(true_px) == 0 or len(found_px) == 0:
        return np.zeros(0, int), np.zeros(0, int)
    d = np.linalg.norm(true_px[:, None, :] - found_px[None, :, :], axis=2)
    big = 1e6
    ti, fi = linear_sum_assignment(np.where(d <= tol, d, big))
    ok = d[ti, fi] <= tol
    return ti[ok], fi[ok]


NN_BINS_PX = (0.0, 3.0, 6.0, 9.0, 12.0, 16.0, 23.0, np.inf)  # nearest-neighbour distance bins, px


def _nearest_neighbour(t: np.ndarray) -> np.ndarray:
    """Distance (px) from each true electron to the nearest other one of its frame (inf if alone)."""
    if len(t) < 2:
        return np.full(len(t), np.inf)
    d = np.linalg.norm(t[:, None] - t[None], axis=2)
    np.fill_diagonal(d, np.inf)
    return d.min(1)


def evaluate(true_by_frame, found_by_frame, *, tol: float, overlap_px: float) -> dict:
    """Recall, precision and RMS, split into isolated / overlapping truth."""
    n_true = {"isolated": 0, "overlapping": 0}
    n_hit = {"isolated": 0, "overlapping": 0}
    sq = {"isolated": [], "overlapping": []}
    n_found = n_match = 0
    nn_tot, nn_hit = np.zeros(len(NN_BINS_PX) - 1), np.zeros(len(NN_BINS_PX) - 1)
    for t, f in zip(true_by_frame, found_by_frame):
        nn = _nearest_neighbour(t)
        iso = nn >= overlap_px
        ti, fi = match_frame(t, f, tol)
        hit = np.zeros(len(t), bool)
        hit[ti] = True
        b = np.clip(np.digitize(nn, NN_BINS_PX) - 1, 0, len(NN_BINS_PX) - 2)
        np.add.at(nn_tot, b, 1)
        np.add.at(nn_hit, b, hit)
        n_found += len(f)
        n_match += len(ti)
        for name, sel in (("isolated", iso), ("overlapping", ~iso)):
            n_true[name] += int(sel.sum())
            m = sel[ti]
            n_hit[name] += int(m.sum())
            sq[name].append(((t[ti[m]] - f[fi[m]]) ** 2))
    out = {"recall": n_match / max(1, sum(n_true.values())), "precision": n_match / max(1, n_found),
           "n_true": sum(n_true.values()), "n_found": n_found,
           "nn_fraction": (nn_tot / max(1, nn_tot.sum())).tolist(),
           "nn_recall": (nn_hit / np.maximum(nn_tot, 1)).tolist()}
    for name in n_true:
        e = np.concatenate(sq[name]) if sq[name] else np.zeros((0, 2))
        out[f"{name}_n"] = n_true[name]
        out[f"{name}_recall"] = n_hit[name] / max(1, n_true[name])
        out[f"{name}_rms_px"] = float(np.sqrt(e.sum(1).mean())) if len(e) else float("nan")
        out[f"{name}_rms_axis_px"] = float(np.sqrt(e.mean())) if len(e) else float("nan")
    return out


def pair_match_probability(d_px: np.ndarray, model: FrameModel, tol: float, draws: int = 20000) -> np.ndarray:
    """Chance that an estimator at the Cramer-Rao bound puts an electron within ``tol`` px, when its
    nearest neighbour is ``d_px`` away and no other spot is near (pairs only; no saturation).

    Both spots of the pair have free position, amplitude, width and correlation; amplitude, width
    and correlation carry the camera model's Gaussian priors (N(100, 10^2), N(7.68, 0.51^2) px,
    N(0, 0.1^2)). The 2-D error is drawn from the bound's covariance. At ``d <= 2 tol`` an
    estimator that puts both at the pair's midpoint matches both, so the chance there is 1.
    """
    s = model.sigma_mean * model.grid / 2
    g = np.arange(-int(4 * s) - 16, int(4 * s) + 17) + 0.3
    X, Z = np.meshgrid(g, g, indexing="ij")
    rng = np.random.default_rng(0)
    prior = np.array([0, 0, model.amp_std ** -2, (model.sigma_std * model.grid / 2) ** -2, model.rho_std ** -2] * 2)
    out = np.ones(len(d_px))
    for i, d in enumerate(d_px):
        if d <= 2 * tol:
            continue
        cols = []
        for x0 in (-d / 2, d / 2):
            a = X - x0
            q = (a * a + Z * Z) / (2 * s * s)
            gg = np.exp(-q)
            A = model.amp_mean
            cols += [A * gg * a / s ** 2, A * gg * Z / s ** 2, gg, A * gg * 2 * q / s, -A * gg * a * Z / s ** 2]
        J = np.stack([c.ravel() for c in cols], 1) / model.background_std
        cov = np.linalg.inv(J.T @ J + np.diag(prior))[:2, :2]
        e = rng.multivariate_normal([0, 0], cov, size=draws)
        out[i] = np.mean(np.hypot(e[:, 0], e[:, 1]) <= tol)
    return out


def recall_ceiling(true_by_frame, model: FrameModel, tol: float) -> tuple[float, list[float]]:
    """Mean over true electrons of :func:`pair_match_probability` at their nearest-neighbour
    distance: an optimistic ceiling (clusters of three or more and saturation are ignored).
    Returns the ceiling and its value per ``NN_BINS_PX`` bin."""
    nn = np.concatenate([_nearest_neighbour(t) for t in true_by_frame] or [np.zeros(0)])
    table_d = np.arange(0.0, 40.5, 0.5)
    table_p = pair_match_probability(table_d, model, tol)
    p = np.interp(np.minimum(nn, 1e9), table_d, table_p, right=1.0)
    b = np.clip(np.digitize(nn, NN_BINS_PX) - 1, 0, len(NN_BINS_PX) - 2)
    per_bin = [float(p[b == k].mean()) if np.any(b == k) else float("nan") for k in range(len(NN_BINS_PX) - 1)]
    return (float(p.mean()) if len(p) else 1.0), per_bin


def pair_hits(n_frames: int, separation_px: float, grid: int, seed: int):
    """Isolated pairs: on each frame a lattice of pair centres 110 px apart (jittered +-5 px), each
    pair two hits ``separation_px`` apart at a random angle; no third spot within ~90 px.
    Returns ``(x, z, frame)`` tensors in detector units, as the ``draw_*_hits`` functions."""
    rng = np.random.default_rng(seed)
    xs, zs, fs = [], [], []
    c = np.arange(80, grid - 80, 110)
    for f in range(n_frames):
        cx, cz = (v.ravel() + rng.uniform(-5, 5, v.size) for v in np.meshgrid(c, c, indexing="ij"))
        a = rng.uniform(0, np.pi, cx.size)
        for s in (-0.5, 0.5):
            xs.append((cx + s * separation_px * np.cos(a) + 0.5) * 2 / grid - 1)
            zs.append((cz + s * separation_px * np.sin(a) + 0.5) * 2 / grid - 1)
            fs.append(np.full(cx.size, f))
    return (torch.tensor(np.concatenate(xs)), torch.tensor(np.concatenate(zs)),
            torch.tensor(np.concatenate(fs)))


def simulate(n_frames: int, per_frame: float, hits: str, seed: int, device, model: FrameModel,
             batch: int = 16):
    """Frames (uint8, on CPU) and per-frame true detected positions in px."""
    gen = torch.Generator(device=device)
    gen.manual_seed(seed)
    # per_frame / detect_prob hits so that ~per_frame are detected.
    if hits.startswith("pairs"):
        x, z, fr = pair_hits(n_frames, float(hits.split(":")[1]), model.grid, seed)
        order = torch.argsort(fr, stable=True)
        x, z, fr = x[order].to(device), z[order].to(device), fr[order].to(device)
    elif hits == "prior":
        x, z, fr = draw_prior_hits(n_frames, per_frame / model.detect_prob, generator=gen, seed=seed)
    else:
        draw = draw_shell_hits if hits == "shells" else draw_disc_hits
        x, z, fr = draw(n_frames, per_frame / model.detect_prob, generator=gen)
    frames = torch.empty((n_frames, model.grid, model.grid), dtype=torch.uint8)
    truth = []
    for s in range(0, n_frames, batch):
        e = min(n_frames, s + batch)
        sel = (fr >= s) & (fr < e)
        f, det = render_frames(x[sel], z[sel], fr[sel] - s, e - s, model, generator=gen)
        frames[s:e] = f.cpu()
        xs, zs, fs = x[sel][det].cpu().numpy(), z[sel][det].cpu().numpy(), (fr[sel][det] - s).cpu().numpy()
        for i in range(e - s):
            m = fs == i
            truth.append(np.stack([(xs[m] + 1) * model.grid / 2 - 0.5, (zs[m] + 1) * model.grid / 2 - 0.5], 1))
    return frames, truth


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--frames", type=int, default=200)
    ap.add_argument("--per-frame", type=float, default=100.0, help="mean detected electrons per frame")
    ap.add_argument("--hits", default="prior",
                    help="prior: a measurement from the notes' prior every 10 frames (the course's load); "
                         "shells: two fixed crowded shells; disc: uniform; pairs:D: isolated pairs D px apart "
                         "(--per-frame is ignored)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--tol-px", type=float, default=1.5)
    ap.add_argument("--overlap-px", type=float, default=23.0)
    ap.add_argument("--scipy-frames", type=int, default=None, help="frames for the scipy method (default all)")
    ap.add_argument("--device", default=None, help="default: cuda if available else cpu")
    ap.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    ap.add_argument("--centroid", nargs="*", default=[], metavar="FIELD=VALUE",
                    help="CentroidConfig overrides, e.g. cluster_max=0 (= sevi frames --fast) or rounds=8")
    args = ap.parse_args(argv)
    if args.hits not in ("prior", "shells", "disc") and not args.hits.startswith("pairs:"):
        ap.error(f"--hits {args.hits!r}: expected prior, shells, disc or pairs:D (D in px)")
    device = torch.device(args.device) if args.device else default_device()
    if args.threads:
        torch.set_num_threads(args.threads)
    model = FrameModel()
    over = {}
    for item in args.centroid:
        k, _, v = item.partition("=")
        if k not in CentroidConfig.__dataclass_fields__:
            ap.error(f"--centroid {item}: unknown CentroidConfig field {k!r}")
        over[k] = type(getattr(CentroidConfig(), k))(v)
    cfg = CentroidConfig.from_frame_model(model, **over)

    t0 = time.perf_counter()
    frames, truth = simulate(args.frames, args.per_frame, args.hits, args.seed, device, model)
    t_sim = time.perf_counter() - t0
    G = model.grid

    # Ours: frames start on the host as they would come from a file; the copy is timed.
    centroid_frames(frames[:cfg.frame_batch].to(device), cfg)                # warm-up
    if device.type == "cuda":
        torch.cuda.synchronize()
    t0, c0 = time.perf_counter(), time.process_time()
    res = centroid_frames(frames.to(device), cfg)
    if device.type == "cuda":
        torch.cuda.synchronize()
    t_ours, c_ours = time.perf_counter() - t0, time.process_time() - c0
    fr = res.frame.cpu().numpy()
    px = ((res.x.cpu().numpy() + 1) * G / 2 - 0.5, (res.z.cpu().numpy() + 1) * G / 2 - 0.5)
    found = [np.stack([px[0][fr == i], px[1][fr == i]], 1) for i in range(args.frames)]

    n_sp = args.scipy_frames or args.frames
    np_frames = frames[:n_sp].numpy()
    t0, c0 = time.perf_counter(), time.process_time()
    found_sp = [np.stack(scipy_centroid(f), 1).reshape(-1, 2) for f in np_frames]
    t_sp, c_sp = time.perf_counter() - t0, time.process_time() - c0

    ours = evaluate(truth, found, tol=args.tol_px, overlap_px=args.overlap_px)
    base = evaluate(truth[:n_sp], found_sp, tol=args.tol_px, overlap_px=args.overlap_px)
    fps_ours, fps_sp = args.frames / t_ours, n_sp / t_sp
    print(f"machine: {platform.machine()} {platform.processor() or ''} torch threads "
          f"{torch.get_num_threads()}, device {device}; simulation {t_sim:.1f} s")
    print(f"frames {args.frames}, hits {args.hits}, true detected electrons {ours['n_true']} "
          f"({ours['n_true'] / args.frames:.1f}/frame), match within {args.tol_px} px, "
          f"overlapping = neighbour within {args.overlap_px} px")
    hdr = f"{'method':<10}{'recall':>8}{'prec.':>8}{'rec.iso':>9}{'rec.ovl':>9}" \
          f"{'rms.iso':>9}{'rms.iso/ax':>11}{'rms.ovl':>9}{'frames/s':>10}{'frames/cpu-s':>14}"
    print(hdr)
    # frames per CPU-second (process time, all threads): the figure that survives a shared box.
    cps_ours, cps_sp = args.frames / c_ours, n_sp / c_sp
    for name, r, fps, cps in (("ours", ours, fps_ours, cps_ours), ("scipy", base, fps_sp, cps_sp)):
        print(f"{name:<10}{r['recall']:>8.3f}{r['precision']:>8.3f}{r['isolated_recall']:>9.3f}"
              f"{r['overlapping_recall']:>9.3f}{r['isolated_rms_px']:>9.3f}{r['isolated_rms_axis_px']:>11.3f}"
              f"{r['overlapping_rms_px']:>9.3f}{fps:>10.1f}{cps:>14.1f}")
    print(f"isolated {ours['isolated_n']}, overlapping {ours['overlapping_n']} true electrons; "
          f"speed ratio ours/scipy = {fps_ours / fps_sp:.1f}x wall, {cps_ours / cps_sp:.1f}x CPU time")
    print(f"load average during the run: {os.getloadavg()}")
    ceiling, ceiling_bins = recall_ceiling(truth, model, args.tol_px)
    print(f"recall ceiling of a Cramer-Rao-bound estimator, nearest-neighbour pairs only (optimistic): "
          f"{ceiling:.3f}")
    print("recall by nearest-neighbour distance (px):")
    print(f"{'nn, px':<10}{'share':>7}{'ours':>7}{'scipy':>7}{'ceiling':>9}")
    for k in range(len(NN_BINS_PX) - 1):
        lab = f"{NN_BINS_PX[k]:g}-{NN_BINS_PX[k + 1]:g}"
        print(f"{lab:<10}{ours['nn_fraction'][k]:>7.3f}{ours['nn_recall'][k]:>7.3f}{base['nn_recall'][k]:>7.3f}"
              f"{ceiling_bins[k]:>9.3f}")
    # Cramer-Rao bound for a mean spot (A = 100, sigma = 7.68 px, noise 20/px), per axis.
    s = model.sigma_mean * G / 2
    crb = math.sqrt(2 * model.background_std ** 2 / (math.pi * model.amp_mean ** 2))
    print(f"Cramer-Rao bound, isolated mean spot (sigma {s:.2f} px): {crb:.3f} px per axis, "
          f"{crb * math.sqrt(2):.3f} px 2D")


if __name__ == "__main__":
    main()
