"""The held-out SEVI images every evaluation tool draws: options and parameters in one place.

Held-out parameters come from the default prior at seed 10^9 + SEED, a range no training stream or
validation set reaches (training seeds are seed * 2^32 + step * world + rank with small steps).
"""

from __future__ import annotations

import argparse

HELD_OUT_OFFSET = 10**9


def add_held_out_args(ap: argparse.ArgumentParser, grid: int, electrons: str) -> None:
    """--model, --n, --grid, --electrons (per shell, or 'course'), --seed, --device."""
    ap.add_argument("--model", required=True, help="model.pt, or the directory holding it")
    ap.add_argument("--n", type=int, default=200, help="held-out images (default 200)")
    ap.add_argument("--grid", type=int, default=grid)
    ap.add_argument("--electrons", default=electrons, help="electrons per shell, or 'course' (1.8-2.5e6)")
    ap.add_argument("--seed", type=int, default=2024)
    ap.add_argument("--device", default="auto")


def held_out_params(args: argparse.Namespace):
    """(PriorConfig, ShellParams (n sets)) of the held-out images the options name."""
    from sevi.physics.prior import Prior, PriorConfig
    pc = PriorConfig() if args.electrons == "course" else PriorConfig().with_electrons(int(float(args.electrons)))
    return pc, Prior(pc)(args.n, HELD_OUT_OFFSET + args.seed).params
