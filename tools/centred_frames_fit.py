"""`sevi analyze --centre fit` measured on frame sums shifted by a known number of pixels
(``sevi.evaluation.centred_frames``), reusing the measurements of ``tools/frames_to_limit.py``.

    python tools/frames_to_limit.py --model runs/sevi-cpu-frames/final --frames 50000 --measurements 8 --out runs/limit_course
    python tools/centred_frames_fit.py --model runs/sevi-cpu-frames/final --limit runs/limit_course --max-offset 20 --out runs/centred_frames.json

Printed: per measurement the shift, the centre's error over its error bar, the Distance with the
centre fitted against the known-centre answer of the same frames, the wall time; then the z-scores'
rms (1 for calibrated bars), the ratio of the mean Distances (target <= 1.05). Written: the JSON.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", required=True, help="the frames model frames_to_limit used")
    ap.add_argument("--limit", required=True, help="a tools/frames_to_limit.py OUT folder (its JSON and cache)")
    ap.add_argument("--max-offset", type=int, default=20, help="largest shift per axis, camera pixels (default 20)")
    ap.add_argument("--measurements", type=int, default=None, help="the first N of its measurements (default all)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", required=True, help="output JSON (written atomically)")
    ap.add_argument("--device", default="auto")
    ap.add_argument("--threads", type=int, default=None)
    a = ap.parse_args(argv)
    if not 0 <= a.max_offset <= 40:
        raise ValueError(f"--max-offset: {a.max_offset}; expected 0..40 camera pixels (rings stay 51 px from the edge)")

    from sevi.evaluation.centred_frames import evaluate_centred_frames, summarise_centred_frames
    from sevi.evaluation.frames_benchmark import draw_measurements
    from sevi.io.atomic import write_json
    from sevi.regressor.inference import load_model_file
    from sevi.runtime.device import pick_device
    from sevi.runtime.threads import apply_thread_policy

    apply_thread_policy(a.threads, work="large")
    limit = Path(a.limit)
    doc = json.loads((limit / "frames_to_limit.json").read_text())
    rows = doc["rows"][: a.measurements]
    frames = tuple(doc["frames"])
    ms = {(m.seed, m.n_frames): m for m in draw_measurements(len(doc["rows"]), frames, doc["seed"])}
    measurements = [ms[(r["seed"], r["frames"])] for r in rows]
    device = pick_device(a.device)
    model, cfg = load_model_file(a.model, device)
    out = evaluate_centred_frames(rows, measurements, limit / "cache", model, cfg, device, a.max_offset, a.seed)
    s = summarise_centred_frames(out)
    write_json(a.out, {"model": a.model, "limit": str(limit), "max_offset": a.max_offset, "seed": a.seed,
                       "rows": out, "summary": s})
    print(f"\n{'#':>3s} {'kind':12s} {'shift':>10s} {'z x':>6s} {'z z':>6s} {'sd px':>6s} {'centred':>8s} {'known':>8s} "
          f"{'ratio':>6s} {'chi2':>5s} {'wall s':>7s}")
    for r in out:
        print(f"{r['index']:3d} {r['kind']:12s} {str(tuple(r['shift'])):>10s} {r['centre_z'][0]:6.2f} {r['centre_z'][1]:6.2f} "
              f"{max(r['centre_sd']):6.3f} {r['d_centred']:8.4f} {r['d_known']:8.4f} {r['d_centred'] / r['d_known']:6.3f} "
              f"{r['chi2_dof']:5.2f} {r['wall_s']:7.1f}")
    print(f"centre error / error bar: rms {s['z_rms']:.2f} (x {s['z_rms_x']:.2f}, z {s['z_rms_z']:.2f}; max {s['z_max']:.2f}); "
          f"Distance, centre fitted / known: x{s['distance_ratio_of_means']:.3f} of the means "
          f"({s['distance_ratio_min']:.3f}-{s['distance_ratio_max']:.3f}); median wall {s['wall_s_median']:.0f} s")
    print(f"wrote {a.out}")
    return 0


if __name__ == "__main__":
    from sevi.cli.policy import run_command

    sys.exit(run_command("centred_frames_fit", None, main))
