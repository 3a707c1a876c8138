"""From camera frames to the information limit: measurements rendered and summed on the fly, each
answered by the default path of ``sevi analyze`` (the direct path: the frame sum, the regressor, the
frame-sum fit with the camera's response) and compared with perfect centroiding and the floor.

Per measurement (``Measurement``: a two-shell parameter set and a frame count):

* **frames**: ``sevi.camera.frame_renderer.accumulate_frames`` renders the frames chunk by chunk with
  the course's camera and keeps only their sum and the detected hits (never the frames);
* **direct**: ``sevi.pipeline.image_answer.answer_images`` on the direct image (the model's grid for
  the regressor, 256^2 for the fit), exactly as ``sevi analyze`` runs it; and the same fit started
  from the truth, to see whether the regressor started it in the right optimum ("landed": the two
  end within half a unit of log posterior);
* **perfect centroiding** (the oracle): the count image of the detected hits at 1024^2 fitted by the
  count-image refinement (``sevi.fit.count_fit``) from the truth: what centroiding without loss
  would give;
* **floor**: the Bayesian floor of that count image (``sevi.physics.information``), at 512^2.

Measurements are drawn from the notes' prior (seed ``10^9 + seed + i``: held out from every training
stream) in three kinds, in turn: ``prior`` (as drawn), ``crowded`` (both radii in 0.33-0.42, where
tens of spots share a ring per frame and the camera saturates) and ``overlapping`` (|R1 - R2| <
0.03). Electrons per shell: the course's 1.8-2.5 million per 50,000 frames, in proportion to the
frames (~77 detected spots per frame).
"""

from __future__ import annotations

import dataclasses
import math
import time
from pathlib import Path

import numpy as np
import torch

from sevi.evaluation.held_out import HELD_OUT_OFFSET
from sevi.fit.estimators import DEFAULT_ESTIMATOR
from sevi.physics.prior import Prior, PriorConfig, ShellParams

__all__ = ["KINDS", "COURSE_FRAMES", "Measurement", "draw_measurements", "render_measurement", "evaluate_measurement",
           "frame_sum_floors", "summarise"]

KINDS = ("prior", "crowded", "overlapping")
COURSE_FRAMES = 50_000  # the course's measurement: 50,000 frames of 1.8-2.5e6 electrons per shell
CROWDED_R = (0.33, 0.42)  # both shells here: the camera saturates where spots pile up on the rings
OVERLAP = 0.03  # |R1 - R2| below which shells overlap (sevi.physics.metric.SEPARATION)


@dataclasses.dataclass(frozen=True)
class Measurement:
    """One simulated measurement: its parameters (one set, electrons emitted per shell), frames, kind."""
    index: int
    kind: str
    params: ShellParams
    n_frames: int
    seed: int

    @property
    def key(self) -> str:
        return f"m{self.index:03d}_{self.kind}_{self.n_frames}f_s{self.seed}"


def draw_measurements(n: int, frames: tuple[int, int], seed: int = 0, kinds=KINDS) -> list[Measurement]:
    """``n`` measurements of ``frames`` = (low, high) frames each (uniform integers), kinds in turn."""
    out = []
    for i in range(n):
        s = HELD_OUT_OFFSET + seed + i
        rng = np.random.default_rng(s)
        kind = kinds[i % len(kinds)]
        nf = int(rng.integers(frames[0], frames[1] + 1))
        base = PriorConfig().with_electrons(int(1_800_000 * nf / COURSE_FRAMES), int(2_500_000 * nf / COURSE_FRAMES))
        if kind == "crowded":
            base = dataclasses.replace(base, radius_range=CROWDED_R)
        p = Prior(base)(1, s).params
        R = p.R.clone()
        if kind == "overlapping":
            r1 = float(rng.uniform(0.3, 0.9 - OVERLAP))
            R = torch.tensor([[r1, r1 + float(rng.uniform(0.004, OVERLAP))]], dtype=torch.float64)
        out.append(Measurement(i, kind, ShellParams(R, p.sigma_R, p.beta, p.n_electrons), nf, s))
    return out


