"""The frame sum's covariance model, checked on rendered frame sums (``sevi.evaluation.frame_sum_covariance``).

    python tools/frame_sum_covariance.py --sums 400 --out runs/frame_sum_covariance
    python tools/frame_sum_covariance.py --sums 400 --R 0.30,0.60 --out runs/frame_sum_covariance_resolved
    python tools/frame_sum_covariance.py --sums 400 --oversample 2 --out runs/frame_sum_covariance_os2
    python tools/frame_sum_covariance.py --camera course --frames 50 --sums 400 --R 0.45,0.75 --no-gls --fits 20 --out runs/frame_sum_covariance_course

The sums are kept in OUT/sums.npz and reused by a later run with the same ``--out``, ``--sums``,
``--frames``, ``--R``, ``--seed`` (and ``--camera``, ``--sigma-R``, ``--beta-seed``, ``--uniform-spots``, ``--per-frame``) (so ``--oversample`` variants compare the same sums: point
``--out`` at a copy of the first run's folder, or use ``--sums-from``).

Renders ``--sums`` independent frame sums of one measurement (default: two saturating shells one spot
sigma apart on the small camera of tests/sevi/fit/test_frame_sum_fit.py, ``--frames`` 300 frames of 30
spots; ``--camera course``: the course's 1024^2 camera at ~77 spots per frame, fitted at 256^2 as
`sevi analyze` fits it; the actual / claimed ratio does not depend on the number of frames, so a few
dozen frames per sum measure it) and prints, per parameter, how much the frame-sum fit's estimator (wls) and the generalised
least-squares one (gls, the modelled pixel covariance inverted) actually vary against what each
claims (ratio 1: the covariance model is right along that estimator; its standard error is about
sqrt(2 / sums)). Writes OUT/frame_sum_covariance.json and OUT/frame_sum_covariance.png.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path


def _pair(text: str, what: str) -> tuple[float, float]:
    parts = text.split(",")
    if len(parts) != 2:
        raise ValueError(f"--{what}: got {text!r}; expected two numbers A,B")
    return float(parts[0]), float(parts[1])


def plot(out: dict, path: Path) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    from sevi.io.atomic import save_png

    names = out["wls"]["names"]
    keep = [i for i, n in enumerate(names) if not n.startswith("N[")]
    x = np.arange(len(keep))
    fig, ax = plt.subplots(figsize=(9, 3.8))
    for k, (name, c) in enumerate((n, c) for n, c in (("wls", "C0"), ("gls", "C3")) if n in out):
        ax.bar(x + (k - 0.5) * 0.4, [out[name]["ratio"][i] for i in keep], 0.4, color=c,
               label={"wls": "frame-sum fit (weighted)", "gls": "generalised least squares"}[name])
    ax.axhline(1, color="k", lw=0.8)
    ax.set_yscale("log")
    ax.set_xticks(x, [names[i] for i in keep], rotation=90, fontsize=7)
    ax.set_ylabel("actual / claimed variance")
    ax.set_title(f"{out['n_sums']} frame sums of {out['check']['n_frames']} frames, "
                 f"{out['check']['camera']['grid']}^2 camera, R = {out['check']['R']}, "
                 f"oversample {out['check']['oversample']}", fontsize=9)
    ax.legend(fontsize=8)
    fig.tight_layout()
    save_png(fig, path)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sums", type=int, default=400, help="independent frame sums to render (default 400)")
    ap.add_argument("--frames", type=int, default=300, help="frames per sum (default 300)")
    ap.add_argument("--R", default="0.33,0.39", help="the two radii, detector units (default 0.33,0.39)")
    ap.add_argument("--seed", type=int, default=1000)
    ap.add_argument("--oversample", type=int, default=1, help="the fit's fine hit grid per blur grid (default 1, the fit's)")
    ap.add_argument("--camera", choices=("small", "course"), default="small",
                    help="small: the test camera (256^2 frames, fit at 64^2); course: the course's camera, fit at 256^2")
    ap.add_argument("--sigma-R", default=None, help="the two shell widths, detector units (default: the camera's check's)")
    ap.add_argument("--beta-seed", type=int, default=None,
                    help="the betas: the notes' prior drawn with this seed (default: the check's; a measurement of "
                         "tools/frames_to_limit.py of kind prior has seed 10^9 + its index)")
    ap.add_argument("--no-gls", action="store_true", help="the fit's estimator only (no conjugate-gradient solve)")
    ap.add_argument("--per-frame", type=float, default=None,
                    help="detected spots per frame (default: the camera's check's, 30 small / 77 course); "
                         "fewer spots pile up less, so the rings saturate less")
    ap.add_argument("--gls-step", action="store_true",
                    help="with --fits: also one generalised-least-squares step from each fit's optimum, "
                         "its spread and z-scores beside the fit's")
    ap.add_argument("--uniform-spots", action="store_true",
                    help="render every spot at the mean width and without tilt (sigma_std = rho_std = 0): "
                         "the camera the covariance model's single mean spot describes exactly")
    ap.add_argument("--fits", type=int, default=0, metavar="G",
                    help="also fit the sums added in groups of G with the frame-sum fit from the truth: z-scores of R "
                         "and sigma_R (sevi.evaluation.frame_sum_covariance.fit_grouped_sums)")
    ap.add_argument("--sums-from", default=None, help="reuse the rendered sums of an earlier run's OUT folder")
    ap.add_argument("--out", required=True)
    ap.add_argument("--threads", type=int, default=None, help="torch threads (default: the thread policy's)")
    a = ap.parse_args(argv)
    if a.fits < 0:
        raise ValueError(f"--fits must be >= 0 (0: no fits); got {a.fits}")
    if a.gls_step and not a.fits:
        raise ValueError("--gls-step needs --fits G (the fits it steps from)")
    if a.sums < 3 or a.frames < 1:
        raise ValueError(f"--sums must be >= 3 and --frames >= 1; got {a.sums} and {a.frames}")

    import dataclasses

    from tqdm import tqdm

    from sevi.evaluation.frame_sum_covariance import CovarianceCheck, compare_estimators, fit_grouped_sums, render_sums
    from sevi.fit.frame_sum_information import truth_theta
    from sevi.io.atomic import atomic_path, write_json
    from sevi.runtime.threads import apply_thread_policy

    apply_thread_policy(a.threads, work="large")
    import numpy as np
    import torch

    kw = {"n_frames": a.frames, "R": _pair(a.R, "R"), "oversample": a.oversample}
    if a.sigma_R is not None:
        kw["sigma_R"] = _pair(a.sigma_R, "sigma-R")
    if a.beta_seed is not None:
        kw["beta_seed"] = a.beta_seed
    if a.per_frame is not None:
        if not a.per_frame > 0:
            raise ValueError(f"--per-frame must be > 0; got {a.per_frame}")
        kw["per_frame"] = a.per_frame
    check = CovarianceCheck.course(**kw) if a.camera == "course" else CovarianceCheck(**kw)
    if a.uniform_spots:
        check = dataclasses.replace(check, camera=dataclasses.replace(check.camera, sigma_std=0.0, rho_std=0.0))
    if a.oversample < 1:
        raise ValueError(f"--oversample must be >= 1; got {a.oversample}")
    dest = Path(a.out)
    dest.mkdir(parents=True, exist_ok=True)
    key = {"sums": a.sums, "frames": a.frames, "R": list(check.R), "seed": a.seed} | (
        {"camera": a.camera, "sigma_R": list(check.sigma_R)} if a.camera != "small" else {}) | (
        {"beta_seed": a.beta_seed} if a.beta_seed is not None else {}) | (
        {"uniform_spots": True} if a.uniform_spots else {}) | (
        {"per_frame": a.per_frame} if a.per_frame is not None else {})
    cached = Path(a.sums_from or dest) / "sums.npz"
    render_s = 0.0
    if cached.exists() and json.loads(str(np.load(cached)["key"])) == key:  # the same sums: reuse them
        with np.load(cached) as f:
            sums, detected = torch.from_numpy(f["sums"]), float(f["detected"])
    else:
        if a.sums_from:
            raise ValueError(f"--sums-from {a.sums_from}: no sums.npz of {key} there")
        t0 = time.perf_counter()
        with tqdm(total=a.sums, desc="frame sums", unit="sum") as bar:
            sums, detected = render_sums(check, a.sums, a.seed, progress=bar.update)
        render_s = time.perf_counter() - t0
        with atomic_path(dest / "sums.npz") as tmp:
            with open(tmp, "wb") as f:
                np.savez_compressed(f, sums=sums.numpy(), detected=detected, key=json.dumps(key))
    ref, p = check.refiner(), check.params()
    theta = truth_theta(p.R[0], p.sigma_R[0], [detected / 2, detected / 2], p.beta[0, :, :ref.L])
    out = compare_estimators(ref, theta, sums, gls=not a.no_gls)
    out["check"] = {k: (v if not dataclasses.is_dataclass(v) else dataclasses.asdict(v))
                    for k, v in dataclasses.asdict(check).items()}
    out["render_s"] = render_s
    cg = f"; conjugate gradients' residual {out['cg_residual']:.1e}" if "gls" in out else ""
    print(f"\n{a.sums} frame sums of {a.frames} frames, {a.camera} camera, R = {check.R}, oversample {a.oversample}; "
          f"ratio = actual / claimed variance (standard error {(2 / (a.sums - 1)) ** 0.5:.2f}){cg}")
    est = [e for e in ("wls", "gls") if e in out]
    print(f"{'parameter':12s} " + " ".join(f"{e + ' ratio':>9s}" for e in est) + " " + " ".join(f"{e + ' sd':>10s}" for e in est))
    for i, n in enumerate(out["wls"]["names"]):
        print(f"{n:12s} " + " ".join(f"{out[e]['ratio'][i]:9.2f}" for e in est) + " "
              + " ".join(f"{out[e]['actual_var'][i] ** 0.5:10.3g}" for e in est))
    if a.fits:
        with tqdm(total=len(sums) // a.fits, desc="fits", unit="fit") as bar:
            out["fits"] = fit_grouped_sums(check, sums, a.fits, progress=bar.update, gls_step=a.gls_step)
        g = out["fits"]
        print(f"\nthe frame-sum fit from the truth on {len(g['fits'])} sums of {g['frames_per_fit']} frames: z rms "
              f"R {g['z_rms_R']:.2f}, sigma_R {g['z_rms_sigma_R']:.2f} (standard error "
              f"{(1 / (4 * len(g['fits']))) ** 0.5:.2f}); R's actual sd per shell "
              + ", ".join(f"{x:.3g}" for x in g["R_actual_sd"]) + " against the mean error bar "
              + ", ".join(f"{x:.3g}" for x in g["R_claimed_sd"]) + " (the first-order claim: "
              + ", ".join(f"{(out['wls']['claimed_var'][i] / a.fits) ** 0.5:.3g}"
                          for i, n in enumerate(out["wls"]["names"]) if n.startswith("R[")) + ")")
        if a.gls_step:
            gs = g["gls"]
            print(f"one GLS step (with the fit's prior) from each fit's optimum: z rms R {gs['z_rms_R']:.2f}, sigma_R {gs['z_rms_sigma_R']:.2f}")
            print(f"{'parameter':12s} {'fit sd':>9s} {'(claimed)':>9s} {'GLS sd':>9s} {'(claimed)':>9s} {'GLS z rms':>9s}")
            for i, n in enumerate(gs["names"]):
                z = gs["gls"]["z_rms"][i]
                print(f"{n:12s} {gs['wls']['actual_sd'][i]:9.3g} {gs['wls']['claimed_sd'][i]:9.3g} "
                      f"{gs['gls']['actual_sd'][i]:9.3g} {gs['gls']['claimed_sd'][i]:9.3g} "
                      + ("        -" if z is None else f"{z:9.2f}"))
    write_json(dest / "frame_sum_covariance.json", out)
    plot(out, dest / "frame_sum_covariance.png")
    print(f"wrote {dest / 'frame_sum_covariance.json'}")
    return 0


if __name__ == "__main__":
    from sevi.cli.policy import run_command

    sys.exit(run_command("frame_sum_covariance", None, main))
