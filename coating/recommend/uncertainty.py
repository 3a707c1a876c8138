"""How sure a recommendation is: the next run's dE00 (front, back) as the cycle model sees it,
with a 90 % interval, and the reasons to treat a recommendation with care.

**The interval.** The grey box predicts the next run's colour from the recommended settings;
what it cannot know is the run's own deposition error and how far the machine moves before the
run. Both are drawn (``interval_draws``): the run's own errors (the sensor-linked layer errors
through the monitor gains, drawn from the cycle's own runs, and the per-side rate error of the
model's fitted spread, both scaled by ``noise_scale``), a common log-tooling step of
``tooling_scale * walk_sd * sqrt(k)`` for a run ``k`` runs after the cycle's last measured one
(the model's own walk prior), and optionally an error of each adjustable layer's log tooling of
``layer_scale * walk_sd``. The next run's dE00 of each draw against the standard gives per side
a median and the 5 % and 95 % quantiles; the lower end is multiplied by ``lower_factor`` (the
model's own noise-free offset is uncertain too: the draws' 5 % quantile left 8 % of measured
runs below it at every scale tried). The scales and the factor are calibrated in closed loop
(``RecommendConfig.interval_tooling_scale``, ``interval_layer_scale``, ``interval_noise_scale``,
``interval_lower_factor``; the calibration and the coverage measured on other plants:
BENCHMARKS.md, "How sure"). Seeded (common random numbers), so the same plan gives the same
interval.

**Care.** A recommendation is flagged (``care_flags``) when

- ``few_runs``: the cycle model was brought up to date on fewer than ``min_runs`` runs (just
  after a cleaning: its calibration is mostly prior);
- ``unseen_settings``: a recommended setting lies outside the range the cycle's runs have used
  by more than the spread (standard deviation) of that setting over those runs (the model
  extrapolates; within a step of the latest run's settings, as every plan is, counts as seen
  unless the cycle has barely moved);
- ``far_ahead``: the run is more than ``max_ahead`` runs after the cycle's last measured run
  (the model extrapolates the machine's drift; the interval widens as ``sqrt(k)``);
- ``interval_wider_than_gain``: the 90 % interval of the predicted **gain** reaches zero. The gain
  is the next run's dE00 with the current settings minus its dE00 with the recommended ones,
  summed over both sides; its interval (``Gain``) comes from the same draws, each draw of the
  run's errors and the machine's step applied to both settings (common random numbers: what
  the two runs would share cancels, and what is left is what the model cannot tell about the
  change itself). Its lower end at or below zero means the gain is smaller than the interval's
  lower half: the model cannot say at 95 % that the change helps. The share of draws with a
  negative gain (``Gain.p_worse``) is the model's chance that the change makes the run worse
  than keeping the settings: graded where the flag is yes or no, and checked against the realised
  gain in closed loop.

  (Rounds before this one compared the next run's own interval with the gain. That interval is
  mostly the run's own deposition error, which the change does not touch.) Measured in closed
  loop (BENCHMARKS.md, "How sure"): on a settled cycle the gain's interval reaches zero for 99 %
  of plans, and rightly: a third of those plans made the run worse than keeping the settings
  would have, though on average they helped. ``p_worse`` is right on average there (40 %
  predicted, 34 % realised) but hardly tells plans apart (Brier skill +0.006).

torch is imported inside the functions, so the report (``coating.recommend.report``) reads
``CARE_TEXT`` and ``Interval`` without it.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

__all__ = ["Interval", "Gain", "CARE_TEXT", "interval_draws", "predict_interval", "care_flags"]

CARE_TEXT = {
    "few_runs": "few runs in the cycle",
    "unseen_settings": "settings outside the range the cycle has run",
    "far_ahead": "a run far after the cycle's last measured run",
    "interval_wider_than_gain": "the predicted gain's 90 % interval reaches zero (the change may not help)",
}


@dataclass(frozen=True)
class Gain:
    """The predicted gain of the recommended settings over the current ones: the next run's
    dE00 with the current settings minus with the recommended, summed over both sides, under
    common draws: ``median``, ``lo``, ``hi`` (floats; ``level`` 0.9: the 5 % and 95 %
    quantiles). Positive: the change helps. ``p_worse``: the share of draws in which the change
    makes the run worse than keeping the settings (gain < 0), the model's chance of it."""
    median: float
    lo: float
    hi: float
    level: float
    p_worse: float


