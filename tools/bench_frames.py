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
import time

import numpy as np
import torch

from sevi.camera.centroid import centroid_frames
from sevi.camera.centroid_config import CentroidConfig
from sevi.camera.frames import (
    FrameModel,
)
from sevi.camera.recall_ceiling import (
    NN_BINS_PX,
    cluster_recall_ceiling,
    recall_ceiling,
)
from sevi.evaluation.centroid_scoring import (
    evaluate,
    found_px,
    oracle_fit,
    scipy_centroid,
    simulate,
)
from sevi.runtime.device import pick_device


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
