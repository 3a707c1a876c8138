"""Calibration of error bars from z-scores (estimate - truth) / sd: their std (1 when calibrated)
and the fractions within 1 and 1.96 sd (68.3 % and 95 % for a normal law), per group of parameters.

The one copy every evaluation tool uses (``tools/eval_refine.py``, ``tools/compare_paths.py``,
``tools/eval_sevi.py``): the 95 % cut-off is the normal quantile 1.959964.
"""

from __future__ import annotations

import numpy as np

Z95 = 1.959964  # two-sided 95 % quantile of the standard normal


def z_calibration(z) -> dict[str, float]:
    """{"z_std", "within_68", "within_95", "n"} of a set of z-scores (any shape; NaNs refused)."""
    z = np.asarray(z, dtype=np.float64).ravel()
    if not np.isfinite(z).all():
        raise ValueError("z_calibration: z-scores must be finite")
    return {"z_std": float(np.std(z)), "within_68": float(np.mean(np.abs(z) <= 1)),
            "within_95": float(np.mean(np.abs(z) <= Z95)), "n": int(z.size)}


def path_calibration(zs: dict[str, list]) -> dict[str, dict[str, dict[str, float]]]:
    """Per path (``tools/compare_paths.py``), the z-scores of its answers pooled over measurements:
    ``zs[path]`` is a list of (beta z-scores (2 * L,), R z-scores (2,)) per measurement. Groups:
    beta_2..6 (the well-measured ones), beta_8..24 and R, each as :func:`z_calibration`."""
    out = {}
    for k, v in zs.items():
        if not v:
            continue
        zb = np.array([b for b, _ in v]).reshape(len(v), 2, -1)
        zr = np.array([r for _, r in v]).ravel()
        groups = {"beta_2..6": zb[:, :, :3], "beta_8..24": zb[:, :, 3:], "R": zr}
        out[k] = {g: z_calibration(z) for g, z in groups.items()}
    return out


def centre_fit_summary(centre_z, d_fitted, d_known) -> dict[str, float]:
    """A fitted image centre against its truth and error bars, and the cost to the answer
    (``sevi.evaluation.centred_course``, ``sevi.evaluation.centred_frames``): ``centre_z`` (n, 2)
    z-scores (x, z), ``d_fitted`` / ``d_known`` (n,) the Distances with the centre fitted and known.
    Returns n, the z rms per axis and in all, the largest |z|, and the Distance ratio of the means,
    its smallest and largest per case."""
    z = np.asarray(centre_z, dtype=np.float64).reshape(-1, 2)
    dc, dk = np.asarray(d_fitted, dtype=np.float64), np.asarray(d_known, dtype=np.float64)
    return {"n": len(z), "z_rms_x": float(np.sqrt((z[:, 0] ** 2).mean())), "z_rms_z": float(np.sqrt((z[:, 1] ** 2).mean())),
            "z_rms": float(np.sqrt((z ** 2).mean())), "z_max": float(np.abs(z).max()),
            "distance_ratio_of_means": float(dc.mean() / dk.mean()),
            "distance_ratio_min": float((dc / dk).min()), "distance_ratio_max": float((dc / dk).max())}
