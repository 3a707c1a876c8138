"""The information limit of SEVI images: Distance at the Cramer-Rao bound and at the Bayesian floor.

For a held-out set drawn from the default prior at a fixed seed, the Fisher information of each
image's Poisson pixels (sevi/physics/information.py, on the exact expected image of sevi/physics/forward.py) gives
per image the Distance an efficient unbiased estimator would reach (CRB) and the floor with the
prior's information added (Bayesian floor), for three detectors: every electron ("histogram",
the generator's images), the detected electrons ("events", a perfect centroider) and the summed
frames ("direct", a lower bound). Printed: median / mean per floor, separated and overlapping
shells (|R1 - R2| < 0.03) apart. Written: OUT/information_limit.json and OUT/information_limit.png
(the floor against |R1 - R2|).

    python tools/information_limit.py --out runs/information_limit                    # both settings
    python tools/information_limit.py --settings 512:100000 --n 50 --out /tmp/il      # one, quick

A setting is GRID:ELECTRONS (electrons per shell) or GRID:course (the prior's 1.8-2.5 million).
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np

from sevi.evaluation.held_out import HELD_OUT_OFFSET
from sevi.io.atomic import save_png, write_json
from sevi.physics.forward import ExpectedImage, ForwardConfig
from sevi.physics.information import (
    DETECTORS,
    fisher_information,
    floors_table,
    image_floors,
    prior_precision,
)
from sevi.physics.metric import SEPARATION
from sevi.physics.prior import Prior, PriorConfig

SEED = 2024  # the held-out seed of tools/eval_sevi.py and tools/eval_refine.py


def parse_setting(text: str) -> tuple[int, int | None]:
    grid, _, el = text.partition(":")
    return int(grid), (None if el in ("course", "") else int(float(el)))


def run_setting(grid: int, electrons: int | None, n: int, seed: int, device: str, progress: bool = True) -> dict:
    prior = PriorConfig() if electrons is None else PriorConfig().with_electrons(electrons)
    params = Prior(prior)(n, HELD_OUT_OFFSET + seed).params  # the held-out images of tools/eval_refine.py
    fm = ExpectedImage(ForwardConfig(grid=grid, n_terms=prior.n_terms), device)
    P = prior_precision(prior, prior.n_terms)
    floors = {det: {"crb": [], "bayes": []} for det in DETECTORS}
    from tqdm import tqdm
    t0 = time.perf_counter()
    for i in tqdm(range(n), desc=f"Fisher {grid}^2", unit="image", disable=not progress):
        F = fisher_information(fm, params.R[i], params.sigma_R[i], params.n_electrons[i].double(), params.beta[i])
        for det, frac in DETECTORS.items():
            f = image_floors(F.cpu(), P, prior.n_terms, frac, seed=i)
            floors[det]["crb"].append(f["crb"])
            floors[det]["bayes"].append(f["bayes"])
    sep = (params.R[:, 1] - params.R[:, 0]).abs().numpy()
    out = {"grid": grid, "electrons_per_shell": electrons or "course (1.8-2.5e6)", "n": n, "seed": seed,
           "seconds_per_image": (time.perf_counter() - t0) / n, "separation": sep.tolist(), "per_image": floors,
           "summary": {det: {k: floors_table(np.array(v), sep) for k, v in d.items()} for det, d in floors.items()}}
    return out


def plot(results: list[dict], path: Path) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, axes = plt.subplots(1, len(results), figsize=(5.5 * len(results), 4), squeeze=False)
    for ax, r in zip(axes[0], results):
        sep = np.array(r["separation"])
        for det, col in (("histogram", "C0"), ("events", "C2")):
            ax.scatter(sep, r["per_image"][det]["crb"], s=8, c=col, marker="x", label=f"{det}: CRB")
            ax.scatter(sep, r["per_image"][det]["bayes"], s=8, c=col, marker="o", label=f"{det}: Bayesian floor")
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.axvline(SEPARATION, color="grey", lw=0.8)
        ax.set_xlabel("|R1 - R2| (detector units)")
        ax.set_ylabel("Distance at the floor")
        ax.set_title(f"{r['grid']}^2, {r['electrons_per_shell']} e-/shell")
        ax.legend(fontsize=7)
        from matplotlib.ticker import NullFormatter
        ax.xaxis.set_minor_formatter(NullFormatter())
    fig.tight_layout()
    save_png(fig, path)


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--settings", default="512:100000,1024:course", help="comma list of GRID:ELECTRONS|course")
    ap.add_argument("--n", type=int, default=200, help="held-out images per setting (default 200)")
    ap.add_argument("--seed", type=int, default=SEED)
    ap.add_argument("--device", default="auto")
    ap.add_argument("--out", required=True, help="output folder")
    a = ap.parse_args(argv)
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    results = [run_setting(*parse_setting(s), a.n, a.seed, a.device) for s in a.settings.split(",")]
    for r in results:
        print(f"\n{r['grid']}^2, {r['electrons_per_shell']} electrons per shell, {r['n']} images "
              f"({r['seconds_per_image']:.2f} s per image):")
        print(f"  {'detector':10s} {'floor':6s} {'all (median / mean)':>22s} {'separated':>20s} {'overlapping':>20s}")
        for det, d in r["summary"].items():
            for k, t in d.items():
                cells = [f"{t[g]['median']:.4f} / {t[g]['mean']:.4f}" for g in ("all", "separated", "overlapping")]
                print(f"  {det:10s} {k:6s} {cells[0]:>22s} {cells[1]:>20s} {cells[2]:>20s}")
    write_json(out / "information_limit.json", {"results": results})
    plot(results, out / "information_limit.png")
    print(f"\nwrote {out / 'information_limit.json'} and {out / 'information_limit.png'}")
    return {"results": results}


if __name__ == "__main__":
    main()
