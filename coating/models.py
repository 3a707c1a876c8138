"""The per-cycle coating models' front door: the three kinds, one import for all of them.

Three kinds, one per cleaning cycle (docs/coating.md), each in its own file:

- ``"model1"``, ``"model2"``: MLPs (``coating/mlp.py``): settings -> curves and L*a*b*, and
  sensor std -> curves (the notes' recommendation and diagnosis models);
- ``"greybox"``: the differentiable optics with per-cycle calibrated parameters and a small
  learned residual (``coating/greybox.py``).

Every model predicts with ``model.predict(settings, std, run_in_cycle)`` (tensors ``(B, 10)``,
``(B, 14)``, ``(B,)``; a kind ignores inputs it does not use, and the grey box takes
``std=None`` for a run not yet made) and returns a ``Prediction``: ``R`` ``(B, 2, 81)`` percent
(front, back) and ``lab`` ``(B, 2, 3)``. All tensors are float64 on the CPU (the models are
tiny; float64 keeps L-BFGS and the recommender's gradients clean).

The rest lives by concept: hyperparameters and the Tune search space in ``coating/hparams.py``;
history rows (selection, the time split, tensors) in ``coating/history_rows.py``; the stored
normalisation and ``Prediction`` in ``coating/normaliser.py``; the training loop, refit and
fine-tuning in ``coating/fitting.py``. This module re-exports them, so ``coating.models.fit``
and friends keep working. Registry files (``model.pt``: a state dict of tensors; ``model.json``:
kind and hyperparameters) name no module, so they load whichever file a class lives in.
"""
from __future__ import annotations

from .colour import ciede2000
from .fitting import (FitResult, build_model, build_model_from_state, evaluate, fine_tune, fit, fit_best,
                      refit, run_loss, update_cycle_model)
from .greybox import GreyBox
from .history_rows import concat_rows, rows_to_tensors, select_rows, time_split
from .hparams import DEFAULTS, KINDS, SEARCH_SPACE, resolve_hparams
from .mlp import MLPModel
from .normaliser import DTYPE, N_WL, Normaliser, Prediction

__all__ = ["KINDS", "DEFAULTS", "SEARCH_SPACE", "Normaliser", "Prediction", "MLPModel", "GreyBox",
           "FitResult", "fit", "fit_best", "resolve_hparams", "build_model", "time_split", "select_rows",
           "rows_to_tensors", "evaluate", "fine_tune", "refit", "run_loss", "build_model_from_state",
           "concat_rows", "update_cycle_model", "ciede2000", "DTYPE", "N_WL"]