@dataclass(frozen=True)
class Interval:
    """The next run's dE00 under the model's uncertainty: ``median``, ``lo``, ``hi`` (2,) front,
    back; ``level`` (0.9: ``lo``/``hi`` the 5 % and 95 % quantiles); ``draws``; ``gain``: the
    predicted gain over the current settings on the same draws (``Gain``; None unless
    ``predict_interval`` was given ``current``)."""
    median: np.ndarray
    lo: np.ndarray
    hi: np.ndarray
    level: float
    draws: int
    gain: Gain | None = None

    def width(self) -> np.ndarray:
        return self.hi - self.lo

    def covers(self, dE00) -> np.ndarray:
        """(2,) bools: the measured ``dE00`` (front, back) inside the interval."""
        d = np.asarray(dE00, dtype=float)
        return (d >= self.lo) & (d <= self.hi)


def _scales(tooling_scale, layer_scale, noise_scale):
    """``[(common, layer, noise), ...]`` and whether one was given: a number is the common scale
    (the others as given), a tuple ``(common[, layer[, noise]])``."""
    if np.ndim(tooling_scale) == 0:
        return [(float(tooling_scale), float(layer_scale), float(noise_scale))], True
    out = []
    for t in tooling_scale:
        t = (t,) if np.ndim(t) == 0 else tuple(t)
        full = t + (layer_scale, noise_scale)[len(t) - 1:]
        out.append(tuple(float(v) for v in full[:3]))
    return out, False


def interval_draws(model, n: int, tooling_scale, seed: int = 7, steps: int = 1, layer_scale: float = 0.0,
                   z_pool=None, noise_scale: float = 1.0):
    """``n`` draws of what the model cannot know about the next run: ``(z, u, dlog)`` for
    ``GreyBox.predict_draws``. ``z``, ``u``: the run's own errors (``noise_draws``);
    ``dlog`` (n, 10): a common log-tooling step ``N(0, steps * (c * walk_sd)^2)`` (``steps``
    runs of the walk) plus an error per adjustable layer ``N(0, (l * walk_sd)^2)``, for
    ``c = tooling_scale`` and ``l = layer_scale``; ``z`` and ``u`` times ``noise_scale``.
    ``tooling_scale`` may also be a sequence of numbers or ``(c[, l[, noise]])`` tuples: then
    ``z``, ``u`` and ``dlog`` are lists, one per entry, on the same underlying draws. Antithetic, as ``noise_draws``. ``z_pool`` (N, 14): the sensor-linked errors of the
    cycle's runs (``GreyBox.z_of`` of their std values): ``z`` is drawn from them (with
    replacement) instead of ``N(0, z_sd^2)``; the spread of a sensor's std is skewed (a few
    runs far above the median), and the Gaussian left the measured dE00 of quiet runs below the
    interval."""
    import torch
    DTYPE = torch.float64
    z, u, _ = model.noise_draws(n, seed)
    if z_pool is not None and len(z_pool):
        pool = torch.as_tensor(np.asarray(z_pool, dtype=np.float64))
        z = pool[torch.as_tensor(np.random.default_rng(int(seed) + 2).integers(0, len(pool), n))]
    g = torch.Generator().manual_seed(int(seed) + 1)
    m = (n + 1) // 2
    e = torch.randn(m, 1, generator=g, dtype=DTYPE)
    e = torch.cat([e, -e])[:n].expand(n, 10)
    el = torch.randn(m, 10, generator=g, dtype=DTYPE)
    el = torch.cat([el, -el])[:n]
    walk = float(model.hparams["walk_sd"])
    ahead = float(np.sqrt(max(int(steps), 1)))
    scales, single = _scales(tooling_scale, layer_scale, noise_scale)
    zs = [z * r for _, _, r in scales]
    us = [u * r for _, _, r in scales]
    dlogs = [walk * (c * ahead * e + lay * el) for c, lay, _ in scales]
    return (zs[0], us[0], dlogs[0]) if single else (zs, us, dlogs)


