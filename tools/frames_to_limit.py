"""From camera frames to the information limit, measured: the default path of `sevi analyze` against
perfect centroiding and the floor, on measurements rendered and summed on the fly.

    python tools/frames_to_limit.py --model runs/sevi-cpu-frames/final --frames 50000 --measurements 8 --no-truth-start --out runs/limit_course_batches
    python tools/frames_to_limit.py --model runs/sevi-cpu-frames/final --frames 2000:5000 --measurements 40 --no-truth-start --out runs/limit_calib_batches
    python tools/frames_to_limit.py --model runs/sevi-cpu-frames/final --frames 2000:5000 --measurements 40 --estimator wls --batches 0 --cache runs/limit_calib_batches/cache --out runs/limit_calib_wls

Measurements (``sevi.evaluation.frames_benchmark``): drawn from the prior, in turn as drawn, with
both shells on small radii (crowded rings that saturate the camera), and overlapping; electrons per
shell in the course's proportion (1.8-2.5e6 per 50,000 frames). Each is rendered with the course's
camera (``sevi.camera.frame_renderer``, the frames summed, never kept; cached in ``OUT/cache``, or
``--cache``, so a re-run, or a run of the other ``--estimator``, reuses them; with ``--batches K``,
the default 100, also the sums of K contiguous batches of the frames, from which the error bars
come as `sevi analyze` makes them: ``sevi.fit.batch_spread``; a cached measurement without them is
rendered again, to the same frames), answered by the direct path as `sevi analyze` runs it, and compared with
perfect centroiding (the detected hits' count image, fitted from the truth) and the count image's
Bayesian floor, and with the frame-sum fit's own floor (the Bayesian floor of its Godambe information
at the truth, ``sevi.fit.frame_sum_information``: what this estimator reaches on average; added to the
rows of an earlier run on resume, from the parameters alone). Printed: per kind and in all, the median Distances, the ratio of the direct path's
median to perfect centroiding's, the worst measurement's ratio, the share of fits the regressor
started in the truth's optimum; the calibration of the error bars (z-score std, 68 % / 95 %
coverage). Written: OUT/frames_to_limit.json (after every measurement: an interrupted run resumes)
and OUT/frames_to_limit.png.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from sevi.fit.estimators import DEFAULT_BATCHES, DEFAULT_ESTIMATOR, ESTIMATORS


def parse_frames(text: str) -> tuple[int, int]:
    lo, _, hi = text.partition(":")
    lo, hi = int(lo), int(hi or lo)
    if not 1 <= lo <= hi:
        raise ValueError(f"--frames: got {text!r}; expected N or LOW:HIGH frames, 1 <= LOW <= HIGH")
    return lo, hi


def plot(rows: list[dict], path: Path) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from sevi.io.atomic import save_png

    fig, ax = plt.subplots(figsize=(5.5, 4.5))
    for kind, c in (("prior", "C0"), ("crowded", "C3"), ("overlapping", "C2")):
        rs = [r for r in rows if r["kind"] == kind and "oracle" in r]
        if rs:
            ax.scatter([r["oracle"] for r in rs], [r["direct"] for r in rs], c=c, s=18, label=kind)
    lim = [min(min(r["oracle"], r["direct"]) for r in rows), max(max(r["oracle"], r["direct"]) for r in rows)]
    for k, ls in ((1.0, "k-"), (1.2, "k--"), (2.0, "k:")):
        ax.plot(lim, [k * v for v in lim], ls, lw=0.8, label=f"{k} x perfect centroiding")
    ax.set_xscale("log"), ax.set_yscale("log")
    ax.set_xlabel("perfect centroiding (Distance)"), ax.set_ylabel("sevi analyze, direct path (Distance)")
    ax.set_title(f"{len(rows)} measurements of {rows[0]['frames']:,}+ frames")
    ax.legend(fontsize=7)
    fig.tight_layout()
    save_png(fig, path)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", required=True, help="a frames model (spot_blur > 0), e.g. runs/sevi-cpu-frames/final")
    ap.add_argument("--frames", default="50000", help="frames per measurement: N or LOW:HIGH (default 50000)")
    ap.add_argument("--measurements", type=int, default=8)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", required=True)
    ap.add_argument("--device", default="auto")
    ap.add_argument("--threads", type=int, default=None, help="torch threads (default: the thread policy's)")
    ap.add_argument("--no-truth-start", action="store_true", help="skip the fit from the truth (the landing check)")
    ap.add_argument("--no-oracle", action="store_true")
    ap.add_argument("--no-floor", action="store_true")
    ap.add_argument("--estimator", choices=ESTIMATORS, default=DEFAULT_ESTIMATOR,
                    help=f"the frame-sum fit's answer (default {DEFAULT_ESTIMATOR}, sevi analyze's): gls (one "
                         "generalised-least-squares step from the weighted fit) or wls (the weighted fit alone)")
    ap.add_argument("--batches", type=int, default=DEFAULT_BATCHES,
                    help=f"the error bars from the spread of this many batches of each measurement's frames (default "
                         f"{DEFAULT_BATCHES}, sevi analyze's; rendered with the frames and cached); 0: the model's")
    ap.add_argument("--cache", default=None, help="the rendered measurements' folder (default OUT/cache)")
    a = ap.parse_args(argv)

    from tqdm import tqdm

    from sevi.evaluation.frames_benchmark import (
        draw_measurements,
        evaluate_measurement,
        frame_sum_floors,
        render_measurement,
        summarise,
    )
    from sevi.io.atomic import write_json
    from sevi.regressor.batches import prior_config
    from sevi.regressor.inference import load_model_file
    from sevi.runtime.device import pick_device
    from sevi.runtime.threads import apply_thread_policy

    apply_thread_policy(a.threads, work="large")
    frames = parse_frames(a.frames)
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    device = pick_device(a.device)
    model, cfg = load_model_file(a.model, device)
    if cfg.data.spot_blur <= 0:
        raise ValueError(f"{a.model}: a model trained on count images; expected a frames model (spot_blur > 0)")
    doc_path = out / "frames_to_limit.json"
    done = {}
    if doc_path.exists():  # resume: the measurements already evaluated with this model
        doc = json.loads(doc_path.read_text())
        if (doc.get("model") == str(a.model) and doc.get("estimator", "wls") == a.estimator
                and doc.get("batches", 0) == a.batches):
            done = {(r["seed"], r["frames"]): r for r in doc["rows"]}
    rows = []
    for m in tqdm(draw_measurements(a.measurements, frames, a.seed), desc="measurements", unit="measurement"):
        if (m.seed, m.n_frames) in done:
            row = done[(m.seed, m.n_frames)]
            if "fit_floor" not in row and not a.no_floor:  # a row of an earlier version: add the fit's floor
                row.update(frame_sum_floors(m, row["detected"], prior_config(cfg), device))
            rows.append(row)
            continue
        rendered = render_measurement(m, device, cache=Path(a.cache) if a.cache else out / "cache", progress=True,
                                      batches=a.batches)
        rows.append(evaluate_measurement(m, rendered, model, cfg, device, truth_start=not a.no_truth_start,
                                         oracle=not a.no_oracle, floor=not a.no_floor, estimator=a.estimator,
                                         batches=a.batches > 0))
        write_json(doc_path, {"model": str(a.model), "estimator": a.estimator, "batches": a.batches, "frames": list(frames), "seed": a.seed,
                              "device": str(device), "rows": rows,
                              "summary": summarise(rows) if not a.no_oracle else None})
    summary = summarise(rows) if not a.no_oracle else None
    write_json(doc_path, {"model": str(a.model), "estimator": a.estimator, "batches": a.batches, "frames": list(frames), "seed": a.seed,
                          "device": str(device), "rows": rows, "summary": summary})
    print(f"\n{len(rows)} measurements of {frames[0]:,}-{frames[1]:,} frames, model {a.model}, estimator {a.estimator}, "
          f"error bars from {f'{a.batches} batches of frames' if a.batches else 'the model'}")
    print(f"{'kind':12s} {'n':>3s} {'direct':>8s} {'oracle':>8s} {'floor':>8s} {'d/o med':>8s} {'worst':>7s} "
          f"{'landed':>7s} {'flagged':>7s}")
    for k, s in (summary or {}).items():
        if k.startswith("calibration") or not s:
            continue
        print(f"{k:12s} {s['n']:3d} {s['direct_median']:8.4f} {s['oracle_median']:8.4f} {s['floor_median']:8.4f} "
              f"{s['ratio_of_medians']:8.3f} {s['worst_ratio']:7.2f} {s.get('landed', float('nan')):7.2f} "
              f"{s['flagged']:7d}")
    if rows and all("fit_floor" in r and "oracle" in r for r in rows):
        print("\nper measurement: Distance of the direct path, perfect centroiding, the hits' floor and the frame-sum "
              "fit's own floor (its information at the truth)")
        print(f"{'kind':12s} {'sep':>6s} {'direct':>8s} {'oracle':>8s} {'floor':>8s} {'fit fl':>8s} "
              f"{'d/o':>6s} {'d/fitfl':>7s} {'fitfl/fl':>8s}")
        for r in rows:
            print(f"{r['kind']:12s} {r['separation']:6.3f} {r['direct']:8.4f} {r['oracle']:8.4f} {r['floor_bayes']:8.4f} "
                  f"{r['fit_floor']:8.4f} {r['direct'] / r['oracle']:6.2f} {r['direct'] / r['fit_floor']:7.2f} "
                  f"{r['fit_floor'] / r['floor_bayes']:8.2f}")
    for which in ("calibration", "calibration_unflagged", "calibration_unflagged_resolved"):
        for g, c in ((summary or {}).get(which) or {}).items():
            print(f"{which} {g:10s} z std {c['z_std']:.2f}  within 68%: {c['within_68']:.3f}  within 95%: "
                  f"{c['within_95']:.3f}  (n={c['n']})")
    if summary:
        plot(rows, out / "frames_to_limit.png")
    print(f"wrote {doc_path}")
    return 0


if __name__ == "__main__":
    from sevi.cli.policy import run_command

    sys.exit(run_command("frames_to_limit", None, main))
