"""Every SEVI predictor on the same held-out images, against the information limit, in one run.

For N images drawn from the default prior (seed 10^9 + SEED, which no training stream reaches) and
rendered by the ITM generator (the reference), at G x G with the given electrons per shell:

  regressor    the model alone (``sevi predict --no-refine``);
  refined      the likelihood refinement started from the regressor (``sevi/fit/count_fit.py``, the default of
               ``sevi predict``), with its convergence, chi^2 per dof and seconds per image;
  from truth   the same refinement started from the true parameters: when both end at the same
               optimum the regressor "landed" the fit (the fraction is printed);
  three_point, rbasex   PyAbel's inverse Abel transforms (three_point; rBasex of order 20), then a
               Legendre projection of the slice over each shell's window R +- 3 sigma_R taken from
               the TRUTH (an oracle that favours them; overlapping shells share a window);
  floors       the image's own Distance at the Cramer-Rao bound and at the Bayesian floor
               (``sevi/physics/information.py``, histogram detector).

Printed: mean / median Distance of each, separated and overlapping shells (|R1 - R2| < 0.03) apart,
and the medians as ratios to the median Bayesian floor; the calibration of the refined error bars
(z-score std and 68 % / 95 % coverage per group). Written: OUT/eval_refine.json and a PNG of the
refined Distance against the floor per image.

    python tools/eval_refine.py --model runs/sevi-cpu-course/final --grid 1024 --electrons course --out runs/eval_course
    python tools/eval_refine.py --model runs/sevi-cpu-smoke/final --grid 512 --electrons 100000 --out runs/eval_smoke
"""

from __future__ import annotations

import argparse
import math
import time
import warnings
from pathlib import Path

import numpy as np
import torch

from sevi.evaluation.abel_baselines import classical
from sevi.evaluation.calibration import z_calibration
from sevi.evaluation.held_out import HELD_OUT_OFFSET, add_held_out_args, held_out_params
from sevi.io.atomic import save_png, write_json
from sevi.physics.metric import SEPARATION


