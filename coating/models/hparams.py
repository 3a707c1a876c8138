"""Hyperparameters of the per-cycle models: defaults, the Tune search space, checked overrides.

``DEFAULTS[kind]`` are a fit's hyperparameters when nothing overrides them; ``SEARCH_SPACE[kind]``
is what ``ray_jobs.coating_tune`` samples; ``resolve_hparams`` merges overrides into the defaults,
refusing unknown keys and wrong types. Plain data: no torch.
"""
from __future__ import annotations

import math
from typing import Mapping

import numpy as np

__all__ = ["KINDS", "DEFAULTS", "SEARCH_SPACE", "resolve_hparams"]

KINDS = ("model1", "model2", "greybox")

# Defaults and Tune search spaces. Each SEARCH_SPACE entry is plain data the Tune job maps to
# ray.tune: ("loguniform", lo, hi), ("uniform", lo, hi), ("choice", [values]), ("randint", lo, hi)
# (hi exclusive). Ranges are what we found sensible on simulated cycles of 20-120 runs.
_MLP_DEFAULTS = {
    "lr": 3e-3,             # Adam learning rate
    "width": 64,            # hidden units per layer
    "depth": 2,             # hidden layers
    "weight_decay": 1e-4,   # AdamW decoupled weight decay
    "epochs": 400,          # full-batch steps (one epoch = one pass = one step)
    "ft_lr": 1e-3,          # fine-tuning on a just-measured run: Adam lr ...
    "ft_steps": 20,         # ... and steps (the notes' "fine-tune on that run")
    "seed": 0,              # weight initialisation
}
DEFAULTS: dict[str, dict] = {
    "model1": dict(_MLP_DEFAULTS),
    "model2": dict(_MLP_DEFAULTS),
    "greybox": {
        "lr": 1.0,              # L-BFGS step scale (strong-Wolfe line search picks the step)
        "epochs": 12,           # outer L-BFGS iterations; each is ``inner_steps`` L-BFGS steps
        "inner_steps": 20,
        "width": 16,            # residual MLP (settings, run -> curves); width 0 disables it
        "depth": 1,
        "weight_decay": 1e-2,   # L2 on the residual MLP's weights (per run of data)
        "sigma_R": 0.05,        # % reflectance: noise scale of a curve point in the likelihood
        # Priors (standard deviations) = regularisation strengths of the calibrated parameters.
        "tooling_sd": 0.05,     # log tooling per adjustable layer and side, around recipe/settings
        "trend_sd": 3e-4,       # linear drift of log tooling per run (common to all layers)
        "walk_sd": 1.5e-3,      # per-run random walk of log tooling (common), a latent per run
        "run_scale_sd": 5e-3,   # per-run, per-side common thickness error, a latent per run
        "gain_sd": 0.03,        # monitor gain: rel. thickness error per unit of (std/mean - 1)
        "index_sd": 0.01,       # real-index offsets of SiO2 and ZrO2
        "index_drift_sd": 0.01, # their linear drift per 100 runs of the cycle
        "free_gains": True,     # which calibrated groups are free (False: held at 0)
        "free_index": True,
        "free_drift": True,     # tooling trend and index drift
        "ft_tooling_sd": 5e-4,  # fine-tuning on new runs: anchor of the per-layer tooling ...
        "ft_index_sd": 2e-3,    # ... of the index offsets ...
        "ft_walk_sd": 2.5e-3,   # ... and of the walk's first step (walk_sd + its uncertainty)
        "plan_tooling_sd": 0.0, # robust design: uncertainty of the planned run's log tooling, per layer ...
        "plan_walk_sd": 0.0,    # ... and common to all layers (the walk's next step and its estimate)
        "angle_deg": 8.0,       # the spectrophotometer's angle of incidence (plant: 8 degrees)
        "seed": 0,
    },
}
_MLP_SPACE = {
    "lr": ("loguniform", 3e-4, 3e-2),
    "width": ("choice", [16, 32, 64, 128]),
    "depth": ("randint", 1, 4),
    "weight_decay": ("loguniform", 1e-6, 1e-1),
    "epochs": ("choice", [200, 400, 800]),
}
SEARCH_SPACE: dict[str, dict] = {
    "model1": dict(_MLP_SPACE),
    "model2": dict(_MLP_SPACE),
    "greybox": {
        "lr": ("uniform", 0.3, 1.0),
        "width": ("choice", [0, 8, 16, 32]),
        "depth": ("randint", 1, 3),
        "weight_decay": ("loguniform", 1e-3, 1.0),
        "epochs": ("choice", [6, 12, 20]),
        "walk_sd": ("loguniform", 5e-4, 1e-2),
        "run_scale_sd": ("loguniform", 1e-3, 1.5e-2),
        "gain_sd": ("loguniform", 1e-2, 1e-1),
        "index_sd": ("loguniform", 2e-3, 3e-2),
        "free_gains": ("choice", [True, False]),
        "free_index": ("choice", [True, False]),
        "free_drift": ("choice", [True, False]),
    },
}


def resolve_hparams(model_kind: str, hparams: Mapping | None) -> dict:
    """The kind's defaults overridden by ``hparams``; unknown keys and wrong types refused."""
    if model_kind not in KINDS:
        raise ValueError(f"unknown model kind {model_kind!r}; expected one of {KINDS}")
    out = dict(DEFAULTS[model_kind])
    for k, v in dict(hparams or {}).items():
        if k not in out:
            raise ValueError(f"{model_kind}: unknown hyperparameter {k!r}; known: {sorted(out)}")
        d = out[k]
        if isinstance(d, bool):
            if not isinstance(v, (bool, np.bool_)):
                raise ValueError(f"{model_kind}: hyperparameter {k!r} must be a bool, got {v!r}")
            v = bool(v)
        elif isinstance(d, int):
            if isinstance(v, bool) or not float(v).is_integer():
                raise ValueError(f"{model_kind}: hyperparameter {k!r} must be an integer, got {v!r}")
            v = int(v)
        else:
            v = float(v)
            if not math.isfinite(v):
                raise ValueError(f"{model_kind}: hyperparameter {k!r} must be finite, got {v!r}")
        out[k] = v
    return out
