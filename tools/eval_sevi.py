"""Accuracy of a SEVI model on held-out images, against predicting the prior mean.

    python tools/eval_sevi.py --model RUN/final [--n 200] [--grid 512] [--electrons 100000] [--seed 2024] [--render itm|poisson]

``--render poisson`` draws the same held-out parameters with the Poisson renderer instead of ITM: a
model should score the same on both (the two agree in distribution).

A direct-path model (trained with ``spot_blur > 0``) gets the same images blurred by its spot_blur
(``sevi.camera.direct_image.blur_images``, at the rendering grid, which must sample the blur with >= 1.5 px).

Renders N images (default 200) of G x G (512) with a fixed electron count per shell (1e5) from the
default prior (fixed seed, never a training seed: training streams use seeds < 2^31 + ...), runs
them through the same path as ``sevi predict`` and prints the mean Distance of the model and of
the prior-mean prediction (the empirical mean of 4000 valid prior draws) on the same images, their
ratio, the separated / overlapping split (|R1 - R2| >= 0.03), and the calibration of the error
bars per parameter group: the fraction of true values within +-1 sigma (0.68 if calibrated) and
the std of the z-scores (1 if calibrated). ``--json`` writes the same figures to a file.
"""

from __future__ import annotations

import argparse
import sys
import time

import numpy as np
import torch


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", required=True)
    ap.add_argument("--n", type=int, default=200)
    ap.add_argument("--grid", type=int, default=512)
    ap.add_argument("--electrons", type=int, default=100_000)
    ap.add_argument("--seed", type=int, default=2024)
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--device", default="auto")
    ap.add_argument("--threads", type=int, default=1, help="torch CPU threads (1 on a shared box; 0: default)")
    ap.add_argument("--json", default="", help="also write the figures to this JSON file")
    ap.add_argument("--render", default="itm", choices=("itm", "poisson"),
                    help="how the held-out images are drawn (sevi/physics/expected_renderer.py); the same parameters either way")
    ap.add_argument("--electrons-course", action="store_true", help="the prior's 1.8-2.5e6 electrons per shell "
                                                                    "instead of --electrons")
    args = ap.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)

    from sevi.camera.direct_image import blur_images
    from sevi.evaluation.calibration import z_calibration
    from sevi.io.atomic import write_json
    from sevi.physics.generator import GeneratorConfig
    from sevi.physics.metric import SEPARATION, distance
    from sevi.physics.prior import Prior, PriorConfig
    from sevi.regressor.checkpoints import load_model
    from sevi.regressor.inference import predict_images
    from sevi.runtime.device import pick_device

    device = pick_device(args.device)
    model, cfg = load_model(args.model, device)
    pc = PriorConfig() if args.electrons_course else PriorConfig().with_electrons(args.electrons)
    from sevi.physics.expected_renderer import make_renderer
    gen = make_renderer(args.render, GeneratorConfig(grid=args.grid), device, pc)
    params = Prior(pc)(args.n, 10**9 + args.seed).params  # a seed range no training stream uses
    t0 = time.perf_counter()

    def batches():
        for s in range(0, args.n, args.batch):
            images = gen.render(params[s:s + args.batch], 10**9 + args.seed + s).images
            if cfg.data.spot_blur > 0:  # a direct-path model reads images blurred like the camera spot
                images = blur_images(images, cfg.data.spot_blur)
            yield s, images

    p = predict_images(model, cfg, batches(), device)
    dt = time.perf_counter() - t0
    beta = params.beta.numpy()
    d_model = distance(torch.as_tensor(p["beta"]), params.beta).numpy()
    prior_mean = Prior(PriorConfig())(4000, 777).params.beta.mean(0)  # (2, L), empirical, valid draws
    d_prior = distance(prior_mean.expand_as(params.beta), params.beta).numpy()
    sep = ((params.R[:, 1] - params.R[:, 0]).abs() >= SEPARATION).numpy()
    res = {"n": args.n, "grid": args.grid, "render": args.render, "seed": args.seed,
           "electrons_per_shell": "course (1.8-2.5e6)" if args.electrons_course else args.electrons,
           "distance_model": float(d_model.mean()), "distance_prior_mean": float(d_prior.mean()),
           "ratio": float(d_model.mean() / d_prior.mean()),
           "distance_model_separated": float(d_model[sep].mean()), "distance_model_overlapping": float(d_model[~sep].mean()),
           "distance_prior_separated": float(d_prior[sep].mean()), "distance_prior_overlapping": float(d_prior[~sep].mean()),
           "n_overlapping": int((~sep).sum()), "seconds_render_and_predict": dt}
    groups = {"beta_2..6": (p["beta"][..., :3], p["beta_sd"][..., :3], beta[..., :3]),
              "beta_8..24": (p["beta"][..., 3:], p["beta_sd"][..., 3:], beta[..., 3:]),
              "R": (p["R"], p["R_sd"], params.R.numpy()),
              "sigma_R": (p["sigma_R"], p["sigma_R_sd"], params.sigma_R.numpy())}
    cal = {}
    for name, (mu, sd, true) in groups.items():
        z = (mu - true) / sd
        cal[name] = {**z_calibration(z), "median_sd": float(np.median(sd)),
                     "rmse": float(np.sqrt(((mu - true) ** 2).mean()))}
    res["calibration"] = cal
    res["per_coefficient_rmse"] = np.sqrt(((p["beta"] - beta) ** 2).mean(0)).round(5).tolist()

    print(f"{args.n} held-out images {args.grid}x{args.grid} ({args.render}), {res['electrons_per_shell']} electrons/shell, seed {args.seed} "
          f"({res['n_overlapping']} with |R1-R2| < {SEPARATION})")
    print(f"mean Distance  model: {res['distance_model']:.4f}   prior mean: {res['distance_prior_mean']:.4f}   "
          f"ratio: {res['ratio']:.3f}")
    print(f"  separated    model: {res['distance_model_separated']:.4f}   prior mean: {res['distance_prior_separated']:.4f}")
    print(f"  overlapping  model: {res['distance_model_overlapping']:.4f}   prior mean: {res['distance_prior_overlapping']:.4f}")
    print("calibration (fraction within +-1 sigma, want 0.68; within 1.96 sigma, want 0.95; z-score std, want 1):")
    for name, c in cal.items():
        print(f"  {name:11s} within={c['within_68']:.3f} / {c['within_95']:.3f}  z_std={c['z_std']:.2f}  "
              f"median_sd={c['median_sd']:.4g}  rmse={c['rmse']:.4g}")
    if args.json:
        write_json(args.json, res, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
