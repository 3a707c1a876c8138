"""Direct path against events path: which gives the more accurate anisotropy parameters?

    python tools/compare_paths.py --events-model runs/sevi-cpu-smoke/final --direct-model runs/sevi-direct/final \\
        --measurements 12 --frames 900 [--per-frame 100] [--seed 4242] [--chunk 30] [--out runs/compare_paths]
        [--no-refine] [--render-only]

For each of M measurements (parameters drawn from the default prior with a fixed seed range no
training stream uses): the generator samples the electrons of both shells (``sample_electrons``;
``frames * per_frame / detect_prob / 2`` per shell, which must lie inside both models' training
range), each electron is put in one of F frames uniformly at random (so ~``per_frame`` detected per
frame, Poisson), and the frames are rendered with the course's camera (``render_frames``, the
default ``FrameModel``), ``chunk`` frames at a time, never all in memory. From the same frames:

* events:  ``centroid_frames`` -> histogram at 1024 (``sevi frames``' AccumulatedImage) -> events model;
* direct:  sum of the frames -> ``direct_image`` at the direct model's grid -> direct model
           (``sevi analyze --path direct``);
* oracle:  histogram of the true detected hits -> events model (perfect centroiding);
* direct oracle: the true detected hits, histogrammed, blurred by the direct model's spot_blur
           -> direct model (the direct model on noise-free camera physics).

Each path's image is read by its regressor and then, unless ``--no-refine``, refined by the likelihood
fit with that image's own forward model (``sevi.fit``: count images, fitted at 512^2;
``sevi.fit.direct_fit``: the frame sum read at 256^2, blurred correlated noise; the direct oracle's
image is the hits at 256^2 blurred by the direct model's spot_blur, fitted with that spot and
pure Poisson hits). ``--render-only`` renders and centroids the measurements into the cache (no
models needed), so the slow part can run before the models exist.

Prints mean and median Distance (sevi.physics.metric) per path and each one's ratio to the oracle's (the
refined ones to the refined oracle), and the refined answers' calibration (z-scores of the betas and
R against their error bars), over all fits and over those whose chi^2/dof sevi predict accepts
without a warning (<= 1.5); writes
``OUT/compare_paths.json`` (rewritten after every measurement, so an interrupted run keeps what it
measured) and ``OUT/compare_paths.png``, both atomically. One torch thread by default.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import torch

from sevi.evaluation.calibration import path_calibration

PATHS = ("events", "direct", "oracle", "direct_oracle")


def summarise(per: dict[str, list[float]]) -> dict[str, dict[str, float]]:
    """Mean / median Distance per path (and per refined path, ``PATH+refined``) and their ratios to the
    oracle's of the same kind; the paired direct - events differences."""
    out = {}
    for k, v in per.items():
        d = np.asarray(v, dtype=np.float64)
        if len(d) == 0:
            continue
        o = np.asarray(per["oracle+refined" if k.endswith("+refined") else "oracle"], dtype=np.float64)
        out[k] = {"mean": float(d.mean()), "median": float(np.median(d)), "n": int(len(d)),
                  "ratio_mean_to_oracle": float(d.mean() / o.mean()), "ratio_median_to_oracle": float(np.median(d) / np.median(o)),
                  "sem": float(d.std(ddof=1) / np.sqrt(len(d))) if len(d) > 1 else float("nan")}
    # the same measurements on both paths: the paired difference is the figure that decides
    for suffix in ("", "+refined"):
        if not per.get("direct" + suffix):
            continue
        diff = np.asarray(per["direct" + suffix]) - np.asarray(per["events" + suffix])
        out["direct_minus_events" + suffix] = {
            "mean": float(diff.mean()), "sem": float(diff.std(ddof=1) / np.sqrt(len(diff))) if len(diff) > 1 else float("nan"),
            "direct_better_in": int((diff < 0).sum()), "n": int(len(diff))}
    return out


