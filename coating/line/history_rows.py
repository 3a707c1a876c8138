"""Rows of a plant history as the models use them: selection, concatenation, the time split, tensors.

A ``schema.History`` holds one row per furnace run; these functions select and join rows without
copying column by column by hand, split a cycle into training and validation by time (never at
random) and turn rows into the float64 tensors the models take.
"""
from __future__ import annotations

import dataclasses

import numpy as np
import torch

from coating.line.schema import History

__all__ = ["select_rows", "concat_rows", "time_split", "rows_to_tensors"]


def select_rows(history: History, mask) -> History:
    """The rows of ``history`` where ``mask`` (bool array or index array) selects, in order."""
    idx = np.arange(len(history))[np.asarray(mask)] if np.asarray(mask).dtype == bool else np.asarray(mask)
    return History(**{f.name: getattr(history, f.name)[idx] for f in dataclasses.fields(History)})


def concat_rows(*histories: History) -> History:
    """The rows of several ``History`` objects, one after the other."""
    return History(**{f.name: np.concatenate([getattr(h, f.name) for h in histories])
                      for f in dataclasses.fields(History)})


def time_split(history: History, cycle_id: int, val_fraction: float = 0.2,
               min_val: int = 2) -> tuple[History, History]:
    """(train, val) of one cycle: val is the latest ``val_fraction`` of its runs (by
    ``run_in_cycle``), at least ``min_val``; never a random split."""
    idx = np.flatnonzero(history.cycle_id == cycle_id)
    if len(idx) < min_val + 3:
        raise ValueError(f"cycle {cycle_id}: {len(idx)} runs; need at least {min_val + 3} to fit and validate")
    idx = idx[np.argsort(history.run_in_cycle[idx], kind="stable")]
    n_val = max(min_val, int(round(val_fraction * len(idx))))
    return select_rows(history, idx[:-n_val]), select_rows(history, idx[-n_val:])


def rows_to_tensors(rows: History) -> dict[str, torch.Tensor]:
    """``settings (N, 10)`` nm, ``std (N, 14)``, ``R (N, 2, 81)`` %, ``lab (N, 2, 3)``,
    ``run (N,)`` run_in_cycle, all float64."""
    t = lambda a: torch.as_tensor(np.asarray(a, dtype=np.float64))  # noqa: E731
    return {"settings": t(rows.settings), "std": t(rows.std),
            "R": torch.stack([t(rows.R_F), t(rows.R_B)], dim=1),
            "lab": torch.stack([t(rows.lab_F), t(rows.lab_B)], dim=1), "run": t(rows.run_in_cycle)}