def summarise(d: np.ndarray, sep: np.ndarray) -> dict:
    out = {}
    for name, m in (("all", np.ones_like(sep)), ("separated", sep), ("overlapping", ~sep)):
        v = d[m]
        out[name] = {"n": int(m.sum()), "mean": float(v.mean()) if len(v) else math.nan,
                     "median": float(np.median(v)) if len(v) else math.nan}
    return out


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_held_out_args(ap, grid=1024, electrons="course")
    ap.add_argument("--fit-grid", type=int, default=512, help="the refinement's grid (the image rebinned exactly)")
    ap.add_argument("--no-classical", action="store_true", help="skip PyAbel (needs the 'abel' extra)")
    ap.add_argument("--no-truth-start", action="store_true", help="skip the fits started from the truth")
    ap.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch's default)")
    ap.add_argument("--out", required=True)
    a = ap.parse_args(argv)
    if a.threads:
        torch.set_num_threads(a.threads)
    # rBasex of order 20 inverts a nearly singular matrix on some images and warns per image
    # (its noise at high orders is known); the Distance below shows its effect.
    warnings.filterwarnings("ignore", category=RuntimeWarning, module="abel")
    from tqdm import tqdm

    from sevi.fit.count_fit import FitConfig, Refiner
    from sevi.physics.forward import ExpectedImage, ForwardConfig
    from sevi.physics.generator import GeneratorConfig, SeviGenerator
    from sevi.physics.information import (
        fisher_information,
        image_floors,
        prior_precision,
    )
    from sevi.physics.metric import distance
    from sevi.regressor.checkpoints import load_model
    from sevi.regressor.inference import predict_images
    from sevi.runtime.device import pick_device

    out_dir = Path(a.out)
    out_dir.mkdir(parents=True, exist_ok=True)
    device = pick_device(a.device)
    pc, params = held_out_params(a)
    gen = SeviGenerator(GeneratorConfig(grid=a.grid), device, pc)
    images = []
    for s in tqdm(range(0, a.n, 8), desc="render (ITM)", disable=None):
        images.append(gen.render(params[s:s + 8], HELD_OUT_OFFSET + a.seed + s).images.cpu())
    images = torch.cat(images)  # (n, G, G) int32
    truth = params.beta.numpy()
    sep = (params.R[:, 1] - params.R[:, 0]).abs().numpy() >= SEPARATION
    model, cfg = load_model(a.model, device)
    t0 = time.perf_counter()
    p = predict_images(model, cfg, [(0, images)], device)
    t_reg = (time.perf_counter() - t0) / a.n
    dist = {"regressor": distance(torch.as_tensor(p["beta"]), params.beta).numpy()}

    refiner = Refiner(FitConfig(fit_grid=min(a.fit_grid, a.grid)), pc, device)
    fm = ExpectedImage(ForwardConfig(grid=a.grid, n_terms=pc.n_terms), device)
    P = prior_precision(pc, pc.n_terms)
    rows = {k: [] for k in ("refined", "truth_start", "three_point", "rbasex", "floor_crb", "floor_bayes")}
    fits, z, secs, landed = [], [], [], []
    for i in tqdm(range(a.n), desc="refine + references", disable=None):
        img = images[i].numpy()
        t1 = time.perf_counter()
        f = refiner(img, p["R"][i], p["sigma_R"][i], p["beta"][i], p["R_sd"][i])
        secs.append(time.perf_counter() - t1)
        fits.append(f)
        rows["refined"].append(f.beta)
        z.append(np.concatenate([((f.beta - truth[i]) / f.beta_sd).ravel(), (f.R - params.R[i].numpy()) / f.R_sd,
                                 (f.sigma_R - params.sigma_R[i].numpy()) / f.sigma_R_sd]))
        if not a.no_truth_start:
            ft = refiner(img, params.R[i].numpy(), params.sigma_R[i].numpy(), truth[i])
            rows["truth_start"].append(ft.beta)
            landed.append(f.log_posterior >= ft.log_posterior - 0.5)  # within half a log-unit: the same optimum
        if not a.no_classical:
            for m in ("three_point", "rbasex"):
                rows[m].append(classical(img, m, params.R[i].numpy(), params.sigma_R[i].numpy(), pc.n_terms))
        F = fisher_information(fm, params.R[i], params.sigma_R[i], params.n_electrons[i].double(), params.beta[i])
        fl = image_floors(F.cpu(), P, pc.n_terms, 1.0, seed=i)
        rows["floor_crb"].append(fl["crb"])
        rows["floor_bayes"].append(fl["bayes"])
    for k in ("refined", "truth_start", "three_point", "rbasex"):
        if rows[k]:
            dist[k] = distance(torch.as_tensor(np.stack(rows[k])), params.beta).numpy()
    floor_bayes, floor_crb = np.array(rows["floor_bayes"]), np.array(rows["floor_crb"])
    dist["floor_crb"], dist["floor_bayes"] = floor_crb, floor_bayes

    z = np.stack(z)  # (n, 2L + 4)
    L = pc.n_terms
    groups = {"beta_2..6": np.r_[0:3, L:L + 3], "beta_8..24": np.r_[3:L, L + 3:2 * L],
              "R": np.r_[2 * L:2 * L + 2], "sigma_R": np.r_[2 * L + 2:2 * L + 4]}
    def calibration(rows):
        return {g: z_calibration(z[rows][:, idx]) for g, idx in groups.items()}

    calib = calibration(np.ones(len(z), bool))
    calib_split = {"separated": calibration(sep), "overlapping": calibration(~sep) if (~sep).any() else None}
    fb_med = float(np.median(floor_bayes))
    res = {"n": a.n, "grid": a.grid, "electrons_per_shell": a.electrons, "seed": a.seed, "model": a.model,
           "fit_grid": refiner.config.fit_grid, "device": str(device), "threads": torch.get_num_threads(),
           "summary": {k: summarise(v, sep) for k, v in dist.items()},
           "median_ratio_to_bayes_floor": {k: float(np.median(v)) / fb_med for k, v in dist.items()},
           "refine_seconds_per_image": {"mean": float(np.mean(secs)), "median": float(np.median(secs)),
                                        "max": float(np.max(secs))},
           "regressor_seconds_per_image": t_reg,
           "converged_fraction": float(np.mean([f.converged for f in fits])),
           "landed_fraction": float(np.mean(landed)) if landed else None,
           "landed_fraction_overlapping": float(np.mean(np.array(landed)[~sep])) if landed and (~sep).any() else None,
           "chi2_dof_median": float(np.median([f.chi2_dof for f in fits])),
           "calibration": calib, "calibration_split": calib_split, "z_scores": z.tolist(),
           "per_image": {k: v.tolist() for k, v in dist.items()},
           "separated": sep.tolist()}

    print(f"\n{a.n} held-out images {a.grid}^2, {a.electrons} electrons/shell, seed {a.seed} "
          f"({int((~sep).sum())} overlapping); model {a.model}; refinement on {refiner.config.fit_grid}^2")
    print(f"  {'predictor':12s} {'mean':>8s} {'median':>8s} {'/floor':>7s} {'sep mean':>9s} {'ovl mean':>9s}")
    for k, s in res["summary"].items():
        print(f"  {k:12s} {s['all']['mean']:8.4f} {s['all']['median']:8.4f} {res['median_ratio_to_bayes_floor'][k]:7.2f} "
              f"{s['separated']['mean']:9.4f} {s['overlapping']['mean']:9.4f}")
    print(f"  refinement: {res['refine_seconds_per_image']['mean']:.2f} s/image mean, converged "
          f"{res['converged_fraction']:.3f}, landed in the truth-start optimum {res['landed_fraction']}, "
          f"median chi2/dof {res['chi2_dof_median']:.3f}")
    for g, c in calib.items():
        cs = calib_split["separated"][g]
        print(f"  calibration {g:10s} z_std {c['z_std']:.2f}  within 68%: {c['within_68']:.3f}  within 95%: {c['within_95']:.3f}"
              f"   (separated only: z_std {cs['z_std']:.2f}, {cs['within_68']:.3f} / {cs['within_95']:.3f})")
    write_json(out_dir / "eval_refine.json", res)
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
        fig, ax = plt.subplots(figsize=(5, 4))
        ax.scatter(floor_bayes[sep], dist["refined"][sep], s=8, label="separated")
        ax.scatter(floor_bayes[~sep], dist["refined"][~sep], s=8, c="C3", label="overlapping")
        lim = [min(floor_bayes.min(), dist["refined"].min()), max(floor_bayes.max(), dist["refined"].max())]
        ax.plot(lim, lim, "k--", lw=0.8, label="= floor")
        ax.set_xscale("log"), ax.set_yscale("log")
        ax.set_xlabel("Bayesian floor (Distance)"), ax.set_ylabel("refined answer (Distance)")
        ax.set_title(f"{a.grid}^2, {a.electrons} e-/shell")
        ax.legend(fontsize=7)
        fig.tight_layout()
        save_png(fig, out_dir / "eval_refine.png")
    except ImportError:
        pass
    print(f"wrote {out_dir / 'eval_refine.json'}")
    return res


if __name__ == "__main__":
    main()
