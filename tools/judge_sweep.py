"""Judge a finished sweep's trained trials again, on other held-out images: does the choice hold?

    python tools/judge_sweep.py --sweep runs/sevi-sweep-379e516598 --kind overlapping --n 32 --out runs/judge_overlapping.json

Every trial of the sweep folder that finished keeps its final model (``trial_*/checkpoint_*/final``).
Each is judged (``sevi.evaluation.regressor_sweep.judge``: landing fraction, regressor and refined
Distance, fit iterations, cost) on the same ``--n`` held-out images of ``--kind`` (``prior``: as the
sweep drew them; ``overlapping``: the same draws with the outer shell 0.004-0.03 outside the inner
one), drawn from the trial's own base preset at its held-out grid. ``--model RUN/final`` adds a
preset's own model to the comparison. Prints one row per trial and writes them, with the images' description, to ``--out`` (JSON, atomically).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sweep", required=True, help="a sweep's folder (runs/sevi-sweep-<key>)")
    ap.add_argument("--kind", default="overlapping", help="held-out images: prior | overlapping")
    ap.add_argument("--n", type=int, default=32, help="held-out images")
    ap.add_argument("--grid", type=int, default=None, help="their grid (default: the sweep's held-out grid)")
    ap.add_argument("--seed", type=int, default=7, help="held-out seed (the sweep's own is 0)")
    ap.add_argument("--model", action="append", default=[],
                    help="also judge this final model (a preset's run, RUN/final) on the same images; repeatable")
    ap.add_argument("--out", required=True)
    a = ap.parse_args(argv)

    import torch

    from sevi.evaluation.regressor_sweep import judge, make_held_out, trial_id
    from sevi.io.atomic import write_json
    from sevi.regressor.checkpoints import load_model
    from sevi.regressor.train_config import PRESETS

    torch.set_num_threads(1)
    sweep = Path(a.sweep)
    record = json.loads(Path(str(sweep) + ".inputs.json").read_text())["inputs"]
    finals = sorted(sweep.glob("trial_*/checkpoint_*/final")) + [Path(m) for m in a.model]
    if not finals:
        print(f"judge_sweep: {sweep}: no finished trial keeps a final model (trial_*/checkpoint_*/final)",
              file=sys.stderr)
        return 2
    base = PRESETS[record["budget"]["base"]]
    grid = a.grid or int(record["held_out"]["grid"])
    held = make_held_out(base, a.n, grid, a.seed, kind=a.kind)
    rows = []
    print(f"{len(finals)} finished trials of {sweep.name}, {a.n} held-out images ({a.kind}, {grid}^2, seed {a.seed})")
    for f in finals:
        trial = trial_id(f.parents[1].name) if f.parents[1].name.startswith("trial_") else str(f)
        model, cfg = load_model(f)
        r = {"trial": trial, "blocks": "-".join(map(str, cfg.blocks)), "width": cfg.width, "grid": cfg.data.grid,
             "representation": cfg.data.representation, **judge(model, cfg, held)}
        rows.append(r)
        print(f"  {trial}  {r['blocks']:>8} w{r['width']:<3} {r['representation']} {r['grid']}^2: landed "
              f"{r['landed_fraction']:.3f}, regressor {r['regressor_distance']:.3f}, refined "
              f"{r['refined_distance']:.4f}, {r['fit_iterations']:.1f} iterations, {r['images_per_s']:.0f} images/s")
    write_json(a.out, {"sweep": sweep.name, "kind": a.kind, "n": a.n, "grid": grid, "seed": a.seed,
                       "base": record["budget"]["base"], "trials": rows})
    print(f"wrote {a.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
