"""The grey-box cycle model: differentiable thin-film optics with per-cycle calibrated
parameters and a small learned residual (the default for recommendations). See ``GreyBox``.
Trained by ``coating.models.fitting.fit`` (L-BFGS on ``GreyBox.neg_log_posterior``).
"""
from __future__ import annotations

from typing import Mapping

import numpy as np
import torch
from torch import nn

from coating.line.schema import WAVELENGTHS_NM
from coating.models.mlp import tanh_mlp
from coating.models.normaliser import DTYPE, N_WL, Normalised, Normaliser, Prediction
from coating.optics.stacks import (
    ADJUSTABLE,
    RECIPE_BACK_NM,
    RECIPE_FRONT_NM,
    RECIPE_MATERIALS,
    StackModel,
)

__all__ = ["GreyBox"]

_SIO2_POS = [i for i, m in enumerate(RECIPE_MATERIALS) if m == "SiO2"]
_ZRO2_POS = [i for i, m in enumerate(RECIPE_MATERIALS) if m == "ZrO2"]


class GreyBox(Normalised):
    """Differentiable optics with per-cycle calibration, plus a small learned residual.

    Thickness of recipe layer ``j`` on side ``s`` in run ``r`` (recipe order, nm):
        adjustable: ``setting_sj * exp(a_sj + b (r - r0) + w_r + u_rs) * (1 + g_sj z_rsj)``
        fixed:      ``recipe_sj * exp(u_rs) * (1 + g_sj z_rsj)``
    with ``a`` the log tooling per adjustable layer and side (10), ``b`` its linear drift per run,
    ``w_r`` a random walk of the common tooling (a latent per training run; the last value
    ``w_last`` carries to prediction), ``u_rs`` a per-run per-side rate error (a latent, 0 when
    predicting), ``g`` monitor gains (14) and ``z = std / std_mean - 1`` from the run's sensor
    std values (0 for a run not yet made). Real-index offsets of SiO2 and ZrO2:
    ``delta_m + gamma_m (min(r, r_seen) - r0) / 100`` (the linear drift is not extrapolated past
    the runs seen; fine-tuning carries ``delta`` forward). Reflectance at ``angle_deg``
    (unpolarised), in percent, plus ``mlp([settings, run] normalised) * y_std`` (zero at init).
    Priors (Gaussian, sds in ``hparams``) make the fit a MAP estimate; they are the
    regularisation strengths.
    """

    def __init__(self, hparams: Mapping, normaliser: Normaliser, std_mean: torch.Tensor,
                 n_train: int = 1):
        super().__init__()
        self.kind, self.hparams = "greybox", dict(hparams)
        self._set_normaliser(normaliser)
        self.stack = StackModel.build(WAVELENGTHS_NM.astype(np.float64), DTYPE)
        self.register_buffer("std_mean", std_mean.to(DTYPE).clone())       # (14,)
        self.register_buffer("z_sd", torch.zeros(14, dtype=DTYPE))          # spread of z in training
        self.register_buffer("r0", torch.zeros((), dtype=DTYPE))            # reference run
        self.register_buffer("r_seen", torch.zeros((), dtype=DTYPE))        # last run of training
        self.register_buffer("r_last", torch.zeros((), dtype=DTYPE))        # last run conditioned on
        self.register_buffer("w_last", torch.zeros((), dtype=DTYPE))
        self.register_buffer("log_tool0", torch.zeros(10, dtype=DTYPE))     # prior centre of a
        self.log_tool = nn.Parameter(torch.zeros(10, dtype=DTYPE))
        self.trend = nn.Parameter(torch.zeros((), dtype=DTYPE))
        self.gain = nn.Parameter(torch.zeros(14, dtype=DTYPE))
        self.n_off = nn.Parameter(torch.zeros(2, dtype=DTYPE))              # SiO2, ZrO2
        self.n_drift = nn.Parameter(torch.zeros(2, dtype=DTYPE))            # per 100 runs
        self.dw = nn.Parameter(torch.zeros(max(n_train - 1, 0), dtype=DTYPE))  # walk increments
        self.u = nn.Parameter(torch.zeros(n_train, 2, dtype=DTYPE))
        width = int(hparams["width"])
        torch.manual_seed(int(hparams["seed"]))
        self.mlp = tanh_mlp(11, 2 * N_WL, width, int(hparams["depth"])) if width > 0 else None
        if self.mlp is not None:  # the residual starts at zero: the physics alone
            nn.init.zeros_(self.mlp[-1].weight)
            nn.init.zeros_(self.mlp[-1].bias)
        self._fixed = torch.tensor([RECIPE_FRONT_NM, RECIPE_BACK_NM], dtype=DTYPE)   # (2, 7)
        self._adj = list(ADJUSTABLE)

    # The forward model, shared by training (with latents) and prediction (without).
    def curves(self, settings: torch.Tensor, run: torch.Tensor, z: torch.Tensor,
               w: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
        """R ``(B, 2, 81)`` percent. ``settings (B, 10)``, ``run (B,)``, ``z (B, 14)``,
        ``w (B,)`` walk, ``u (B, 2)`` per-side rate error."""
        B = settings.shape[0]
        hp = self.hparams
        trend = self.trend if hp["free_drift"] else self.trend.detach() * 0
        log_t = self.log_tool + (trend * (run - self.r0) + w)[:, None]                 # (B, 10)
        adj = (settings * torch.exp(log_t)).reshape(B, 2, 5)
        thick = self._fixed.expand(B, 2, 7).clone()
        thick[:, :, self._adj] = adj
        gain = self.gain if hp["free_gains"] else self.gain.detach() * 0
        thick = thick * torch.exp(u)[:, :, None] * (1 + gain.reshape(2, 7) * z.reshape(B, 2, 7))
        n = self.stack.n_recipe.expand(B, 7, N_WL)
        if hp["free_index"]:
            drift = self.n_drift if hp["free_drift"] else self.n_drift.detach() * 0
            r_eff = torch.minimum(run, self.r_seen) - self.r0
            off = self.n_off + drift * r_eff[:, None] / 100                               # (B, 2)
            shift = torch.zeros(B, 7, 1, dtype=DTYPE)
            shift[:, _SIO2_POS, 0] = off[:, :1]
            shift[:, _ZRO2_POS, 0] = off[:, 1:]
            n = n + shift
        R = 100 * self.stack.reflectance(thick, n[:, None], angle_deg=float(hp["angle_deg"]))  # (B, 2, W)
        if self.mlp is not None:
            x = self.normaliser.norm_x(torch.cat([settings, run[:, None]], 1))
            R = R + (self.mlp(x) * self.normaliser.y_std).reshape(B, 2, N_WL)
        return R

    def z_of(self, std) -> torch.Tensor | None:
        return None if std is None else std.to(DTYPE) / self.std_mean - 1

    def predict(self, settings=None, std=None, run_in_cycle=None) -> Prediction:
        """Prediction for runs not in training: walk ``w_last + b (run - r_last)``, ``u = 0``,
        ``z`` from ``std`` when given (a run already made), else 0 (a run to plan)."""
        if settings is None:
            raise ValueError("greybox needs settings as input")
        settings = settings.to(DTYPE)
        B = settings.shape[0]
        run = (self.r_last + 1).expand(B) if run_in_cycle is None else run_in_cycle.to(DTYPE).reshape(B)
        z = self.z_of(std)
        z = torch.zeros(B, 14, dtype=DTYPE) if z is None else z
        # The tooling trend enters through ``run``; the walk stays at its last value.
        R = self.curves(settings, run, z, self.w_last.expand(B), torch.zeros(B, 2, dtype=DTYPE))
        return Prediction(R, self.stack.colorimeter.lab(R / 100))

    def noise_draws(self, n: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``n`` draws of a planned run's own errors, as the model sees them: ``z (n, 14)`` ~
        N(0, z_sd^2) per layer (the sensor spread of the training runs; through the monitor
        gains), ``u (n, 2)`` ~ N(0, run_scale_sd^2) per side, and ``dlog (n, 10)``: the error of
        the model's log tooling for that run, N(0, plan_walk_sd^2) common to all adjustable
        layers plus N(0, plan_tooling_sd^2) per layer (zeros when both are 0). Seeded (common
        random numbers, so an optimiser sees a smooth objective) and antithetic: the last
        ``n // 2`` draws are the first ones negated, so every error has a sample mean of exactly
        0 (n even). The robust objective then carries no first-order sampling bias: with plain
        draws, a sample mean of the rate error of ~run_scale_sd / sqrt(n) would pull every
        planned run the same way."""
        g = torch.Generator().manual_seed(int(seed))
        m = (n + 1) // 2
        z = torch.randn(m, 14, generator=g, dtype=DTYPE) * self.z_sd
        u = torch.randn(m, 2, generator=g, dtype=DTYPE) * float(self.hparams["run_scale_sd"])
        dlog = torch.randn(m, 1, generator=g, dtype=DTYPE) * float(self.hparams["plan_walk_sd"]) \
            + torch.randn(m, 10, generator=g, dtype=DTYPE) * float(self.hparams["plan_tooling_sd"])
        z, u, dlog = (torch.cat([a, -a])[:n] for a in (z, u, dlog))
        return z, u, dlog

    def predict_draws(self, settings: torch.Tensor, z: torch.Tensor, u: torch.Tensor,
                      dlog: torch.Tensor | None = None, run_in_cycle=None) -> Prediction:
        """Predictions of ``settings (B, 10)`` under each of ``M`` error draws ``z (M, 14)``,
        ``u (M, 2)`` and log-tooling errors ``dlog (M, 10)`` (None: 0): ``R (B, M, 2, 81)``,
        ``lab (B, M, 2, 3)`` (the walk at its last value)."""
        settings = settings.to(DTYPE)
        B, M = settings.shape[0], z.shape[0]
        run = (self.r_last + 1).expand(B * M) if run_in_cycle is None else \
            run_in_cycle.to(DTYPE).reshape(B).repeat_interleave(M)
        x = settings.repeat_interleave(M, 0)
        if dlog is not None:
            x = x * torch.exp(dlog.repeat(B, 1))
        R = self.curves(x, run, z.repeat(B, 1), self.w_last.expand(B * M), u.repeat(B, 1))
        lab = self.stack.colorimeter.lab(R / 100)
        return Prediction(R.reshape(B, M, 2, N_WL), lab.reshape(B, M, 2, 3))

    def walk(self) -> torch.Tensor:
        """Walk values of the training runs ``(N,)``, starting at 0."""
        return torch.cat([torch.zeros(1, dtype=DTYPE), torch.cumsum(self.dw, 0)])

    def neg_log_posterior(self, data: dict, w: torch.Tensor, anchors: dict | None = None) -> torch.Tensor:
        """Mean over runs of ``sum (R_hat - R)^2 / (2 sigma_R^2)`` plus the priors / N."""
        hp = self.hparams
        N = data["R"].shape[0]
        R = self.curves(data["settings"], data["run"], self.z_of(data["std"]), w, self.u)
        nll = ((R - data["R"]) ** 2).sum() / (2 * hp["sigma_R"] ** 2)
        sq = lambda x, s: (x ** 2).sum() / (2 * s ** 2)  # noqa: E731
        prior = sq(self.u, hp["run_scale_sd"])
        if anchors is None:  # training from scratch
            prior = prior + sq(self.dw, hp["walk_sd"]) + sq(self.log_tool - self.log_tool0, hp["tooling_sd"]) \
                + sq(self.trend, hp["trend_sd"]) + sq(self.gain, hp["gain_sd"]) \
                + sq(self.n_off, hp["index_sd"]) + sq(self.n_drift, hp["index_drift_sd"])
            if self.mlp is not None:
                prior = prior + 0.5 * hp["weight_decay"] * N * sum((p ** 2).sum() for n_, p in
                                                                   self.mlp.named_parameters() if "weight" in n_)
        else:  # fine-tuning: anchored to the previous calibration (a filter step)
            prior = prior + sq(self.log_tool - anchors["log_tool"], hp["ft_tooling_sd"]) \
                + sq(self.n_off - anchors["n_off"], hp["ft_index_sd"]) \
                + sq(w[0] - anchors["w_last"], hp["ft_walk_sd"]) + sq(w[1:] - w[:-1], hp["walk_sd"])
        return (nll + prior) / N
