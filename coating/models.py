"""Per-cycle coating models in torch: model1, model2 and the grey box, and their training loop.

Three kinds, one per cleaning cycle (docs/coating.md):

- ``"model1"``: the 10 settings ``[F1..F5, B1..B5]`` (nm) -> front and back reflectance curves
  (81 points each, percent) and L*a*b* of both sides. The notes' recommendation model: an MLP.
- ``"model2"``: the 14 sensor std values ``[F1..F7, B1..B7]`` -> front and back curves. The notes'
  diagnosis model (which layer's instability moved the colour): an MLP.
- ``"greybox"``: the differentiable optics of ``coating.optics``/``coating.stacks`` with per-cycle
  calibrated parameters and a small learned residual. See ``GreyBox``.

Every model predicts with ``model.predict(settings, std, run_in_cycle)`` (tensors ``(B, 10)``,
``(B, 14)``, ``(B,)``; a kind ignores inputs it does not use, and the grey box takes
``std=None`` for a run not yet made) and returns a ``Prediction``: ``R`` ``(B, 2, 81)`` percent
(front, back) and ``lab`` ``(B, 2, 3)``. All tensors are float64 on the CPU (the models are
tiny; float64 keeps L-BFGS and the recommender's gradients clean).

Normalisation: a ``Normaliser`` (frozen dataclass of tensors) is computed ONCE from the training
rows in ``fit`` and stored with the model (and in the registry); prediction never looks at the
statistics of the batch it predicts. That is the notes' single-sample bug designed out: a
sample predicted alone gives the same output as inside a batch (tests/coating/test_models.py).

Training: ``fit(model_kind, hparams, train_rows, val_rows, report=None)`` is one plain PyTorch
loop (full batch: a cycle has 60-160 runs). ``report(epoch, metrics)`` is called once per
epoch (a Ray Tune trainable passes ``lambda e, m: tune.report(m)``). Validation must be a time
split (``time_split``: the latest runs of the cycle), never a random one.
"""
from __future__ import annotations

import copy
import dataclasses
import math
from dataclasses import dataclass
from typing import Callable, Mapping, Sequence

import numpy as np
import torch
from torch import nn

from .colour import Colorimeter, ciede2000
from .schema import History, WAVELENGTHS_NM
from .stacks import ADJUSTABLE, RECIPE_BACK_NM, RECIPE_FRONT_NM, RECIPE_MATERIALS, StackModel, settings_of_recipe

__all__ = ["KINDS", "DEFAULTS", "SEARCH_SPACE", "Normaliser", "Prediction", "MLPModel", "GreyBox",
           "FitResult", "fit", "resolve_hparams", "build_model", "time_split", "select_rows",
           "rows_to_tensors", "evaluate", "fine_tune", "refit", "run_loss", "build_model_from_state",
           "concat_rows"]

DTYPE = torch.float64
KINDS = ("model1", "model2", "greybox")
N_WL = len(WAVELENGTHS_NM)

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


# --- data ----------------------------------------------------------------------------------
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


@dataclass(frozen=True)
class Normaliser:
    """Training-set statistics: ``x`` inputs ``(D_in,)``, ``y`` outputs ``(D_out,)``.

    ``*_std`` are floored (``max(std, 1e-3 |mean|, 1e-6)``) so a column that barely varied in
    training cannot blow up a tiny input change (the notes' over-sensitive surrogate).
    """
    x_mean: torch.Tensor
    x_std: torch.Tensor
    y_mean: torch.Tensor
    y_std: torch.Tensor

    @staticmethod
    def from_training(x: torch.Tensor, y: torch.Tensor) -> "Normaliser":
        def stats(a):
            m = a.mean(0)
            s = a.std(0, unbiased=False) if a.shape[0] > 1 else torch.zeros_like(m)
            return m, torch.maximum(s, torch.clamp(1e-3 * m.abs(), min=1e-6))
        return Normaliser(*stats(x), *stats(y))

    def norm_x(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.x_mean) / self.x_std

    def norm_y(self, y: torch.Tensor) -> torch.Tensor:
        return (y - self.y_mean) / self.y_std

    def denorm_y(self, y: torch.Tensor) -> torch.Tensor:
        return y * self.y_std + self.y_mean

    def state(self) -> dict[str, torch.Tensor]:
        return {f.name: getattr(self, f.name).clone() for f in dataclasses.fields(self)}

    @staticmethod
    def from_state(d: Mapping[str, torch.Tensor]) -> "Normaliser":
        return Normaliser(*(torch.as_tensor(d[f.name], dtype=DTYPE) for f in dataclasses.fields(Normaliser)))


