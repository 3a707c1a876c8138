"""Direct path against events path: which gives the more accurate anisotropy parameters?

    python tools/compare_paths.py --events-model runs/sevi-cpu-smoke/final --direct-model runs/sevi-direct/final \\
        --measurements 12 --frames 900 [--per-frame 100] [--seed 4242] [--chunk 30] [--out runs/compare_paths]

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

Prints mean and median Distance (sevi.metric) per path and each one's ratio to the oracle's; writes
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

PATHS = ("events", "direct", "oracle", "direct_oracle")


def _atomic_png(fig, path: Path) -> None:
    from sevi.atomic import atomic_path
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=110, format="png")


def summarise(per: dict[str, list[float]]) -> dict[str, dict[str, float]]:
    """Mean / median Distance per path and their ratios to the oracle's."""
    out = {}
    o_mean, o_med = float(np.mean(per["oracle"])), float(np.median(per["oracle"]))
    for k in PATHS:
        d = np.asarray(per[k], dtype=np.float64)
        if len(d) == 0:
            continue
        out[k] = {"mean": float(d.mean()), "median": float(np.median(d)), "n": int(len(d)),
                  "ratio_mean_to_oracle": float(d.mean() / o_mean), "ratio_median_to_oracle": float(np.median(d) / o_med),
                  "sem": float(d.std(ddof=1) / np.sqrt(len(d))) if len(d) > 1 else float("nan")}
    # the same measurements on both paths: the paired difference is the figure that decides
    diff = np.asarray(per["direct"]) - np.asarray(per["events"])
    out["direct_minus_events"] = {"mean": float(diff.mean()),
                                  "sem": float(diff.std(ddof=1) / np.sqrt(len(diff))) if len(diff) > 1 else float("nan"),
                                  "direct_better_in": int((diff < 0).sum()), "n": int(len(diff))}
    return out