def table(summary: dict) -> str:
    lines = ["| path | mean Distance (+- s.e.) | median Distance | mean / oracle | median / oracle |",
             "|---|---|---|---|---|"]
    for k, s in summary.items():
        if k.replace("+refined", "") not in PATHS:
            continue
        lines.append(f"| {k} | {s['mean']:.4f} (+- {s['sem']:.4f}) | {s['median']:.4f} | "
                     f"{s['ratio_mean_to_oracle']:.3f} | {s['ratio_median_to_oracle']:.3f} |")
    for suffix in ("", "+refined"):
        d = summary.get("direct_minus_events" + suffix)
        if d:
            lines.append(f"\npaired, direct{suffix} - events{suffix}: {d['mean']:+.4f} +- {d['sem']:.4f} (s.e.); "
                         f"direct better in {d['direct_better_in']} of {d['n']} measurements")
    for key, what in (("calibration", "all fits"), ("calibration_chi2_ok", "fits with chi^2/dof <= 1.5")):
        for k, groups in summary.get(key, {}).items():
            lines.append(f"calibration {k}+refined ({what}): " + "; ".join(
                f"{g} z std {c['z_std']:.2f}, 68% {100 * c['within_68']:.0f}%, 95% {100 * c['within_95']:.0f}% (n={c['n']})"
                for g, c in groups.items()))
    return "\n".join(lines)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--events-model", default=None)
    ap.add_argument("--direct-model", default=None)
    ap.add_argument("--measurements", type=int, default=12)
    ap.add_argument("--frames", type=int, default=900)
    ap.add_argument("--per-frame", type=float, default=100.0, help="mean detected electrons per frame")
    ap.add_argument("--seed", type=int, default=4242)
    ap.add_argument("--chunk", type=int, default=30, help="frames rendered and centroided at a time")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--out", default="runs/compare_paths")
    ap.add_argument("--no-refine", action="store_true", help="the regressors' answers alone")
    ap.add_argument("--render-only", action="store_true", help="render and centroid into the cache, then stop")
    ap.add_argument("--cached-only", action="store_true", help="score only the measurements already in the cache "
                                                               "(rendered by --render-only runs), skip the others")
    ap.add_argument("--first", type=int, default=0, help="with --render-only: start at this measurement (so "
                                                         "two processes can share the work)")
    args = ap.parse_args(argv)
    if not args.render_only and not (args.events_model and args.direct_model):
        raise SystemExit("compare_paths: --events-model and --direct-model are needed (or --render-only)")
    if args.threads:
        torch.set_num_threads(args.threads)
    if min(args.measurements, args.frames, args.chunk) < 1 or args.per_frame <= 0:
        raise SystemExit("compare_paths: --measurements, --frames, --chunk and --per-frame must be positive")

    from sevi.camera.centroid import centroid_frames
    from sevi.camera.direct_image import blur_images, direct_image
    from sevi.camera.frames import FrameModel, render_frames
    from sevi.io.atomic import save_png, write_json
    from sevi.io.frame_files import accumulate
    from sevi.physics.generator import GeneratorConfig, SeviGenerator
    from sevi.physics.metric import distance
    from sevi.physics.prior import Prior, PriorConfig

    device = torch.device("cpu")
    cam = FrameModel()
    per_shell = int(round(args.frames * args.per_frame / cam.detect_prob / 2))
    if not args.render_only:
        from sevi.regressor.checkpoints import load_model
        ev_model, ev_cfg = load_model(args.events_model, device)
        di_model, di_cfg = load_model(args.direct_model, device)
        if di_cfg.data.spot_blur <= 0:
            raise SystemExit(f"compare_paths: {args.direct_model} has spot_blur = 0: not a direct-path model")
        if ev_cfg.data.spot_blur > 0:
            raise SystemExit(f"compare_paths: {args.events_model} has spot_blur = {ev_cfg.data.spot_blur}: not an events model")
        for name, cfg in (("events", ev_cfg), ("direct", di_cfg)):
            if not cfg.data.electrons[0] <= per_shell <= cfg.data.electrons[1]:
                raise SystemExit(f"compare_paths: {per_shell} electrons per shell ({args.frames} frames x {args.per_frame} "
                                 f"/ {cam.detect_prob} / 2) is outside the {name} model's training range {cfg.data.electrons}")
    pc = PriorConfig().with_electrons(per_shell)
    base = 10**9 + 7 * 10**7 + args.seed * 1000  # a seed range no training stream or eval_sevi uses
    params = Prior(pc)(args.measurements, base).params
    gen = SeviGenerator(GeneratorConfig(grid=1024), device, pc)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)

    def render_and_centroid(p, m):
        """Render measurement m's frames chunk by chunk; returns the frame sum (1024, 1024) int64, the
        centroided and the true detected positions, and the seconds spent rendering / centroiding."""
        x, z, _, _ = gen.sample_electrons(p, base + 1 + m)
        g = torch.Generator(device=device).manual_seed(base + 10**5 + m)
        frame = torch.randint(0, args.frames, (len(x),), generator=g)
        order = torch.argsort(frame, stable=True)
        x, z, frame = x[order], z[order], frame[order]
        bounds = torch.searchsorted(frame, torch.arange(0, args.frames + args.chunk, args.chunk).clamp_max(args.frames))
        fsum = np.zeros((1024, 1024), dtype=np.int64)
        ev_x, ev_z, tr_x, tr_z = [], [], [], []
        t_render = t_cent = 0.0
        for c in range(len(bounds) - 1):
            a, b = int(bounds[c]), int(bounds[c + 1])
            f0 = c * args.chunk
            nf = min(args.chunk, args.frames - f0)
            if nf <= 0:
                break
            t1 = time.perf_counter()
            fr, det = render_frames(x[a:b], z[a:b], frame[a:b] - f0, nf, cam, generator=g)
            t2 = time.perf_counter()
            fsum += fr.sum(0, dtype=torch.int64).numpy()
            cen = centroid_frames(fr)
            t3 = time.perf_counter()
            t_render, t_cent = t_render + t2 - t1, t_cent + t3 - t2
            ev_x.append(cen.x.numpy()), ev_z.append(cen.z.numpy())
            tr_x.append(x[a:b][det].double().numpy()), tr_z.append(z[a:b][det].double().numpy())
        return (fsum, *(np.concatenate(v) for v in (ev_x, ev_z, tr_x, tr_z)), t_render, t_cent)

    def cache_file(m):
        return out / "cache" / f"m{m:03d}_seed{args.seed}_f{args.frames}_pf{args.per_frame:g}.npz"

    def measurement(m):
        """Measurement m's frame sum, centroided and true hits, timings: from the cache, or rendered."""
        cache = cache_file(m)
        if cache.exists():  # frames already rendered and centroided by an earlier (interrupted) run
            c = np.load(cache)
            return (*(c[k] for k in ("fsum", "ev_x", "ev_z", "tr_x", "tr_z")), float(c["t_render"]), float(c["t_cent"]))
        r = render_and_centroid(params[m], m)
        from sevi.io.atomic import atomic_path
        with atomic_path(cache) as tmp, open(tmp, "wb") as f:   # a file object: no ".npz" appended
            np.savez_compressed(f, **dict(zip(("fsum", "ev_x", "ev_z", "tr_x", "tr_z", "t_render", "t_cent"), r)))
        return r

    if args.render_only:
        for m in range(args.first, args.measurements):
            t0 = time.perf_counter()
            r = measurement(m)
            print(f"[{m + 1}/{args.measurements}] cached: {len(r[3])} detected, {len(r[1])} centroided "
                  f"({time.perf_counter() - t0:.0f} s)", flush=True)
        return 0

    from sevi.fit.direct_fit import REFINE_GRID, DirectNoise, direct_noise
    from sevi.fit.fit_images import refine_answers
    from sevi.pipeline.image_answer import MISFIT_CHI2
    from sevi.regressor.batches import prior_config
    from sevi.regressor.inference import predict_images

    variants = [k for k in PATHS] + ([] if args.no_refine else [f"{k}+refined" for k in PATHS])
    per = {k: [] for k in variants}
    zs = {k: [] for k in PATHS}  # refined: (beta z-scores (2 L,), R z-scores (2,)) per measurement
    zs_kept = {k: [] for k in PATHS}  # the same, for the fits with chi^2/dof <= MISFIT_CHI2
    rows = []
    t_all = time.perf_counter()
    todo = [m for m in range(args.measurements) if not args.cached_only or cache_file(m).exists()]
    if not todo:
        raise SystemExit(f"compare_paths: no cached measurement in {out / 'cache'}")
    for m in todo:
        t0 = time.perf_counter()
        p = params[m]
        fsum, ev_x, ev_z, tr_x, tr_z, t_render, t_cent = measurement(m)
        images = {
            "events": accumulate(ev_x, ev_z, 1024),
            "oracle": accumulate(tr_x, tr_z, 1024),
            "direct": direct_image(fsum.astype(np.float64), args.frames, di_cfg.data.grid, cam),
        }
        hb = torch.as_tensor(accumulate(tr_x, tr_z, REFINE_GRID)).double()
        oracle_blurred = blur_images(hb, di_cfg.data.spot_blur).double().numpy()  # REFINE_GRID: spot >= 1.5 px
        images["direct_oracle"] = oracle_blurred
        fit_images = {"events": (images["events"], None), "oracle": (images["oracle"], None),
                      "direct": (direct_image(fsum.astype(np.float64), args.frames, REFINE_GRID, cam),
                                 direct_noise(args.frames, REFINE_GRID, cam)),
                      "direct_oracle": (oracle_blurred, DirectNoise(spot_sigma=di_cfg.data.spot_blur, flux_scale=1.0,
                                                                    flux_rel_var=0.0, background_var=0.0))}
        row = {"measurement": m, "R": p.R[0].tolist(), "sigma_R": p.sigma_R[0].tolist(),
               "n_emitted_per_shell": per_shell, "n_detected": int(len(tr_x)), "n_centroided": int(len(ev_x)),
               "direct_electrons_estimate": float(images["direct"].sum()),
               "seconds_render": t_render, "seconds_centroid": t_cent}
        truth_b = p.beta[0].numpy().ravel()
        for k in PATHS:
            model, cfg = (di_model, di_cfg) if k.startswith("direct") else (ev_model, ev_cfg)
            with torch.inference_mode():
                pred = predict_images(model, cfg, [(0, images[k][None])], device)
            d = float(distance(torch.as_tensor(pred["beta"]), p.beta)[0])
            per[k].append(d)
            row[f"distance_{k}"] = d
            if args.no_refine:
                continue
            img, noise = fit_images[k]
            t1 = time.perf_counter()
            ref, diag = refine_answers([img], pred, prior_config(cfg), device, progress=False, noise=noise)
            d = float(distance(torch.as_tensor(ref["beta"]), p.beta)[0])
            per[f"{k}+refined"].append(d)
            row[f"distance_{k}+refined"] = d
            row[f"refine_{k}"] = {"converged": bool(diag["converged"][0]), "chi2_dof": float(diag["chi2_dof"][0]),
                                  "iterations": int(diag["iterations"][0]), "start": str(diag["start"][0]),
                                  "seconds": time.perf_counter() - t1}
            zb = (ref["beta"][0].ravel() - truth_b) / ref["beta_sd"][0].ravel()
            zr = (ref["R"][0] - p.R[0].numpy()) / ref["R_sd"][0]
            zs[k].append((zb.tolist(), zr.tolist()))
            row[f"refine_{k}"]["z_beta"], row[f"refine_{k}"]["z_R"] = zb.tolist(), zr.tolist()
            if diag["chi2_dof"][0] <= MISFIT_CHI2:  # the fits sevi predict would not warn about
                zs_kept[k].append((zb.tolist(), zr.tolist()))
        row["seconds"] = time.perf_counter() - t0
        rows.append(row)
        summary = summarise(per)
        if not args.no_refine:
            summary["calibration"] = path_calibration(zs)
            summary["calibration_chi2_ok"] = path_calibration(zs_kept)
        write_json(out / "compare_paths.json", {"command": " ".join(sys.argv), "complete": m == todo[-1],
                      "measurements_done": len(rows), "measurements": [r["measurement"] for r in rows], "frames": args.frames, "per_frame": args.per_frame,
                      "electrons_per_shell": per_shell, "seed": args.seed, "events_model": args.events_model,
                      "direct_model": args.direct_model, "direct_spot_blur": di_cfg.data.spot_blur,
                      "model_grid": [ev_cfg.data.grid, di_cfg.data.grid], "refine_grid": {"events": 512, "direct": REFINE_GRID},
                      "summary": summary, "rows": rows, "seconds_total": time.perf_counter() - t_all}, indent=2)
        print(f"[{len(rows)}/{len(todo)}] m{m} " + " ".join(f"{k}={row[f'distance_{k}']:.4f}" for k in variants)
              + f"  detected {row['n_detected']} centroided {row['n_centroided']} direct~{row['direct_electrons_estimate']:.0f}"
              + f"  ({row['seconds']:.0f} s: render {t_render:.0f}, centroid {t_cent:.0f})", flush=True)

    summary = summarise(per)
    if not args.no_refine:
        summary["calibration"] = path_calibration(zs)
        summary["calibration_chi2_ok"] = path_calibration(zs_kept)
    print(f"\n{len(todo)} measurements x {args.frames} frames (~{args.per_frame:g} detected/frame, "
          f"{per_shell} emitted per shell), seed {args.seed}\n")
    print(table(summary))

    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, ax = plt.subplots(1, 2, figsize=(10, 3.8))
    idx = np.arange(len(todo))
    shown = [f"{k}+refined" for k in PATHS] if not args.no_refine else list(PATHS)
    for j, k in enumerate(shown):
        ax[0].bar(idx + (j - 1.5) * 0.2, per[k], width=0.2, label=k)
    ax[0].set_xlabel("measurement")
    ax[0].set_ylabel("Distance")
    ax[0].legend(fontsize=8)
    ev, di = shown[0], shown[1]
    ax[1].scatter(per[ev], per[di], c="C0")
    lim = max(max(per[ev]), max(per[di])) * 1.05
    ax[1].plot([0, lim], [0, lim], "k:", lw=1)
    ax[1].set_xlabel(f"{ev} Distance")
    ax[1].set_ylabel(f"{di} Distance")
    ax[1].set_title("below the diagonal: direct wins")
    fig.suptitle(f"{len(todo)} x {args.frames} frames, ~{args.per_frame:g} e-/frame")
    fig.tight_layout()
    save_png(fig, out / "compare_paths.png")
    print(f"\nwrote {out / 'compare_paths.json'} and {out / 'compare_paths.png'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