@dataclass(frozen=True)
class Prediction:
    """``R``: ``(B, 2, 81)`` reflectance in percent (front, back); ``lab``: ``(B, 2, 3)``."""
    R: torch.Tensor
    lab: torch.Tensor


class _Normalised(nn.Module):
    """Holds a ``Normaliser`` as buffers, so ``state_dict()`` carries it (and a checkpoint of the
    state dict alone restores it); ``normaliser`` rebuilds the frozen dataclass on access."""

    def _set_normaliser(self, normaliser: Normaliser) -> None:
        for f in dataclasses.fields(Normaliser):
            self.register_buffer(f"norm_{f.name}", getattr(normaliser, f.name).to(DTYPE).clone())

    @property
    def normaliser(self) -> Normaliser:
        return Normaliser(*(getattr(self, f"norm_{f.name}") for f in dataclasses.fields(Normaliser)))


def _mlp(n_in: int, n_out: int, width: int, depth: int) -> nn.Sequential:
    layers, d = [], n_in
    for _ in range(depth):
        layers += [nn.Linear(d, width), nn.Tanh()]  # tanh: smooth input gradients for the optimiser
        d = width
    layers.append(nn.Linear(d, n_out))
    return nn.Sequential(*layers).to(DTYPE)


class MLPModel(_Normalised):
    """model1 (settings -> curves + Lab) or model2 (std -> curves).

    In: ``settings (B, 10)`` nm (model1) or ``std (B, 14)`` (model2), normalised by the stored
    ``Normaliser``. Out (normalised): model1 ``[R_F (81), R_B (81), L_F, a_F, b_F, L_B, a_B, b_B]``;
    model2 ``[R_F (81), R_B (81)]``. ``predict`` returns them in physical units; model2's ``lab``
    is computed from its curves.
    """

    def __init__(self, kind: str, hparams: Mapping, normaliser: Normaliser):
        super().__init__()
        if kind not in ("model1", "model2"):
            raise ValueError(f"MLPModel is model1 or model2, got {kind!r}")
        self.kind, self.hparams = kind, dict(hparams)
        self._set_normaliser(normaliser)
        n_in = 10 if kind == "model1" else 14
        n_out = 2 * N_WL + (6 if kind == "model1" else 0)
        torch.manual_seed(int(hparams["seed"]))
        self.net = _mlp(n_in, n_out, int(hparams["width"]), int(hparams["depth"]))
        self.colorimeter = Colorimeter.build(WAVELENGTHS_NM.astype(np.float64), DTYPE)

    def inputs(self, settings=None, std=None) -> torch.Tensor:
        x = settings if self.kind == "model1" else std
        if x is None:
            raise ValueError(f"{self.kind} needs {'settings' if self.kind == 'model1' else 'std'} as input")
        return x.to(DTYPE)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(self.normaliser.norm_x(x))

    def predict(self, settings=None, std=None, run_in_cycle=None) -> Prediction:
        y = self.normaliser.denorm_y(self(self.inputs(settings, std)))     # (B, D_out)
        R = y[:, :2 * N_WL].reshape(-1, 2, N_WL)
        lab = y[:, 2 * N_WL:].reshape(-1, 2, 3) if self.kind == "model1" else \
            self.colorimeter.lab(R / 100)
        return Prediction(R, lab)

    def targets(self, data: dict) -> torch.Tensor:
        y = data["R"].reshape(-1, 2 * N_WL)
        return torch.cat([y, data["lab"].reshape(-1, 6)], 1) if self.kind == "model1" else y


# --- the grey box ----------------------------------------------------------------------------
_SIO2_POS = [i for i, m in enumerate(RECIPE_MATERIALS) if m == "SiO2"]
_ZRO2_POS = [i for i, m in enumerate(RECIPE_MATERIALS) if m == "ZrO2"]


