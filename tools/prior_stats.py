"""Rejection rate of the prior: how many drawn beta sets are not valid densities (I(x) < 0).

    python tools/prior_stats.py --n 100000 --seed 0
"""

import argparse
import time

from sevi.physics.prior import Prior


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--n", type=int, default=100_000, help="two-shell sets to draw")
    ap.add_argument("--seed", type=int, default=0)
    a = ap.parse_args(argv)
    t0 = time.perf_counter()
    d = Prior()(a.n, a.seed)
    dt = time.perf_counter() - t0
    se = (d.rejection_rate * (1 - d.rejection_rate) / d.candidates) ** 0.5
    print(f"{d.candidates} shells drawn, {d.rejected_density} rejected: rejection rate "
          f"{100 * d.rejection_rate:.2f}% +- {100 * se:.2f}% ({a.n} sets in {dt:.2f} s, "
          f"{2 * a.n / dt:.0f} valid shells/s)")
    return d


if __name__ == "__main__":
    main()