def table(summary: dict) -> str:
    lines = ["| path | mean Distance (+- s.e.) | median Distance | mean / oracle | median / oracle |",
             "|---|---|---|---|---|"]
    for k, s in summary.items():
        if k not in PATHS:
            continue
        lines.append(f"| {k} | {s['mean']:.4f} (+- {s['sem']:.4f}) | {s['median']:.4f} | "
                     f"{s['ratio_mean_to_oracle']:.3f} | {s['ratio_median_to_oracle']:.3f} |")
    d = summary["direct_minus_events"]
    lines.append(f"\npaired, direct - events: {d['mean']:+.4f} +- {d['sem']:.4f} (s.e.); direct better in "
                 f"{d['direct_better_in']} of {d['n']} measurements")
    return "\n".join(lines)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--events-model", required=True)
    ap.add_argument("--direct-model", required=True)
    ap.add_argument("--measurements", type=int, default=12)
    ap.add_argument("--frames", type=int, default=900)
    ap.add_argument("--per-frame", type=float, default=100.0, help="mean detected electrons per frame")
    ap.add_argument("--seed", type=int, default=4242)
    ap.add_argument("--chunk", type=int, default=30, help="frames rendered and centroided at a time")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--out", default="runs/compare_paths")
    args = ap.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    if min(args.measurements, args.frames, args.chunk) < 1 or args.per_frame <= 0:
        raise SystemExit("compare_paths: --measurements, --frames, --chunk and --per-frame must be positive")

    from sevi.atomic import write_json
    from sevi.centroid import centroid_frames
    from sevi.direct import blur_images, blur_render_grid, direct_image
    from sevi.frames import FrameModel, render_frames
    from sevi.frames_io import accumulate
    from sevi.generator import GeneratorConfig, SeviGenerator
    from sevi.metric import distance
    from sevi.predict import predict_images
    from sevi.prior import Prior, PriorConfig
    from sevi.training import load_model

    device = torch.device("cpu")
    ev_model, ev_cfg = load_model(args.events_model, device)
    di_model, di_cfg = load_model(args.direct_model, device)
    if di_cfg.spot_blur <= 0:
        raise SystemExit(f"compare_paths: {args.direct_model} has spot_blur = 0: not a direct-path model")
    if ev_cfg.spot_blur > 0:
        raise SystemExit(f"compare_paths: {args.events_model} has spot_blur = {ev_cfg.spot_blur}: not an events model")
    cam = FrameModel()
    per_shell = int(round(args.frames * args.per_frame / cam.detect_prob / 2))
    for name, cfg in (("events", ev_cfg), ("direct", di_cfg)):
        if not cfg.electrons[0] <= per_shell <= cfg.electrons[1]:
            raise SystemExit(f"compare_paths: {per_shell} electrons per shell ({args.frames} frames x {args.per_frame} "
                             f"/ {cam.detect_prob} / 2) is outside the {name} model's training range {cfg.electrons}")
    pc = PriorConfig().with_electrons(per_shell)
    base = 10**9 + 7 * 10**7 + args.seed * 1000  # a seed range no training stream or eval_sevi uses
    params = Prior(pc)(args.measurements, base).params
    gen = SeviGenerator(GeneratorConfig(grid=1024), device, pc)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    blur_grid = blur_render_grid(di_cfg.grid, di_cfg.spot_blur)

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

    per = {k: [] for k in PATHS}
    rows = []
    t_all = time.perf_counter()
    for m in range(args.measurements):
        t0 = time.perf_counter()
        p = params[m]
        cache = out / "cache" / f"m{m:03d}_seed{args.seed}_f{args.frames}_pf{args.per_frame:g}.npz"
        if cache.exists():  # frames already rendered and centroided by an earlier (interrupted) run
            c = np.load(cache)
            fsum, ev_x, ev_z, tr_x, tr_z = (c[k] for k in ("fsum", "ev_x", "ev_z", "tr_x", "tr_z"))
            t_render, t_cent = float(c["t_render"]), float(c["t_cent"])
        else:
            fsum, ev_x, ev_z, tr_x, tr_z, t_render, t_cent = render_and_centroid(p, m)
            from sevi.atomic import atomic_path
            with atomic_path(cache) as tmp, open(tmp, "wb") as f:   # a file object: no ".npz" appended
                np.savez_compressed(f, fsum=fsum, ev_x=ev_x, ev_z=ev_z, tr_x=tr_x, tr_z=tr_z, t_render=t_render,
                                    t_cent=t_cent)
        images = {
            "events": accumulate(ev_x, ev_z, 1024),
            "oracle": accumulate(tr_x, tr_z, 1024),
            "direct": direct_image(fsum.astype(np.float64), args.frames, di_cfg.grid, cam),
        }
        hb = torch.as_tensor(accumulate(tr_x, tr_z, blur_grid)).double()
        images["direct_oracle"] = blur_images(hb, di_cfg.spot_blur).double().numpy()
        row = {"measurement": m, "R": p.R[0].tolist(), "sigma_R": p.sigma_R[0].tolist(),
               "n_emitted_per_shell": per_shell, "n_detected": int(len(tr_x)), "n_centroided": int(len(ev_x)),
               "direct_electrons_estimate": float(images["direct"].sum()),
               "seconds_render": t_render, "seconds_centroid": t_cent}
        with torch.inference_mode():
            for k in PATHS:
                model, cfg = (di_model, di_cfg) if k.startswith("direct") else (ev_model, ev_cfg)
                pred = predict_images(model, cfg, [(0, images[k][None])], device)
                d = float(distance(torch.as_tensor(pred["beta"]), p.beta)[0])
                per[k].append(d)
                row[f"distance_{k}"] = d
        row["seconds"] = time.perf_counter() - t0
        rows.append(row)
        summary = summarise(per)
        write_json(out / "compare_paths.json", {"command": " ".join(sys.argv), "complete": m + 1 == args.measurements,
                      "measurements_done": m + 1, "frames": args.frames, "per_frame": args.per_frame,
                      "electrons_per_shell": per_shell, "seed": args.seed, "events_model": args.events_model,
                      "direct_model": args.direct_model, "direct_spot_blur": di_cfg.spot_blur,
                      "model_grid": [ev_cfg.grid, di_cfg.grid], "summary": summary, "rows": rows,
                      "seconds_total": time.perf_counter() - t_all}, indent=2)
        print(f"[{m + 1}/{args.measurements}] " + " ".join(f"{k}={row[f'distance_{k}']:.4f}" for k in PATHS)
              + f"  detected {row['n_detected']} centroided {row['n_centroided']} direct~{row['direct_electrons_estimate']:.0f}"
              + f"  ({row['seconds']:.0f} s: render {t_render:.0f}, centroid {t_cent:.0f})", flush=True)

    summary = summarise(per)
    print(f"\n{args.measurements} measurements x {args.frames} frames (~{args.per_frame:g} detected/frame, "
          f"{per_shell} emitted per shell), seed {args.seed}\n")
    print(table(summary))

    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, ax = plt.subplots(1, 2, figsize=(10, 3.8))
    idx = np.arange(args.measurements)
    for j, k in enumerate(PATHS):
        ax[0].bar(idx + (j - 1.5) * 0.2, per[k], width=0.2, label=k)
    ax[0].set_xlabel("measurement")
    ax[0].set_ylabel("Distance")
    ax[0].legend(fontsize=8)
    ax[1].scatter(per["events"], per["direct"], c="C0")
    lim = max(max(per["events"]), max(per["direct"])) * 1.05
    ax[1].plot([0, lim], [0, lim], "k:", lw=1)
    ax[1].set_xlabel("events path Distance")
    ax[1].set_ylabel("direct path Distance")
    ax[1].set_title("below the diagonal: direct wins")
    fig.suptitle(f"{args.measurements} x {args.frames} frames, ~{args.per_frame:g} e-/frame")
    fig.tight_layout()
    _atomic_png(fig, out / "compare_paths.png")
    print(f"\nwrote {out / 'compare_paths.json'} and {out / 'compare_paths.png'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
