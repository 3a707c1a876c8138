"""Fit every cleaning cycle's models locally and sequentially (no Ray), into the registry.

``ray_jobs/coating_tune.py`` runs one Tune sweep per cycle around ``coating.models.fitting.fit``; this
is the plain path used by tests and the closed-loop tool, and the reference the sweep must
agree with.
"""
from __future__ import annotations

from typing import Iterable, Mapping

import numpy as np

from coating.line.history_rows import time_split
from coating.line.schema import History
from coating.models import registry
from coating.models.fitting import fit
from coating.models.hparams import KINDS

__all__ = ["fit_all"]


def fit_all(history: History, models_dir, kinds: Iterable[str] = ("greybox", "model1", "model2"),
            hparams: Mapping[str, Mapping] | None = None, cycles: Iterable[int] | None = None,
            val_fraction: float = 0.2, min_runs: int = 8, log=print) -> dict:
    """Fit ``kinds`` for every cycle of ``history`` (or ``cycles``) on a time split (the latest
    ``val_fraction`` of each cycle's runs validate), save each to the registry.

    ``hparams``: kind -> overrides of ``coating.models.hparams.DEFAULTS[kind]``. Cycles with fewer than
    ``min_runs`` runs are skipped (logged). Returns ``{(cycle_id, kind): metrics}``.
    """
    hparams = dict(hparams or {})
    unknown = set(hparams) - set(KINDS)
    if unknown:
        raise ValueError(f"hparams for unknown model kinds {sorted(unknown)}; kinds: {KINDS}")
    todo = sorted(set(int(c) for c in history.cycle_id)) if cycles is None else [int(c) for c in cycles]
    out = {}
    for c in todo:
        n = int(np.sum(history.cycle_id == c))
        if n < min_runs:
            log(f"cycle {c}: {n} runs, fewer than {min_runs}; skipped")
            continue
        train, val = time_split(history, c, val_fraction)
        for kind in kinds:
            res = fit(kind, hparams.get(kind), train, val)
            registry.save_fit(models_dir, c, res, train)
            out[(c, kind)] = res.metrics
            log(f"cycle {c} {kind}: " + ", ".join(f"{k} {v:.4g}" for k, v in res.metrics.items()))
    return out
