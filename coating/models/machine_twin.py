"""The machine as a cycle model: the plant simulator's own physics and noise (hidden truth) behind
the recommender's model interface, for the oracle references of the closed-loop evaluation."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from coating.line.plant import (
    PlantParams,
    PlantState,
    _model,
    _void_fill,
    run_reflectance,
)
from coating.models.normaliser import Prediction


@dataclass(frozen=True)
class MachineTwin:
    """The machine in ``state`` as a cycle model: the recommender's interface (``predict``,
    ``noise_draws``, ``predict_draws``) on the plant's own physics and noise (hidden truth).

    For evaluation only: a planner with perfect knowledge of the machine and of the
    distribution of a run's own deposition errors (``coating.recommend.closed_loop``'s
    ``oracle_robust``). ``walk_sd`` > 0 makes the tooling uncertain by one common random-walk
    step (``state`` then holds the tooling expected for the run, e.g. the last run's times the
    trend): a planner that knew the machine exactly as it was at the last run
    (``oracle_lagged``). Measurement noise is left out. Curves in percent on the plant's grid.
    """
    state: PlantState
    params: PlantParams = PlantParams()
    walk_sd: float = 0.0

    def _curves(self, settings: torch.Tensor, rel_error: torch.Tensor) -> torch.Tensor:
        model, B = _model(), settings.shape[0]
        t = lambda x: torch.as_tensor(np.asarray(x, dtype=np.float64))[None].expand(B, -1)  # noqa: E731
        vf = torch.full((B,), float(_void_fill(self.params, self.state.run_in_cycle + 1)), dtype=torch.float64)
        R, _ = run_reflectance(model, settings, t(self.state.tooling), rel_error, t(self.state.packing), vf,
                               self.params.measure_angle_deg)
        return 100 * R

    def _prediction(self, R: torch.Tensor):
        return Prediction(R, _model().colorimeter.lab(R / 100))

    def predict(self, settings=None, std=None, run_in_cycle=None):
        """Noise-free curves ``(B, 2, W)`` and Lab ``(B, 2, 3)`` of the next run with ``settings (B, 10)``."""
        settings = torch.as_tensor(settings, dtype=torch.float64)
        return self._prediction(self._curves(settings, torch.zeros(settings.shape[0], 14, dtype=torch.float64)))

    def noise_draws(self, n: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``n`` draws of the run's relative thickness errors ``(n, 14)`` from the plant's own
        distribution (monitor-linked, residual and common parts), zeros ``(n, 2)``, and the
        log-tooling error ``(n, 10)``: one common walk step N(0, walk_sd^2) (zeros when 0)."""
        p, rng = self.params, np.random.default_rng(seed)
        lr = rng.normal(0.0, p.std_log_sd, (n, 14))
        rel = p.kappa * (np.exp(lr) - 1) * np.array(self.state.monitor_sign) \
            + rng.normal(0.0, p.residual_sd, (n, 14)) + np.repeat(rng.normal(0.0, p.run_scale_sd, (n, 2)), 7, axis=1)
        dlog = np.repeat(np.log1p(rng.normal(0.0, 1.0, (n, 1)) * self.walk_sd), 10, axis=1)
        return torch.as_tensor(rel), torch.zeros(n, 2, dtype=torch.float64), torch.as_tensor(dlog)

    def predict_draws(self, settings, z, u, dlog=None, run_in_cycle=None):
        """``settings (B, 10)`` under each draw ``z (M, 14)`` (+ ``u (M, 2)`` per side; the
        adjustable layers' tooling times ``exp(dlog (M, 10))``): ``R (B, M, 2, W)``, ``lab (B, M, 2, 3)``."""
        settings = torch.as_tensor(settings, dtype=torch.float64)
        B, M = settings.shape[0], z.shape[0]
        rel = (z + u.repeat_interleave(7, dim=1)).repeat(B, 1)
        x = settings.repeat_interleave(M, 0)
        if dlog is not None:
            x = x * torch.exp(dlog.repeat(B, 1))
        p = self._prediction(self._curves(x, rel))
        return type(p)(p.R.reshape(B, M, 2, -1), p.lab.reshape(B, M, 2, 3))
