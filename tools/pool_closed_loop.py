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

    python tools/pool_closed_loop.py /tmp/cl0 /tmp/cl2 /tmp/cl4 /tmp/cl6 [--method ours_robust] [--draws 2000]
    python tools/pool_closed_loop.py /tmp/cl4+/tmp/cl4L /tmp/cl6+/tmp/cl6L --reference oracle_lagged
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

TARGETS = {"median_vs_physics_ls": 0.75, "median_vs_unchanged": 0.45, "p90": 1.2}


def _load(path: Path) -> tuple[dict, list]:
    try:
        doc = json.loads(path.read_text())
        return doc["per_run"], doc["cycles"]
    except (OSError, ValueError, KeyError) as e:
        raise SystemExit(f"{path}: not a closed_loop.json with 'per_run' and 'cycles' ({e})")


def load_cycles(dirs: list[str]) -> list[dict[str, np.ndarray]]:
    """One dict per cleaning cycle: method -> (runs, 2) ΔE00 (front, back).

    ``A+B`` joins the methods of two runs of the tool on the same plants (e.g. the references
    run separately); the methods both hold must agree run for run, or it is refused. Methods not
    in every folder are left out (and named)."""
    cycles = []
    for d in dirs:
        per_run, infos = {}, None
        for part in d.split("+"):
            path = Path(part) / "closed_loop.json"
            pr, inf = _load(path)
            if infos is not None and [i["loop_runs"] for i in inf] != [i["loop_runs"] for i in infos]:
                raise SystemExit(f"{path}: its cycles differ from those of {d.split('+')[0]}")
            for m, v in pr.items():
                if m in per_run and not np.allclose(per_run[m], v):
                    raise SystemExit(f"{path}: method {m} differs from {d.split('+')[0]}'s: not the same runs")
                per_run[m] = v
            infos = inf
        start = 0
        for info in infos:
            n = int(info["loop_runs"])
            cycles.append({m: np.asarray(v, dtype=float)[start:start + n] for m, v in per_run.items()})
            start += n
        lengths = {m: len(v) for m, v in per_run.items()}
        if any(n != start for n in lengths.values()):
            raise SystemExit(f"{d}: per_run lengths {lengths} do not add up to the cycles' loop_runs ({start})")
    common = set.intersection(*(set(c) for c in cycles))
    dropped = sorted(set.union(*(set(c) for c in cycles)) - common)
    if dropped:
        print(f"left out, not in every folder (join folders of the same plants with +): {', '.join(dropped)}")
    return [{m: v for m, v in c.items() if m in common} for c in cycles]


def targets(cycles: list[dict[str, np.ndarray]], method: str) -> dict[str, float]:
    pooled = {m: np.concatenate([c[m] for c in cycles]) for m in cycles[0]}
    med = {m: float(np.median(v)) for m, v in pooled.items()}
    return {"median_vs_physics_ls": med[method] / med["physics_ls"],
            "median_vs_unchanged": med[method] / med["unchanged"],
            "p90": float(np.percentile(pooled[method], 90))}


def _p90(cycles: list[dict[str, np.ndarray]], method: str) -> float:
    return float(np.percentile(np.concatenate([c[method] for c in cycles]), 90))


def p90_difference(cycles, method: str, reference: str, draws: int, rng) -> dict[str, float]:
    """The reference's pooled p90 and ``p90(method) - p90(reference)``, each with a 90 % interval
    from ``draws`` bootstrap resamples of whole cycles (the same resample for both methods)."""
    ref, diff = [], []
    for _ in range(draws):
        cs = [cycles[i] for i in rng.integers(0, len(cycles), len(cycles))]
        ref.append(_p90(cs, reference))
        diff.append(_p90(cs, method) - ref[-1])
    return {"ref_p90": _p90(cycles, reference), "ref_lo": float(np.percentile(ref, 5)),
            "ref_hi": float(np.percentile(ref, 95)), "diff": _p90(cycles, method) - _p90(cycles, reference),
            "diff_lo": float(np.percentile(diff, 5)), "diff_hi": float(np.percentile(diff, 95))}


def tail_comparison(pooled: dict[str, np.ndarray], method: str, reference: str) -> dict[str, float]:
    """p90 per side of both, the correlation of their per-run ΔE00, and the reference's mean on
    the method's worst 10 % of run-sides against its overall mean."""
    m, r = pooled[method], pooled[reference]
    worst = m > np.percentile(m, 90)
    return {"p90_F": float(np.percentile(m[:, 0], 90)), "p90_B": float(np.percentile(m[:, 1], 90)),
            "ref_p90_F": float(np.percentile(r[:, 0], 90)), "ref_p90_B": float(np.percentile(r[:, 1], 90)),
            "correlation": float(np.corrcoef(m.ravel(), r.ravel())[0, 1]),
            "ref_mean_on_worst": float(r[worst].mean()), "ref_mean": float(r.mean())}


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
