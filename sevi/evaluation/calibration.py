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
