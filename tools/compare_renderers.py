"""Does a model score the same on images from either renderer? Paired, on the same parameters.

For N held-out parameter sets (the prior, seed 10^9 + SEED), three images each: ITM with one seed,
ITM with another (the scale of the noise itself) and the Poisson renderer (sevi/physics/expected_renderer.py).
A model's Distance on each; printed: the mean Distances and the paired mean differences with their
standard errors, ITM(b) - ITM(a) beside Poisson - ITM(a). Equal in distribution means the second
difference is as compatible with zero as the first.

    python tools/compare_renderers.py --model runs/sevi-cpu-smoke/final --grid 512 --electrons 100000
    python tools/compare_renderers.py --model runs/sevi-cpu-course/final --grid 128 --electrons course
"""

from __future__ import annotations

import argparse

import numpy as np
import torch

from sevi.evaluation.held_out import add_held_out_args, held_out_params


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_held_out_args(ap, grid=512, electrons="100000")
    ap.add_argument("--json", default="")
    a = ap.parse_args(argv)
    from sevi.io.atomic import write_json
    from sevi.physics.expected_renderer import make_renderer
    from sevi.physics.generator import GeneratorConfig
    from sevi.physics.metric import distance
    from sevi.regressor.checkpoints import load_model
    from sevi.regressor.inference import predict_images
    from sevi.runtime.device import pick_device

    device = pick_device(a.device)
    model, cfg = load_model(a.model, device)
    pc, params = held_out_params(a)
    d = {}
    for name, backend, seed in (("itm_a", "itm", 1), ("itm_b", "itm", 2), ("poisson", "poisson", 3)):
        r = make_renderer(backend, GeneratorConfig(grid=a.grid), device, pc)
        batches = ((s, r.render(params[s:s + 8], seed * 10**6 + s).images) for s in range(0, a.n, 8))
        p = predict_images(model, cfg, batches, device)
        d[name] = distance(torch.as_tensor(p["beta"]), params.beta).numpy()
    out = {"n": a.n, "grid": a.grid, "electrons": a.electrons, "model": a.model,
           "mean": {k: float(v.mean()) for k, v in d.items()}}
    for k in ("itm_b", "poisson"):
        diff = d[k] - d["itm_a"]
        out[f"{k}_minus_itm_a"] = {"mean": float(diff.mean()), "se": float(diff.std(ddof=1) / np.sqrt(len(diff)))}
    print(f"{a.n} held-out parameter sets, {a.grid}^2, {a.electrons} e-/shell, model {a.model}")
    for k, v in out["mean"].items():
        print(f"  mean Distance {k:8s} {v:.4f}")
    for k in ("itm_b", "poisson"):
        m = out[f"{k}_minus_itm_a"]
        print(f"  paired {k} - itm_a: {m['mean']:+.4f} +- {m['se']:.4f}")
    if a.json:
        write_json(a.json, out)
    return out


if __name__ == "__main__":
    main()
