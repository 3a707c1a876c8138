"""The regressor against PyAbel's rBasex on the same held-out images (PyAbel: `pip install -e ".[abel]"`).

rBasex (Ryazanov's inverse Abel transform in PyAbel) returns the radial distributions of the
Legendre terms P_0 .. P_order of each image. For each shell we sum them over r in
[R - 3 sigma_R, R + 3 sigma_R] (the TRUE R and sigma_R: an oracle window, which favours rBasex)
and take beta_l = P_l / P_0 in PyAbel's convention I ~ 1 + sum beta_l P_l, i.e. half of it in the
course's convention I = 1/2 + sum beta_l P_l. Overlapping shells share a window.

    python tools/compare_rbasex.py --model runs/sevi-cpu-smoke/final --n 50

The images are the evaluation tools' held-out draws (``sevi.evaluation.held_out``: prior seed
10^9 + SEED, outside every training stream).
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch

from sevi.evaluation.abel_baselines import rbasex_betas
from sevi.evaluation.held_out import HELD_OUT_OFFSET, add_held_out_args, held_out_params


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_held_out_args(ap, grid=512, electrons="100000")  # the held-out draws every evaluation tool uses
    ap.set_defaults(n=50)
    ap.add_argument("--orders", default="4,8,24", help="rBasex angular orders to try")
    ap.add_argument("--json")
    a = ap.parse_args(argv)

    from sevi.io.atomic import write_json
    from sevi.physics.generator import GeneratorConfig, SeviGenerator
    from sevi.physics.metric import distance
    from sevi.regressor.checkpoints import load_model
    from sevi.regressor.inference import predict_images
    from sevi.runtime.device import pick_device

    device = pick_device(a.device)
    model, cfg = load_model(a.model, device)
    pc, p = held_out_params(a)  # seed 10^9 + SEED: outside every training stream
    counts = SeviGenerator(GeneratorConfig(grid=a.grid), device, pc).render(p, HELD_OUT_OFFSET + a.seed).images.cpu().numpy()
    truth = p.beta.numpy()
    t0 = time.perf_counter()
    with torch.inference_mode():
        pred = predict_images(model, cfg, [(0, counts)], device)
    t_model = time.perf_counter() - t0
    out = {"n": a.n, "grid": a.grid, "electrons_per_shell": a.electrons, "device": str(device),
           "model_distance": float(distance(torch.tensor(pred["beta"]), torch.tensor(truth)).mean()),
           "model_seconds_per_image": t_model / a.n}
    half = a.grid / 2
    print(f"{a.n} held-out images {a.grid}x{a.grid}, {a.electrons} electrons/shell, seed {a.seed}")
    print(f"  regressor           mean Distance {out['model_distance']:.4f}   ({1e3 * t_model / a.n:.1f} ms/image)")
    for order in (int(o) for o in a.orders.split(",")):
        t0 = time.perf_counter()
        est = np.stack([rbasex_betas(counts[i], p.R[i].numpy() * half, p.sigma_R[i].numpy() * half, order,
                                     truth.shape[-1]) for i in range(a.n)])
        dt = time.perf_counter() - t0
        d = float(distance(torch.tensor(est), torch.tensor(truth)).mean())
        out[f"rbasex_order{order}_distance"] = d
        out[f"rbasex_order{order}_seconds_per_image"] = dt / a.n
        print(f"  rBasex order {order:2d}     mean Distance {d:.4f}   ({1e3 * dt / a.n:.1f} ms/image, oracle radii)")
    if a.json:
        write_json(a.json, out)
    return out


if __name__ == "__main__":
    main()