def render_measurement(m: Measurement, device, cache: Path | None = None, progress: bool = False,
                       batches: int = 0) -> dict:
    """{"frame_sum" (1024, 1024) int64, "x", "z" detected hits, "render_s"}, and with ``batches`` the
    sums of that many contiguous batches of the frames (at most one frame each) at 256^2 ("batch_sums" (K, 256, 256), "batch_frames"
    (K,); ``sevi.camera.frame_batches``); read from / written to ``cache/<key>.npz`` when given (rendering
    50,000 frames takes minutes). A cached file without the batches asked for is rendered again (the
    same frames: the same seed)."""
    from sevi.camera.frame_renderer import FrameRenderer, accumulate_frames
    from sevi.fit.direct_fit import REFINE_GRID
    from sevi.io.atomic import atomic_path

    batches = min(batches, m.n_frames)  # at most one frame each
    path = cache / f"{m.key}.npz" if cache is not None else None
    if path is not None and path.exists():
        with np.load(path) as f:
            got = {k: f[k] for k in f.files}
        if not batches or len(got.get("batch_frames", ())) == batches:
            return got | {"cached": True}
    gen = torch.Generator(device=torch.device(device)).manual_seed(m.seed)
    t0 = time.perf_counter()
    fs = accumulate_frames(FrameRenderer(device=device), m.params, m.n_frames, generator=gen, progress=progress,
                           batches=batches, batch_grid=REFINE_GRID)
    out = {"frame_sum": fs.frame_sum, "x": fs.x, "z": fs.z, "render_s": np.float64(time.perf_counter() - t0)}
    if batches:  # int32 holds a batch's 256^2 block sums (255 * 16 * frames per batch)
        out |= {"batch_sums": fs.batch_sums.astype(np.int32), "batch_frames": fs.batch_frames}
    if path is not None:
        with atomic_path(path) as tmp:
            with open(tmp, "wb") as f:
                np.savez_compressed(f, **out)
    return out | {"cached": False}


