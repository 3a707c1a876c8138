"""``sevi analyze --centre fit`` measured on frame sums whose centre is off by a known amount.

The measurements of ``tools/frames_to_limit.py`` (``sevi.evaluation.frames_benchmark``; their frame
sums cached in its OUT/cache) are shifted by a whole number of camera pixels on each axis (uniform in
``-max_offset .. max_offset``, one draw per measurement from ``seed``): ``np.roll`` of the frame sum,
whose wrapped edge holds only background (the rings lie inside R <= 0.9 plus a few spot widths, 51
pixels from the edge at 1024^2), so the shifted sum is a frame sum of the shifted measurement. Each is
answered as ``sevi analyze --centre fit`` answers it (``sevi.pipeline.image_answer.answer_images``
with ``fit_centre``: the regressor on the shifted image, then ``sevi.fit.centred_frame_sum_fit``), and
compared with the truth's centre (z-scores: error / its error bar) and with the known-centre answer
of the unshifted sum (the row's ``direct``, the same frames).
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import torch

from sevi.evaluation.calibration import centre_fit_summary

__all__ = ["evaluate_centred_frames", "summarise_centred_frames"]


def evaluate_centred_frames(rows: list[dict], measurements, cache: Path, model, cfg, device, max_offset: int,
                            seed: int = 0, progress: bool = True) -> list[dict]:
    """One row per measurement (``rows`` from frames_to_limit.json, ``measurements`` the matching
    ``Measurement``s): the shift, the fitted centre and its sd (frame pixels), z, the Distances of the
    centred answer and of the known-centre one, the fit's wall time and diagnostics."""
    from tqdm import tqdm

    from sevi.camera.direct_image import direct_image
    from sevi.evaluation.frames_benchmark import render_measurement
    from sevi.fit.direct_fit import REFINE_GRID
    from sevi.physics.metric import distance
    from sevi.pipeline.image_answer import answer_images

    rng = np.random.default_rng(seed)
    out = []
    for row, m in tqdm(list(zip(rows, measurements)), desc="measurements", unit="measurement",
                       disable=None if progress else True):
        shift = rng.integers(-max_offset, max_offset + 1, 2)
        if not (Path(cache) / f"{m.key}.npz").exists():
            raise ValueError(f"{cache}: no cached frame sum for {m.key}; run tools/frames_to_limit.py there first")
        rendered = render_measurement(m, device, cache=cache)
        S = np.roll(rendered["frame_sum"], tuple(shift), axis=(0, 1)).astype(np.float64)
        nf = m.n_frames
        t0 = time.perf_counter()
        res = answer_images(model, cfg, [(0, direct_image(S, nf, cfg.data.grid)[None])], device, source=m.key,
                            fit_images=[direct_image(S, nf, REFINE_GRID)], n_frames=nf, fit_centre=True)
        wall = time.perf_counter() - t0
        G = rendered["frame_sum"].shape[0]
        truth = (G - 1) / 2 + shift.astype(float)
        c, sd = res.diagnostics["centre"][0], res.diagnostics["centre_sd"][0]
        beta = torch.as_tensor(m.params.beta[0]).double()[None]
        out.append({"index": m.index, "kind": m.kind, "separation": row["separation"], "shift": shift.tolist(),
                    "centre": c.tolist(), "centre_sd": sd.tolist(), "centre_z": ((c - truth) / sd).tolist(),
                    "d_centred": float(distance(torch.as_tensor(res.answer["beta"]), beta)[0]),
                    "d_known": float(row["direct"]), "wall_s": wall,
                    "chi2_dof": float(res.diagnostics["chi2_dof"][0]),
                    "converged": bool(res.diagnostics["converged"][0])})
    return out


def summarise_centred_frames(rows: list[dict]) -> dict:
    """The centre's calibration and the Distance ratios (``centre_fit_summary``), and this study's own figures."""
    own = {
        "centre_sd_median_px": float(np.median([r["centre_sd"] for r in rows])),
        "wall_s_median": float(np.median([r["wall_s"] for r in rows])),
        "all_converged": bool(all(r["converged"] for r in rows))}
    return centre_fit_summary([r["centre_z"] for r in rows], [r["d_centred"] for r in rows],
                              [r["d_known"] for r in rows]) | own