class GreyBox(_Normalised):
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
        self.mlp = _mlp(11, 2 * N_WL, width, int(hparams["depth"])) if width > 0 else None
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


def build_model(kind: str, hparams: Mapping, normaliser: Normaliser, extra: Mapping | None = None) -> nn.Module:
    """An untrained model of ``kind``; ``extra`` carries the grey box's ``std_mean``."""
    hp = resolve_hparams(kind, hparams)
    if kind == "greybox":
        std_mean = torch.as_tensor((extra or {}).get("std_mean", torch.ones(14)), dtype=DTYPE)
        return GreyBox(hp, normaliser, std_mean)
    return MLPModel(kind, hp, normaliser)


def build_model_from_state(kind: str, hparams: Mapping, state_dict: Mapping[str, torch.Tensor]) -> nn.Module:
    """A model of ``kind`` restored from ``state_dict()`` alone (normaliser and, for the grey
    box, the number of training runs are read from the tensors); eval mode."""
    hp = resolve_hparams(kind, hparams)
    norm = Normaliser(*(torch.as_tensor(state_dict[f"norm_{f.name}"], dtype=DTYPE)
                        for f in dataclasses.fields(Normaliser)))
    if kind == "greybox":
        model = GreyBox(hp, norm, state_dict["std_mean"], n_train=int(state_dict["u"].shape[0]))
        model.dw = nn.Parameter(torch.zeros_like(torch.as_tensor(state_dict["dw"], dtype=DTYPE)))
    else:
        model = MLPModel(kind, hp, norm)
    model.load_state_dict(state_dict)
    model.eval()
    return model


# --- training ------------------------------------------------------------------------------
@dataclass(frozen=True)
class FitResult:
    """``model`` (eval mode), ``metrics`` (the last epoch's), ``history`` (one dict per epoch),
    ``hparams`` (resolved)."""
    model: nn.Module
    metrics: dict
    history: list
    hparams: dict


def run_loss(model, rows: History | dict) -> torch.Tensor:
    """Per-run mean squared curve error ``(N,)`` in %^2, using each run's own settings, std and
    run_in_cycle (the loss used to pick a cycle model for a measured run)."""
    d = rows if isinstance(rows, dict) else rows_to_tensors(rows)
    with torch.no_grad():
        p = model.predict(d["settings"], d["std"], d["run"])
    return ((p.R - d["R"]) ** 2).mean(dim=(1, 2))


def evaluate(model, rows: History | None) -> dict:
    """``loss`` (mean curve MSE, %^2), ``rmse_R`` (%), ``dE00`` (median CIEDE2000 of the Lab of
    the predicted curves against the measured Lab, both sides) on ``rows``."""
    if rows is None or len(rows) == 0:
        return {}
    d = rows_to_tensors(rows)
    with torch.no_grad():
        p = model.predict(d["settings"], d["std"], d["run"])
        mse = ((p.R - d["R"]) ** 2).mean()
        lab = Colorimeter.build(WAVELENGTHS_NM.astype(np.float64), DTYPE).lab(p.R / 100)
        de = ciede2000(lab, d["lab"])
    return {"loss": float(mse), "rmse_R": float(mse.sqrt()), "dE00": float(de.median())}


def _greybox_init(hp: dict, data: dict) -> GreyBox:
    x = torch.cat([data["settings"], data["run"][:, None]], 1)
    norm = Normaliser.from_training(x, data["R"].reshape(-1, 2 * N_WL))
    model = GreyBox(hp, norm, data["std"].mean(0), n_train=data["R"].shape[0])
    recipe = torch.tensor(settings_of_recipe(), dtype=DTYPE)
    with torch.no_grad():  # prior centre: the tooling that would deposit the recipe
        model.log_tool0.copy_(torch.log(recipe / data["settings"].median(0).values))
        model.log_tool.copy_(model.log_tool0)
        model.r0.fill_(float(data["run"][0]))
        model.r_seen.fill_(float(data["run"][-1]))
        if data["R"].shape[0] > 1:
            model.z_sd.copy_(model.z_of(data["std"]).std(0))
    return model