def evaluate_measurement(m: Measurement, rendered: dict, model, cfg, device, truth_start: bool = True,
                         oracle: bool = True, floor: bool = True, estimator: str = DEFAULT_ESTIMATOR,
                         batches: bool = False) -> dict:
    """Every figure of one measurement (module docstring): Distances, z-scores, fits' diagnostics, times.
    ``estimator``: the direct path's answer (``sevi.fit.frame_sum_fit``: "wls" or "gls"); ``batches``:
    its error bars from the spread of ``rendered``'s batches of frames (``sevi.fit.batch_spread``), as
    `sevi analyze --batches` gives them, else the model's."""
    import warnings

    from sevi.camera.direct_image import batch_images, direct_image
    from sevi.fit.count_fit import FitConfig, Refiner
    from sevi.fit.direct_fit import REFINE_GRID, direct_noise
    from sevi.fit.frame_sum_fit import FrameSumRefiner
    from sevi.physics.metric import distance
    from sevi.pipeline.image_answer import answer_images
    from sevi.regressor.batches import prior_config

    R, s, beta = m.params.R[0].numpy(), m.params.sigma_R[0].numpy(), m.params.beta[0].numpy()
    truth_beta = torch.as_tensor(beta)[None]
    prior = prior_config(cfg)
    S = rendered["frame_sum"].astype(np.float64)
    nf = m.n_frames
    out = {"index": m.index, "kind": m.kind, "frames": nf, "seed": m.seed, "R": R.tolist(), "sigma_R": s.tolist(),
           "separation": float(abs(R[1] - R[0])), "detected": int(len(rendered["x"])),
           "brightest_per_frame": float(S.max() / nf), "render_s": float(rendered.get("render_s", math.nan)),
           "estimator": estimator, "error_bars": f"batches {len(rendered['batch_frames'])}" if batches else "model"}
    fit_batches = None
    if batches:
        fit_batches = [(batch_images(rendered["batch_sums"], rendered["batch_frames"], REFINE_GRID),
                        rendered["batch_frames"])]
    # the direct path, as sevi analyze runs it
    t0 = time.perf_counter()
    with warnings.catch_warnings(record=True):
        res = answer_images(model, cfg, [(0, direct_image(S, nf, cfg.data.grid)[None])], device,
                            source=m.key, fit_images=[direct_image(S, nf, REFINE_GRID)], n_frames=nf,
                            estimator=estimator, fit_batches=fit_batches)
    out["direct_s"] = time.perf_counter() - t0
    a, d = res.answer, res.diagnostics
    out["regressor"] = float(distance(torch.as_tensor(res.regressor["beta"]), truth_beta)[0])
    out["direct"] = float(distance(torch.as_tensor(a["beta"]), truth_beta)[0])
    out["direct_chi2_dof"] = float(d["chi2_dof"][0])
    out["direct_converged"] = bool(d["converged"][0])
    out["direct_log_posterior"] = float(d["log_posterior"][0])
    out["z_beta"] = ((a["beta"][0] - beta) / a["beta_sd"][0]).tolist()
    out["z_R"] = ((a["R"][0] - R) / a["R_sd"][0]).tolist()
    out["z_sigma_R"] = ((a["sigma_R"][0] - s) / a["sigma_R_sd"][0]).tolist()
    if truth_start:  # the same fit from the truth: did the regressor start it in the right optimum?
        ref = FrameSumRefiner(FitConfig(fit_grid=REFINE_GRID), prior, device, direct_noise(nf, REFINE_GRID))
        ft = ref(direct_image(S, nf, REFINE_GRID), R, s, beta, np.full(2, 0.005))
        out["direct_truth_start"] = float(distance(torch.as_tensor(ft.beta)[None], truth_beta)[0])
        out["landed"] = bool(out["direct_log_posterior"] >= ft.log_posterior - 0.5)
    if oracle:  # perfect centroiding: the detected hits' count image, fitted from the truth
        t0 = time.perf_counter()
        counts = np.histogram2d(rendered["x"], rendered["z"], bins=1024, range=[[-1, 1], [-1, 1]])[0]
        fo = Refiner(FitConfig(fit_grid=512), prior, device)(counts, R, s, beta, np.full(2, 0.005))
        out["oracle"] = float(distance(torch.as_tensor(fo.beta)[None], truth_beta)[0])
        out["oracle_s"] = time.perf_counter() - t0
    if floor:
        out.update(frame_sum_floors(m, out["detected"], prior, device))
        from sevi.physics.forward import ExpectedImage, ForwardConfig
        from sevi.physics.information import (
            fisher_information,
            image_floors,
            prior_precision,
        )

        fm = ExpectedImage(ForwardConfig(grid=512, n_terms=prior.n_terms), device)
        share = out["detected"] / float(m.params.n_electrons.sum())
        F = fisher_information(fm, m.params.R[0], m.params.sigma_R[0],
                               m.params.n_electrons[0].double() * share, m.params.beta[0])
        out["floor_bayes"] = image_floors(F.cpu(), prior_precision(prior, prior.n_terms), prior.n_terms,
                                          1.0, seed=m.index)["bayes"]
    return out


