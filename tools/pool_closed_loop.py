"""Pool closed-loop runs of several plants and put intervals on the closed-loop targets.

``tools/coating_closed_loop.py`` writes ``DIR/closed_loop.json`` per pair of plants. This reads
several, pools the per-run ΔE00 of every method (front and back, all runs: medians and p90s of
the pooled arrays, never averages of medians) and prints the three closed-loop targets (BENCHMARKS.md, section 5) for
``--method`` (ours/physics LS median, ours/unchanged median, ours p90) with a bootstrap interval
that resamples whole cleaning cycles, because runs within a cycle share its drift draws.

It also compares the method's tail with a reference method run on the same runs (``--reference``,
default ``oracle``: the planner that knows the true tooling): the p90 per side, the correlation
of their per-run ΔE00, and the reference's mean on the method's worst 10 % of run-sides. If the
two tails coincide, the tail is the runs' own deposition error, not the method's. With
``--reference oracle_lagged`` (the recommender that knows the machine as it was at the last run)
it prints that reference's p90 and the difference of the two p90s, both with the same bootstrap
over cycles: how far the method's tail is from what knowing everything measurable would give.
Where the files hold the method's plan records (``coating recommend``'s path), it pools how sure
the plans were: failures, the 90 % intervals' coverage (with a bootstrap interval over cycles),
the share flagged for care.

    python tools/pool_closed_loop.py /tmp/cl0 /tmp/cl2 /tmp/cl4 /tmp/cl6 [--method ours_robust] [--draws 2000]
    python tools/pool_closed_loop.py /tmp/cl4+/tmp/cl4L /tmp/cl6+/tmp/cl6L --reference oracle_lagged
"""
from __future__ import annotations

import argparse
import sys

import numpy as np

from coating.recommend.closed_loop import gain_line, interval_summary
from coating.recommend.closed_loop_stats import (
    load_cycles,
    load_plans,
    p90_difference,
    tail_comparison,
    targets,
)

TARGETS = {"median_vs_physics_ls": 0.75, "median_vs_unchanged": 0.45, "p90": 1.2}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("dirs", nargs="+", help="closed-loop output folders (each with closed_loop.json)")
    ap.add_argument("--method", default="ours_robust")
    ap.add_argument("--reference", default="oracle", help="method to compare the tail with (if in the files)")
    ap.add_argument("--draws", type=int, default=2000, help="bootstrap draws over cycles")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    cycles = load_cycles(args.dirs)
    methods = list(cycles[0])
    if args.method not in methods or not {"physics_ls", "unchanged"} <= set(methods):
        raise SystemExit(f"--method {args.method}: the files hold {methods}; need it, physics_ls and unchanged")
    pooled = {m: np.concatenate([c[m] for c in cycles]) for m in methods}
    print(f"{len(cycles)} cycles, {len(pooled[methods[0]])} runs x 2 sides, from {', '.join(args.dirs)}")
    print(f"{'method':<14}{'median':>8}{'p90':>8}")
    for m in methods:
        print(f"{m:<14}{np.median(pooled[m]):>8.3f}{np.percentile(pooled[m], 90):>8.3f}")
    point = targets(cycles, args.method)
    rng = np.random.default_rng(args.seed)
    boot = [targets([cycles[i] for i in rng.integers(0, len(cycles), len(cycles))], args.method)
            for _ in range(args.draws)]
    print(f"targets for {args.method} (90% interval: {args.draws} bootstrap draws of whole cycles)")
    for k, limit in TARGETS.items():
        lo, hi = np.percentile([b[k] for b in boot], [5, 95])
        status = "met" if point[k] <= limit else "not met"
        print(f"  {k:<22}{point[k]:>7.3f}  [{lo:.3f}, {hi:.3f}]  target <= {limit:g}: {status}")
    print(f"  median_vs_physics_ls <= 0.6 (the busy-machine round's target): {'met' if point['median_vs_physics_ls'] <= 0.6 else 'not met'}")
    plans = load_plans(args.dirs, args.method)
    if plans:
        s = interval_summary([r for c in plans for r in c])
        boot = [interval_summary([r for i in rng.integers(0, len(plans), len(plans)) for r in plans[i]])
                for _ in range(min(args.draws, 500))]
        lo, hi = np.percentile([b["coverage"] for b in boot if "coverage" in b], [5, 95])
        print(f"how sure ({args.method}, {s['n_plans']} plans in {len(plans)} cycles): {s['failures']} failure(s); "
              f"90 % interval coverage {100 * s['coverage']:.1f} % [{100 * lo:.1f}, {100 * hi:.1f}] (front "
              f"{100 * s['coverage_F']:.1f}, back {100 * s['coverage_B']:.1f}; below {100 * s['below']:.1f}, above "
              f"{100 * s['above']:.1f}; target 85-95 %); median width {s['median_width']:.3f}; flagged "
              f"{100 * s['flagged']:.1f} % (" + ", ".join(f"{k[8:]} {100 * v:.1f} %" for k, v in s.items()
                                                          if k.startswith("flagged_")) + ")")
        if gain_line(s):
            print("  " + gain_line(s))
    if args.reference in pooled and args.reference != args.method:
        d = p90_difference(cycles, args.method, args.reference, args.draws, rng)
        print(f"  {args.reference} p90 {d['ref_p90']:.3f} [{d['ref_lo']:.3f}, {d['ref_hi']:.3f}]; "
              f"{args.method} minus {args.reference}: {d['diff']:+.3f} [{d['diff_lo']:+.3f}, {d['diff_hi']:+.3f}] "
              f"(the same cycles resampled for both)")
        t = tail_comparison(pooled, args.method, args.reference)
        print(f"tail of {args.method} against {args.reference}: p90 front / back {t['p90_F']:.3f} / {t['p90_B']:.3f} "
              f"({args.reference} {t['ref_p90_F']:.3f} / {t['ref_p90_B']:.3f}); per-run correlation "
              f"{t['correlation']:.2f}; {args.reference}'s mean on {args.method}'s worst 10 % of run-sides "
              f"{t['ref_mean_on_worst']:.3f} (overall {t['ref_mean']:.3f})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
