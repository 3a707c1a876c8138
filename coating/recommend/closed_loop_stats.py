"""Pooled statistics of closed-loop runs: per-cycle ΔE00 of every method from several
``closed_loop.json`` files, the closed-loop targets on the pooled runs, and bootstrap intervals
over cycles (``tools/pool_closed_loop.py`` is the command line)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from sevi.runtime.errors import InputError


def _load(path: Path) -> tuple[dict, list]:
    try:
        doc = json.loads(path.read_text())
        return doc["per_run"], doc["cycles"]
    except (OSError, ValueError, KeyError) as e:
        raise InputError(f"{path}: not a closed_loop.json with 'per_run' and 'cycles' ({e})")


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
                raise InputError(f"{path}: its cycles differ from those of {d.split('+')[0]}")
            for m, v in pr.items():
                if m in per_run and not np.allclose(per_run[m], v):
                    raise InputError(f"{path}: method {m} differs from {d.split('+')[0]}'s: not the same runs")
                per_run[m] = v
            infos = inf
        start = 0
        for info in infos:
            n = int(info["loop_runs"])
            cycles.append({m: np.asarray(v, dtype=float)[start:start + n] for m, v in per_run.items()})
            start += n
        lengths = {m: len(v) for m, v in per_run.items()}
        if any(n != start for n in lengths.values()):
            raise InputError(f"{d}: per_run lengths {lengths} do not add up to the cycles' loop_runs ({start})")
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


def load_plans(dirs: list[str], method: str) -> list[list[dict]]:
    """Per cleaning cycle, the ``method``'s plan records (``info["plans"]`` of
    ``coating.recommend.closed_loop.run_cycle``: interval, care flags, call time, measured dE00)
    from the ``closed_loop.json`` of each folder (``A+B`` as in ``load_cycles``); cycles without
    plans (older files, other methods) are left out."""
    out = []
    for d in dirs:
        for part in d.split("+"):
            path = Path(part) / "closed_loop.json"
            try:
                infos = json.loads(path.read_text())["cycles"]
            except (OSError, ValueError, KeyError) as e:
                raise InputError(f"{path}: not a closed_loop.json with 'cycles' ({e})")
            out += [i["plans"][method] for i in infos if method in i.get("plans", {})]
    return out