def frame_sum_floors(m: Measurement, detected: int, prior: PriorConfig, device) -> dict:
    """The frame-sum fit's own floor for measurement ``m`` with ``detected`` hits: the Bayesian floor
    (Distance, as ``floor_bayes``) of the fit's Godambe information at the truth
    (``sevi.fit.frame_sum_information``, 'wls'), i.e. what this estimator reaches on average there;
    ``fit_floor``. Needs only the parameters, not the rendered frames."""
    from sevi.fit.count_fit import FitConfig
    from sevi.fit.direct_fit import REFINE_GRID, direct_noise
    from sevi.fit.frame_sum_fit import FrameSumRefiner
    from sevi.fit.frame_sum_information import linear_estimators, truth_theta
    from sevi.physics.information import image_floors, prior_precision

    ref = FrameSumRefiner(FitConfig(fit_grid=REFINE_GRID), prior, device, direct_noise(m.n_frames, REFINE_GRID))
    share = detected / float(m.params.n_electrons.sum())
    theta = truth_theta(m.params.R[0], m.params.sigma_R[0], m.params.n_electrons[0].double() * share,
                        m.params.beta[0, :, :ref.L])
    info = linear_estimators(ref, theta, gls=False)["wls"]["information"]
    return {"fit_floor": image_floors(info.cpu(), prior_precision(prior, ref.L), ref.L, 1.0, seed=m.index)["bayes"]}


def summarise(rows: list[dict]) -> dict:
    """Medians, the ratio of medians to perfect centroiding, the worst per-measurement ratio, per kind and
    in all (with the frame-sum fit's own floor where the rows have it: ``frame_sum_floors``); the direct
    answers' calibration (z-scores of beta_2..6, beta_8..24, R, sigma_R)."""
    from sevi.evaluation.calibration import z_calibration
    from sevi.pipeline.image_answer import MISFIT_CHI2

    def stats(rs):
        if not rs:
            return None
        d = np.array([r["direct"] for r in rs])
        o = np.array([r.get("oracle", math.nan) for r in rs])
        f = np.array([r.get("floor_bayes", math.nan) for r in rs])
        out = {"n": len(rs), "direct_median": float(np.median(d)), "direct_mean": float(d.mean()),
               "regressor_median": float(np.median([r["regressor"] for r in rs])),
               "oracle_median": float(np.median(o)), "floor_median": float(np.median(f)),
               "ratio_of_medians": float(np.median(d) / np.median(o)),
               "worst_ratio": float(np.max(d / o)), "flagged": int(sum(r["direct_chi2_dof"] > MISFIT_CHI2 for r in rs)),
               "not_converged": int(sum(not r["direct_converged"] for r in rs))}
        if all("fit_floor" in r for r in rs):  # the frame-sum fit's own floor (frame_sum_floors)
            ff = np.array([r["fit_floor"] for r in rs])
            out.update({"fit_floor_median": float(np.median(ff)), "direct_over_fit_floor_median": float(np.median(d / ff)),
                        "worst_ratio_to_fit_floor": float(np.max(d / ff)), "fit_floor_over_floor_max": float(np.max(ff / f))})
        if all("landed" in r for r in rs):
            out["landed"] = float(np.mean([r["landed"] for r in rs]))
        return out

    def calibration(rs):
        if not rs:
            return None
        zb = np.array([r["z_beta"] for r in rs])  # (n, 2, L)
        groups = {"beta_2..6": zb[:, :, :3], "beta_8..24": zb[:, :, 3:], "R": np.array([r["z_R"] for r in rs]),
                  "sigma_R": np.array([r["z_sigma_R"] for r in rs])}
        return {g: z_calibration(z) for g, z in groups.items()}

    # The answer file names a fit whose chi^2/dof exceeds MISFIT_CHI2 as a misfit: its error bars are
    # not claimed, so the calibration is given over all fits and over the fits not so named. A third
    # group, a diagnosis rather than a claim: the unflagged fits whose shells lie at least one camera
    # spot sigma apart (FrameModel.sigma_mean, 0.015 detector units); closer, the frame sum blurs the
    # two rings into one and the betas' posterior is far from the Gaussian the error bars assume.
    from sevi.camera.frames import FrameModel

    unflagged = [r for r in rows if r["direct_chi2_dof"] <= MISFIT_CHI2]
    spot = FrameModel().sigma_mean
    return {"all": stats(rows), **{k: stats([r for r in rows if r["kind"] == k]) for k in KINDS},
            "calibration": calibration(rows),
            "calibration_unflagged": calibration(unflagged),
            "calibration_unflagged_resolved": calibration([r for r in unflagged if r["separation"] >= spot])}