def predict_interval(model, settings, run_in_cycle, standard, tooling_scale, draws: int = 256,
                     level: float = 0.9, seed: int = 7, steps: int = 1, layer_scale: float = 0.0, z_pool=None,
                     noise_scale: float = 1.0, lower_factor: float = 1.0, current=None):
    """The next run's dE00 (front, back) of ``settings`` (10,) under ``draws`` draws of
    ``interval_draws`` (``steps``: runs since the cycle's last measured run): an ``Interval``
    (or a list of them, one per entry, when ``tooling_scale`` is a sequence of numbers or
    ``(common[, layer[, noise]])`` tuples). ``lower_factor``: the lower end times this (see the
    module docstring). ``current`` (10,): also the predicted gain over these settings
    (``Interval.gain``, on the same draws). None for a model without a noise model (model1)."""
    if not hasattr(model, "noise_draws") or draws < 2:
        return None
    import torch

    from coating.optics.colour import ciede2000
    DTYPE = torch.float64
    z, u, dlogs = interval_draws(model, draws, tooling_scale, seed, steps, layer_scale, z_pool, noise_scale)
    single = not isinstance(dlogs, list)
    if single:
        z, u, dlogs = [z], [u], [dlogs]
    rows = [settings] if current is None else [settings, current]
    x = torch.as_tensor(np.asarray(rows, dtype=np.float64)).reshape(len(rows), 10)
    run = None if run_in_cycle is None else torch.full((len(rows),), float(run_in_cycle), dtype=DTYPE)
    q = [(1 - level) / 2, 0.5, (1 + level) / 2]
    out = []
    with torch.no_grad():
        for zk, uk, dlog in zip(z, u, dlogs):
            p = model.predict_draws(x, zk, uk, dlog, run_in_cycle=run)
            de_all = ciede2000(p.lab, standard.lab).numpy()         # (rows, M, 2)
            de = de_all[0]
            lo, med, hi = np.quantile(de, q, axis=0)
            gain = None
            if current is not None:
                g = (de_all[1] - de).sum(-1)
                g_lo, g_med, g_hi = np.quantile(g, q)
                gain = Gain(float(g_med), float(g_lo), float(g_hi), level, float(np.mean(g < 0)))
            out.append(Interval(med, lo * lower_factor, hi, level, draws, gain))
    return out[0] if single else out


def care_flags(rec, interval: Interval | None, n_runs: int, seen_settings, min_runs: int, steps: int = 1,
               max_ahead: int = 4) -> tuple[str, ...]:
    """The reasons (keys of ``CARE_TEXT``) to treat recommendation ``rec`` with care.
    ``n_runs``: the cycle's runs the model was brought up to date on; ``seen_settings`` (N, 10)
    the settings those runs used; ``min_runs``: fewer is ``few_runs``; ``steps``: runs from the
    cycle's last measured run to this one (more than ``max_ahead``: ``far_ahead``); the gain's
    flag needs ``interval.gain`` (``predict_interval(..., current=...)``), as every plan has."""
    flags = []
    if n_runs < min_runs:
        flags.append("few_runs")
    seen = np.asarray(seen_settings, dtype=float).reshape(-1, 10)
    if len(seen):
        margin = seen.std(0) + 0.005   # the setting's spread over the cycle (+ half a 0.01 nm step)
        x = np.asarray(rec.settings, dtype=float)
        if np.any(x < seen.min(0) - margin) or np.any(x > seen.max(0) + margin):
            flags.append("unseen_settings")
    if steps > max_ahead:
        flags.append("far_ahead")
    if interval is not None and interval.gain is not None and interval.gain.lo <= 0:
        flags.append("interval_wider_than_gain")
    return tuple(flags)
