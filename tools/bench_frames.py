"""Benchmark the centroider: recall, precision, position RMS and frames/s.

Simulates frames with the course's camera (sevi.camera.frames, ~100 detected electrons per frame),
centroids them with sevi.camera.centroid and with a straightforward per-frame scipy method
(maximum_filter local maxima + threshold + centre of mass), and matches found positions to the
true detected ones within 1.5 px (Hungarian assignment per frame).

A true electron is "isolated" when no other detected electron of its frame lies within
``--overlap-px`` (default 23 px = 3 spot sigmas: closer spots share a fit window and, under
~2 sigmas, a single intensity maximum), else "overlapping".

Loads (``--hits``): ``prior`` (default) draws a measurement from the notes' prior every 10
frames, the course's load; ``shells`` two fixed crowded shells; ``disc`` / ``disc:R`` uniform in
a disc of radius 0.95 / R; ``pairs:D`` isolated pairs D px apart. ``disc:0.7`` is the density at
which the straightforward finder lands on "about 0.75 / 0.79", as on the course's frames (BENCHMARKS.md, section 3).

Also printed: recall ceilings from the Cramer-Rao bound (``sevi/camera/recall_ceiling.py``), and with
``--oracle`` the MAP fit started at the true positions, scored by the fit's own objective
against ours frame by frame (can a better search of that objective find more?).

    python tools/bench_frames.py --frames 100 --hits prior --threads 1 [--oracle]
"""
from __future__ import annotations

import argparse
import math
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np
import torch
from scipy import ndimage
from scipy.optimize import linear_sum_assignment

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from sevi.camera.centroid import centroid_frames, map_cost, refine_positions
from sevi.camera.centroid_config import CentroidConfig
from sevi.camera.frames import (
    FrameModel,
    draw_disc_hits,
    draw_prior_hits,
    draw_shell_hits,
    render_frames,
)
from sevi.camera.recall_ceiling import (
    NN_BINS_PX,
    cluster_recall_ceiling,
    nearest_neighbour,
    recall_ceiling,
)
from sevi.runtime.device import pick_device


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


def evaluate(true_by_frame, found_by_frame, *, tol: float, overlap_px: float) -> dict:
    """Recall, precision and RMS, split into isolated / overlapping truth."""
    n_true = {"isolated": 0, "overlapping": 0}
    n_hit = {"isolated": 0, "overlapping": 0}
    sq = {"isolated": [], "overlapping": []}
    n_found = n_match = 0
    nn_tot, nn_hit = np.zeros(len(NN_BINS_PX) - 1), np.zeros(len(NN_BINS_PX) - 1)
    for t, f in zip(true_by_frame, found_by_frame):
        nn = nearest_neighbour(t)
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
    elif hits == "shells":
        x, z, fr = draw_shell_hits(n_frames, per_frame / model.detect_prob, generator=gen)
    else:
        radius = float(hits.split(":")[1]) if ":" in hits else 0.95
        x, z, fr = draw_disc_hits(n_frames, per_frame / model.detect_prob, radius=radius, generator=gen)
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


def found_px(c, n_frames: int, G: int) -> list[np.ndarray]:
    """Centroids -> one (n, 2) array of pixel coordinates (axis 0, axis 1) per frame 0 .. n_frames - 1."""
    fr = c.frame.cpu().numpy()
    px = ((c.x.cpu().numpy() + 1) * G / 2 - 0.5, (c.z.cpu().numpy() + 1) * G / 2 - 0.5)
    return [np.stack([px[0][fr == i], px[1][fr == i]], 1) for i in range(n_frames)]


