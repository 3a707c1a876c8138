"""Lab images cross-checked: our fit (`sevi fit`), PyAbel's centre finding plus rBasex with a Legendre
projection, and the information limit, on the same rendered images (an offset centre; 1, 2 and 3
shells; sevi.evaluation.lab_images.cross_check_cases). Then the two acceptance figures on repeated
draws of the 2-shell image: the centre fitted against the centre known (the centre's error over its
error bar, and the Distance), and a gain hole plus a dead column masked against the unmasked image.

Printed: per image the Distance and wall time of each, PyAbel's over ours, the floor; then the
acceptance figures. Written: OUT/compare_lab_images.json and OUT/compare_lab_images.png. Needs the
`abel` extra (PyAbel).

    OMP_NUM_THREADS=1 python tools/compare_lab_images.py --out runs/lab_images                # BENCHMARKS.md
    OMP_NUM_THREADS=1 python tools/compare_lab_images.py --seeds 1 --draws 2 --terms 4 --out /tmp/li   # quick
"""

from __future__ import annotations

import argparse
import platform
import time
from pathlib import Path

import numpy as np

from sevi.cli.policy import run_command
from sevi.evaluation.lab_images import (
    acceptance,
    acceptance_mask,
    cross_check,
    cross_check_cases,
    figure,
)
from sevi.io.atomic import atomic_bytes, write_json


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", required=True, help="folder for the JSON and PNG")
    ap.add_argument("--terms", type=int, default=12, help="L: betas beta_2 .. beta_2L (default 12, the course's)")
    ap.add_argument("--seeds", type=int, default=2, help="Poisson draws per cross-check image (default 2)")
    ap.add_argument("--draws", type=int, default=8, help="draws for the acceptance figures (default 8; 0 skips)")
    args = ap.parse_args(argv)
    out = Path(args.out)
    t0 = time.perf_counter()
    cases = cross_check_cases(args.terms)
    rows = []
    print("seconds: wall (CPU); PyAbel's first call computes its basis, 'warm' is the next call's")
    print(f"{'image':14s} {'ours D':>8s} {'PyAbel D':>9s} {'floor':>7s} {'PyAbel/ours':>11s} {'ours s':>12s} "
          f"{'PyAbel s':>12s} {'warm s':>12s} {'centre err ours / PyAbel (px)':>30s}")
    for name, case in cases.items():
        for seed in range(args.seeds):
            r = {"case": name, "seed": seed, **cross_check(case, seed)}
            rows.append(r)
            o, a = r["ours"], r["pyabel"]
            eo, ea = np.hypot(*o["centre_error_px"]), np.hypot(*a["centre_error_px"])
            print(f"{name + ' #' + str(seed):14s} {o['distance']:8.4f} {a['distance']:9.4f} {r['floor']:7.4f} "
                  f"{a['distance'] / o['distance']:11.2f} {o['wall_s']:5.1f} ({o['cpu_s']:4.1f}) "
                  f"{a['wall_s']:5.2f} ({a['cpu_s']:4.2f}) {a['warm_wall_s']:5.2f} ({a['warm_cpu_s']:4.2f}) "
                  f"{eo:14.3f} / {ea:.3f}" + ("" if o["n_shells"] == len(case.R) else f"  (ours chose {o['n_shells']} shells)"))
    result = {"terms": args.terms, "cases": {k: {"shape": c.shape, "centre": c.centre, "R": c.R, "sigma_R": c.sigma_R,
                                                "n_electrons": c.n_electrons, "background": c.background,
                                                "pixel_size": c.pixel_size} for k, c in cases.items()},
              "cross_check": rows, "machine": platform.processor() or platform.machine()}
    d = [r["pyabel"]["distance"] / r["ours"]["distance"] for r in rows]
    f = [r["ours"]["distance"] / r["floor"] for r in rows]
    print(f"PyAbel/ours Distance: median {np.median(d):.2f}; ours/floor: median {np.median(f):.2f}")
    if args.draws:
        case = cases["2 shells"]
        mask = acceptance_mask(case)
        acc = acceptance(case, range(100, 100 + args.draws), mask)
        result["acceptance"] = {**acc, "masked_pixels": int(mask.sum())}
        dr = acc["draws"]
        z = np.array([r["centre_z"] for r in dr]).ravel()
        zm = np.array([r["masked_centre_z"] for r in dr]).ravel()
        free, known, masked = (np.mean([r[k] for r in dr]) for k in ("d_free", "d_known", "d_masked"))
        result["summary"] = {"centre_z_rms": float(np.sqrt(np.mean(z ** 2))), "centre_z_max": float(np.abs(z).max()),
                             "masked_centre_z_rms": float(np.sqrt(np.mean(zm ** 2))),
                             "distance_free_over_known": free / known, "distance_masked_over_free": masked / free,
                             "floor_free_over_known": acc["floor_free"] / acc["floor_known"],
                             "floor_masked_over_free": acc["floor_masked"] / acc["floor_free"]}
        s = result["summary"]
        print(f"\nacceptance, 2-shell image, {args.draws} draws (centre {case.centre}, {mask.sum()} pixels masked):")
        print(f"  centre fitted: error / error bar rms {s['centre_z_rms']:.2f} (max |z| {s['centre_z_max']:.2f}, "
              f"{len(z)} coordinates); mean Distance {free:.4f} against {known:.4f} with the centre known: "
              f"x{s['distance_free_over_known']:.3f} (floor x{s['floor_free_over_known']:.4f})")
        print(f"  masked disc + dead column: mean Distance {masked:.4f} against {free:.4f} unmasked: "
              f"x{s['distance_masked_over_free']:.3f} (floor x{s['floor_masked_over_free']:.3f}); centre z rms "
              f"{s['masked_centre_z_rms']:.2f}")
    result["seconds"] = time.perf_counter() - t0
    write_json(out / "compare_lab_images.json", result)
    atomic_bytes(out / "compare_lab_images.png", figure(result))
    print(f"\n{result['seconds']:.0f} s; wrote {out / 'compare_lab_images.json'} and {out / 'compare_lab_images.png'}")
    return result


if __name__ == "__main__":
    raise SystemExit(run_command("compare_lab_images", None, lambda: (main(), 0)[1]))