def _greybox_finish(model: GreyBox, data: dict) -> None:
    with torch.no_grad():
        model.w_last.fill_(float(model.walk()[-1]))
        model.r_last.fill_(float(data["run"][-1]))


def fit(model_kind: str, hparams: Mapping | None, train_rows: History, val_rows: History | None,
        report: Callable[[int, dict], None] | None = None, pretrain: Mapping | None = None) -> FitResult:
    """Fit one cycle's model of ``model_kind`` on ``train_rows``; validate on ``val_rows``.

    Args:
        model_kind: ``"model1"``, ``"model2"`` or ``"greybox"``.
        hparams: overrides of ``DEFAULTS[model_kind]`` (unknown keys refused); see ``SEARCH_SPACE``.
        train_rows, val_rows: ``schema.History`` of one cycle; ``val_rows`` should be its latest
            runs (``time_split``) or None. Rows are used in ``run_in_cycle`` order.
        report: called as ``report(epoch, metrics)`` after every epoch (1-based); metrics:
            ``epoch, train_loss`` and, with ``val_rows``, ``val_loss`` (curve MSE, %^2),
            ``val_rmse_R`` (%), ``val_dE00`` (median CIEDE2000 of predicted vs measured).
        pretrain: model1 only, optional dict of arrays ``settings (M, 10), R_F, R_B (M, 81),
            lab_F, lab_B (M, 3)`` (the pool's coating-spectra recipe): the MLP is trained on
            them for ``epochs`` steps first; the normaliser then covers pretrain + train rows.

    Returns a ``FitResult``. Deterministic for given inputs (``hparams["seed"]``).
    """
    hp = resolve_hparams(model_kind, hparams)
    if len(train_rows) < 2:
        raise ValueError(f"fit: need at least 2 training runs, got {len(train_rows)}")
    order = np.argsort(train_rows.run_in_cycle, kind="stable")
    train_rows = select_rows(train_rows, order)
    data = rows_to_tensors(train_rows)
    history: list[dict] = []

    def log(epoch: int, model, train_loss: float) -> dict:
        model.eval()
        m = {"epoch": epoch, "train_loss": train_loss}
        m.update({f"val_{k}": v for k, v in evaluate(model, val_rows).items()})
        history.append(m)
        if report is not None:
            report(epoch, dict(m))
        model.train()
        return m

    if model_kind == "greybox":
        model = _greybox_init(hp, data)
        params = [p for p in model.parameters() if p.requires_grad]
        opt = torch.optim.LBFGS(params, lr=hp["lr"], max_iter=hp["inner_steps"],
                                history_size=20, line_search_fn="strong_wolfe")
        w_of = model.walk

        def closure():
            opt.zero_grad()
            loss = model.neg_log_posterior(data, w_of())
            loss.backward()
            return loss
        for epoch in range(1, hp["epochs"] + 1):
            loss = float(opt.step(closure).detach())
            _greybox_finish(model, data)
            log(epoch, model, loss)
    else:
        x_tr = data["settings"] if model_kind == "model1" else data["std"]
        xs, ys = [x_tr], []
        if pretrain is not None:
            if model_kind != "model1":
                raise ValueError("fit: pretrain data is for model1 only")
            pt = {k: torch.as_tensor(np.asarray(v), dtype=DTYPE) for k, v in pretrain.items()}
            pdata = {"R": torch.stack([pt["R_F"], pt["R_B"]], 1), "lab": torch.stack([pt["lab_F"], pt["lab_B"]], 1)}
            xs.insert(0, pt["settings"])
        tmp = MLPModel(model_kind, hp, Normaliser(*(torch.zeros(1),) * 4))
        y_tr = tmp.targets(data)
        ys = ([tmp.targets(pdata)] if pretrain is not None else []) + [y_tr]
        model = MLPModel(model_kind, hp, Normaliser.from_training(torch.cat(xs), torch.cat(ys)))
        opt = torch.optim.AdamW(model.parameters(), lr=hp["lr"], weight_decay=hp["weight_decay"])
        stages = ([(xs[0], ys[0])] if pretrain is not None else []) + [(x_tr, y_tr)]
        for si, (x, y) in enumerate(stages):
            yn = model.normaliser.norm_y(y)
            for epoch in range(1, hp["epochs"] + 1):
                opt.zero_grad()
                loss = ((model(x) - yn) ** 2).mean()
                loss.backward()
                opt.step()
                if si == len(stages) - 1:
                    log(epoch, model, float(loss.detach()))
    model.eval()
    return FitResult(model, history[-1], history, hp)