def oracle_fit(frames, truth, ours, ours_found, ours_eval: dict, cfg: CentroidConfig, device, tol: float,
               overlap_px: float, cols: list) -> None:
    """The MAP fit nearest the truth (``refine_positions`` started at the true positions with the
    true count) against ours: recall, and which explains each frame better under the fit's own
    objective (``map_cost``). Where ours costs no more yet recalls less, the objective cannot
    tell the truth from ours: no better search of it would find more electrons."""
    G = frames.shape[1]
    n = len(truth)
    fr = torch.cat([torch.full((len(t),), i, dtype=torch.long) for i, t in enumerate(truth)])
    t = torch.tensor(np.concatenate(truth), dtype=torch.float64)
    x, z = (t[:, 0] + 0.5) * 2 / G - 1, (t[:, 1] + 0.5) * 2 / G - 1
    wide = CentroidConfig(**{**cfg.__dict__, "cluster_half": max(cfg.cluster_half, 24)})
    fit, unfitted = refine_positions(frames.to(device), fr.to(device), x.to(device), z.to(device), wide)
    fit_found = found_px(fit, n, G)
    r = evaluate(truth, fit_found, tol=tol, overlap_px=overlap_px)
    c_ours = map_cost(frames.to(device), ours, cfg).cpu().numpy()
    c_fit = map_cost(frames.to(device), fit, cfg).cpu().numpy()
    per_frame = [evaluate([a], [b], tol=tol, overlap_px=overlap_px)["recall"] for a, b in zip(truth, ours_found)]
    per_fit = [evaluate([a], [b], tol=tol, overlap_px=overlap_px)["recall"] for a, b in zip(truth, fit_found)]
    fooled = (c_ours <= c_fit) & (np.array(per_frame) < np.array(per_fit))
    print(f"MAP fit started at the truth (true count; {unfitted} spots in clusters wider than the window left "
          f"at the truth): recall {r['recall']:.3f}, precision {r['precision']:.3f} (ours {ours_eval['recall']:.3f} / "
          f"{ours_eval['precision']:.3f})")
    print(f"the fit's objective (map_cost) is lower or equal for ours than for the truth-started fit in "
          f"{int((c_ours <= c_fit).sum())} of {n} frames; in {int(fooled.sum())} of them ours also recalls less: "
          f"there the objective prefers a wrong configuration. Median cost difference ours - truth-started "
          f"{np.median(c_ours - c_fit):+.0f} (one spot costs {cfg.cluster_penalty:g} + its chi^2)")
    cols.append(("from-truth", r["nn_recall"]))


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--frames", type=int, default=200)
    ap.add_argument("--per-frame", type=float, default=100.0, help="mean detected electrons per frame")
    ap.add_argument("--hits", default="prior",
                    help="prior: a measurement from the notes' prior every 10 frames (the course's load); "
                         "shells: two fixed crowded shells; disc: uniform in radius 0.95, disc:R in radius R; pairs:D: isolated pairs D px apart "
                         "(--per-frame is ignored)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--tol-px", type=float, default=1.5)
    ap.add_argument("--overlap-px", type=float, default=23.0)
    ap.add_argument("--scipy-frames", type=int, default=None, help="frames for the scipy method (default all)")
    ap.add_argument("--device", default=None, help="default: cuda if available else cpu")
    ap.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    ap.add_argument("--oracle", action="store_true",
                    help="also fit the spots started at the true positions with the true count (the MAP "
                         "fit nearest the truth) and compare the fit's objective with ours frame by frame")
    ap.add_argument("--centroid", nargs="*", default=[], metavar="FIELD=VALUE",
                    help="CentroidConfig overrides, e.g. cluster_max=0 (= sevi frames --fast) or rounds=8")
    args = ap.parse_args(argv)
    if args.hits not in ("prior", "shells", "disc") and not args.hits.startswith(("pairs:", "disc:")):
        ap.error(f"--hits {args.hits!r}: expected prior, shells, disc, disc:R (R in detector units) or pairs:D (D in px)")
    device = torch.device(args.device) if args.device else pick_device()
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
    found = found_px(res, args.frames, G)

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
    cl_ceiling, cl_bins = cluster_recall_ceiling(truth, model, args.tol_px)
    print(f"recall ceilings of a Cramer-Rao-bound estimator (optimistic, sevi/camera/recall_ceiling.py): "
          f"nearest-neighbour pairs {ceiling:.3f}, whole clusters {cl_ceiling:.3f}")
    cols = [("ours", ours["nn_recall"]), ("scipy", base["nn_recall"])]
    if args.oracle:
        oracle_fit(frames, truth, res, found, ours, cfg, device, args.tol_px, args.overlap_px, cols)
    cols += [("pair-CR", ceiling_bins), ("clust-CR", cl_bins)]
    print("recall by nearest-neighbour distance (px):")
    print(f"{'nn, px':<10}{'share':>7}" + "".join(f"{name:>11}" for name, _ in cols))
    for k in range(len(NN_BINS_PX) - 1):
        lab = f"{NN_BINS_PX[k]:g}-{NN_BINS_PX[k + 1]:g}"
        print(f"{lab:<10}{ours['nn_fraction'][k]:>7.3f}" + "".join(f"{v[k]:>11.3f}" for _, v in cols))
    # Cramer-Rao bound for a mean spot (A = 100, sigma = 7.68 px, noise 20/px), per axis.
    s = model.sigma_mean * G / 2
    crb = math.sqrt(2 * model.background_std ** 2 / (math.pi * model.amp_mean ** 2))
    print(f"Cramer-Rao bound, isolated mean spot (sigma {s:.2f} px): {crb:.3f} px per axis, "
          f"{crb * math.sqrt(2):.3f} px 2D")


if __name__ == "__main__":
    main()