def fit_best(model_kind: str, hparams: Mapping | None, candidates: Sequence[Mapping], train_rows: History,
             val_rows: History) -> tuple[FitResult, int]:
    """The lowest validation loss of ``fit(model_kind, hparams | c, train_rows, val_rows)`` over
    the candidate overrides ``candidates``: a grid search on the time split, the small in-process
    counterpart of the Tune sweep (``ray_jobs.coating_tune``). Returns ``(result, index)`` of the
    chosen candidate; ties keep the first. ``val_rows`` must not be empty."""
    if val_rows is None or len(val_rows) == 0:
        raise ValueError("fit_best: choosing by validation needs validation runs")
    if not candidates:
        raise ValueError("fit_best: no candidate hyperparameters")
    best, best_i = None, -1
    for i, c in enumerate(candidates):
        r = fit(model_kind, {**(hparams or {}), **c}, train_rows, val_rows)
        if best is None or r.metrics["val_loss"] < best.metrics["val_loss"]:
            best, best_i = r, i
    return best, best_i


def refit(model, rows: History) -> nn.Module:
    """``model``'s kind fitted again from scratch, with its own hyperparameters, on ``rows`` (all
    of a cycle's runs so far; no validation rows). For the grey box this is the smoother update
    that ``fine_tune``'s filter step approximates: every run's information is used at once, so
    the per-layer tooling, the gains and the walk are estimated from all the runs together."""
    return fit(model.kind, model.hparams, rows, None).model


def fine_tune(model, rows: History) -> nn.Module:
    """A copy of ``model`` updated on newly measured runs ``rows`` (in ``run_in_cycle`` order).

    MLPs: ``ft_steps`` Adam steps at ``ft_lr`` on the rows (stored normaliser unchanged).
    Grey box: a filter step: new walk and rate latents for the rows; per-layer tooling and
    index offsets free but anchored to their current values (``ft_*_sd``); gains, drift and the
    residual frozen; then ``w_last``/``r_last`` move to the last row.
    """
    if len(rows) == 0:
        return model
    new = copy.deepcopy(model)
    data = rows_to_tensors(select_rows(rows, np.argsort(rows.run_in_cycle, kind="stable")))
    hp = new.hparams
    if new.kind != "greybox":
        new.train()
        opt = torch.optim.Adam(new.parameters(), lr=hp["ft_lr"])
        x = new.inputs(data["settings"], data["std"])
        yn = new.normaliser.norm_y(new.targets(data))
        for _ in range(hp["ft_steps"]):
            opt.zero_grad()
            ((new(x) - yn) ** 2).mean().backward()
            opt.step()
        new.eval()
        return new
    N = data["R"].shape[0]
    anchors = {"log_tool": new.log_tool.detach().clone(), "n_off": new.n_off.detach().clone(),
               "w_last": new.w_last.clone()}
    for p in new.parameters():
        p.requires_grad_(False)
    new.u = nn.Parameter(torch.zeros(N, 2, dtype=DTYPE))
    w = nn.Parameter(new.w_last.expand(N).clone())
    free = [new.log_tool, w, new.u] + ([new.n_off] if hp["free_index"] else [])
    for p in free:
        p.requires_grad_(True)
    opt = torch.optim.LBFGS(free, lr=1.0, max_iter=40, history_size=20, line_search_fn="strong_wolfe")

    def closure():
        opt.zero_grad()
        loss = new.neg_log_posterior(data, w, anchors)
        loss.backward()
        return loss
    opt.step(closure)
    with torch.no_grad():
        new.w_last.fill_(float(w[-1]))
        new.r_last.fill_(float(data["run"][-1]))
    for p in new.parameters():
        p.requires_grad_(False)
    new.eval()
    return new
