"""Next-run thickness settings from a cycle model: the optimiser ``coating recommend`` runs for
each furnace run (``coating.recommend`` plans the runs and re-exports this module's names).

Objective (to minimise) for settings ``x`` (10, nm), with the model's predicted curves
``R_s(x)`` (percent) and their L*a*b* for the next run:

    sum_s dE00_s(x)^2 + spectral_weight * sum_s mean_l ((R_s - R_std,s) / 0.1 %)^2
                      + move_weight * sum_i ((x_i - x0_i) / max_step_i)^2

(``s`` front and back; CIEDE2000 from ``coating.optics.colour``; the small move term picks, among
settings of equal predicted colour, the one nearest the current ones.)

Constraints (``Limits``): ``lower <= x <= upper``; ``|x - x0| <= max_step`` per setting; and
front/back consistency: **for each adjustable layer, the front change and the back change
never have opposite signs** (``(xF_i - x0F_i) * (xB_i - x0B_i) >= 0``; one of them may be 0).
This is the engineers' rule "front and back move in the same direction" without forcing a fixed
ratio between them: the back's calibration (tooling) differs from the front's by layer and
drifts on its own, so a fixed ratio would leave colour on the table.

Method (robust, second order): for a fixed sign pattern per layer the feasible set is a box, so
each sub-problem is solved by L-BFGS-B (scipy, gradients from torch autograd in float64).
First the sign-free box problem from several starts (current settings, the model's
step-limited Gauss-Newton estimate, and random points in the box); then every sign pattern
that resolves the layers whose changes disagree (at most 2^5) is solved from the best point
projected onto it, and the best feasible result is kept. Changes are truncated to the
plant's 0.01 nm set-point step (toward the current settings, so the constraints still hold).
"""
from __future__ import annotations

import itertools
from dataclasses import dataclass, field

import numpy as np
import torch

from coating.line.schema import WAVELENGTHS_NM
from coating.optics.colour import Colorimeter, ciede2000
from coating.recommend.config import RecommendConfig

__all__ = ["Limits", "Standard", "Recommendation", "default_limits", "recommend_settings",
           "predicted_delta_e", "predicted_lab"]

DTYPE = torch.float64
SPECTRAL_UNIT = 0.1     # % reflectance: a spectral RMS error of this size costs like dE00 = 1
SETTING_STEP_NM = 0.01  # set points are entered to 0.01 nm (plant.PlantParams.setting_step_nm)


@dataclass(frozen=True)
class Limits:
    """Bounds ``lower``, ``upper`` (10,) nm and the largest change per run ``max_step_nm`` (10,)."""
    lower: np.ndarray
    upper: np.ndarray
    max_step_nm: np.ndarray


def default_limits(reference_settings, bound_rel: float = RecommendConfig.bound_rel,
                   max_step_rel: float = RecommendConfig.max_step_rel) -> Limits:
    """Bounds ``reference * (1 -+ bound_rel)`` and a step of ``max_step_rel * reference`` per run.

    ``reference_settings`` (10,) nm: e.g. the median settings of the cycle's history. The
    defaults are ``RecommendConfig``'s (15 % and 3 %).
    """
    ref = np.asarray(reference_settings, dtype=np.float64).reshape(10)
    return Limits(ref * (1 - bound_rel), ref * (1 + bound_rel), ref * max_step_rel)


@dataclass(frozen=True)
class Standard:
    """Target: curves ``R`` (2, W) percent (front, back) and their ``lab`` (2, 3)."""
    R: torch.Tensor
    lab: torch.Tensor

    @staticmethod
    def from_curves(R_F, R_B) -> "Standard":
        R = torch.tensor(np.stack([np.asarray(R_F), np.asarray(R_B)]), dtype=DTYPE)
        lab = Colorimeter.build(WAVELENGTHS_NM.astype(np.float64), DTYPE).lab(R / 100)
        return Standard(R, lab)


@dataclass(frozen=True)
class Recommendation:
    """``settings`` (10,) nm recommended; ``current`` (10,); ``change`` = settings - current;
    ``dE00`` (2,) predicted front, back; ``dE00_current`` (2,) predicted with ``current``;
    ``rms_R`` (2,) predicted spectral RMS distance (%); ``loss`` the objective."""
    settings: np.ndarray
    current: np.ndarray
    change: np.ndarray
    dE00: np.ndarray
    dE00_current: np.ndarray
    rms_R: np.ndarray
    loss: float
    details: dict = field(default_factory=dict)


def _terms(model, x: torch.Tensor, run_in_cycle, standard: Standard):
    p = model.predict(x, None, None if run_in_cycle is None else
                      torch.full((x.shape[0],), float(run_in_cycle), dtype=DTYPE))
    de = ciede2000(p.lab, standard.lab)                                       # (B, 2)
    ms = ((p.R - standard.R) ** 2).mean(-1) / SPECTRAL_UNIT ** 2              # (B, 2)
    return de, ms


def predicted_lab(model, settings, run_in_cycle) -> np.ndarray:
    """The model's L*a*b* (front, back) of ``settings`` (10,): ``(2, 3)``."""
    x = torch.as_tensor(np.asarray(settings, dtype=np.float64)).reshape(1, 10)
    with torch.no_grad():
        p = model.predict(x, None, None if run_in_cycle is None else
                          torch.full((1,), float(run_in_cycle), dtype=DTYPE))
    return p.lab[0].numpy()


def predicted_delta_e(model, settings, run_in_cycle, standard: Standard) -> np.ndarray:
    """Predicted CIEDE2000 (front, back) of ``settings`` (10,) or (B, 10): ``(2,)``/``(B, 2)``."""
    x = torch.as_tensor(np.asarray(settings, dtype=np.float64))
    with torch.no_grad():
        de, _ = _terms(model, x.reshape(-1, 10), run_in_cycle, standard)
    return de.numpy().reshape(np.asarray(settings).shape[:-1] + (2,))


def recommend_settings(model, current, run_in_cycle, standard: Standard, limits: Limits,
                       n_starts: int = 3, spectral_weight: float = RecommendConfig.spectral_weight,
                       move_weight: float = 0.01,
                       seed: int = 0, max_iter: int = 20, robust_draws: int = 0) -> Recommendation:
    """Optimise the next settings (see the module docstring). ``model``: a cycle model with
    ``predict`` (model1 or greybox); ``current`` (10,) nm the settings of the last run;
    ``run_in_cycle`` of the run to plan (None: the model's next run). ``max_iter``: L-BFGS-B
    iterations per solve (20 reach the 0.01 nm set-point resolution on the simulated plants).

    ``robust_draws`` > 0 (grey box only): robust design. The colour term becomes the mean of
    ``dE00^2`` over that many draws of the run's own deposition errors as the model sees them
    (``GreyBox.noise_draws``: the monitor-linked layer errors and the per-side rate error),
    so the settings minimise the expected squared colour error of the run as it will come out,
    not of the run as planned. Where the colour is less sensitive to those errors this trades a
    small nominal offset for a narrower spread."""
    from scipy.optimize import minimize

    if getattr(model, "kind", None) == "model2":
        raise ValueError("model2 maps sensor std to curves; it cannot recommend settings "
                         "(use model1 or greybox)")
    x0 = np.asarray(current, dtype=np.float64).reshape(10)
    step = np.asarray(limits.max_step_nm, dtype=np.float64)
    if np.any(step < 0) or np.any(limits.lower > limits.upper):
        raise ValueError("limits: need max_step_nm >= 0 and lower <= upper")
    # The box of reachable settings; a current setting outside the bounds moves toward them.
    target = np.clip(x0, limits.lower, limits.upper)
    lo = np.maximum(limits.lower, x0 - step)
    hi = np.minimum(limits.upper, x0 + step)
    outside = lo > hi
    lo[outside] = hi[outside] = (x0 + np.clip(target - x0, -step, step))[outside]
    scale = np.maximum(step, 1e-9)

    x0_t, scale_t = torch.as_tensor(x0), torch.as_tensor(scale)

    draws = None
    if robust_draws > 0:
        if not hasattr(model, "noise_draws"):
            raise ValueError(f"robust_draws needs a model with a noise model (greybox), got "
                             f"{getattr(model, 'kind', type(model).__name__)}")
        draws = model.noise_draws(robust_draws, seed)
    run_t = None if run_in_cycle is None else torch.tensor([float(run_in_cycle)], dtype=DTYPE)

    def losses(xt: torch.Tensor) -> torch.Tensor:                            # (K, 10) -> (K,)
        de, ms = _terms(model, xt, run_in_cycle, standard)
        colour = (de ** 2).sum(-1)
        if draws is not None:
            p = model.predict_draws(xt, *draws, run_in_cycle=None if run_t is None else run_t.expand(xt.shape[0]))
            colour = (ciede2000(p.lab, standard.lab) ** 2).mean(1).sum(-1)   # (K, M, 2) -> (K,)
        return colour + spectral_weight * ms.sum(-1) \
            + move_weight * (((xt - x0_t) / scale_t) ** 2).sum(-1)

    def solve(starts: np.ndarray, lo_: np.ndarray, hi_: np.ndarray):
        """K independent box problems at once: L-BFGS-B on their (separable) sum."""
        K = starts.shape[0]

        # Variables in units of the step (x = x0 + scale v): settings of 12-100 nm with steps
        # of 0.4-3 nm are badly scaled for a quasi-Newton method otherwise.
        def f(v):
            vt = torch.tensor(v.reshape(K, 10), dtype=DTYPE, requires_grad=True)
            loss = losses(x0_t + scale_t * vt).sum()
            loss.backward()
            return float(loss.detach()), vt.grad.numpy().reshape(-1).copy()
        to_v = lambda x: ((x - x0) / scale).reshape(-1)  # noqa: E731
        r = minimize(f, to_v(np.clip(starts, lo_, hi_)), jac=True, method="L-BFGS-B",
                     bounds=list(zip(to_v(lo_), to_v(hi_))),
                     options={"maxiter": max_iter, "ftol": 1e-9, "gtol": 1e-6})
        r.x = x0 + scale * r.x.reshape(K, 10)
        x = np.clip(r.x.reshape(K, 10), lo_, hi_)
        with torch.no_grad():
            return x, losses(torch.as_tensor(x)).numpy()

    rng = np.random.default_rng(seed)
    starts = [np.clip(x0, lo, hi), _gauss_newton_start(model, x0, run_in_cycle, standard, lo, hi)]
    starts += [lo + rng.random(10) * (hi - lo) for _ in range(max(n_starts - 2, 0))]
    starts = np.stack(starts[:max(n_starts, 1)])
    xs, fs = solve(starts, np.broadcast_to(lo, starts.shape), np.broadcast_to(hi, starts.shape))
    x_free = xs[int(np.argmin(fs))]

    # Resolve front/back sign conflicts: each sign pattern is a box; solve them all at once.
    d = x_free - x0
    signs = np.sign(d[:5] + d[5:])
    conflict = [i for i in range(5) if d[i] * d[5 + i] < 0]
    x = x_free
    if conflict:
        boxes = []
        for choice in itertools.product((-1.0, 1.0), repeat=len(conflict)):
            s = signs.copy()
            s[conflict] = choice
            lo_p, hi_p = lo.copy(), hi.copy()
            for i in range(5):
                for j in (i, 5 + i):
                    if s[i] > 0:
                        lo_p[j] = max(lo_p[j], x0[j])
                    elif s[i] < 0:
                        hi_p[j] = min(hi_p[j], x0[j])
            if not np.any(lo_p > hi_p):  # empty when a current setting lies outside the bounds
                boxes.append((lo_p, hi_p))
        if not boxes:
            raise ValueError(f"current settings {x0} lie outside the bounds in opposite directions on "
                             f"the front and back of a layer: the bounds and the front/back rule "
                             f"cannot both hold; widen the bounds")
        lo_b, hi_b = np.stack([b[0] for b in boxes]), np.stack([b[1] for b in boxes])
        xs, fs = solve(np.broadcast_to(x_free, lo_b.shape), lo_b, hi_b)
        x = xs[int(np.argmin(fs))]
    # Changes truncated to the set-point step, toward the current settings.
    # (When the current settings lie outside the bounds, round into the box instead.)
    q = np.round((x - x0) / SETTING_STEP_NM, 6)
    change = np.trunc(q)
    change = np.where(x0 + change * SETTING_STEP_NM < lo - 1e-12, np.ceil(q), change)
    change = np.where(x0 + change * SETTING_STEP_NM > hi + 1e-12, np.floor(q), change)
    x = np.clip(x0 + change * SETTING_STEP_NM, lo, hi)  # clip: a box narrower than the grid
    change = x - x0
    _check(x, x0, lo, hi)
    de_new = predicted_delta_e(model, x, run_in_cycle, standard)
    de_cur = predicted_delta_e(model, x0, run_in_cycle, standard)
    with torch.no_grad():
        _, ms = _terms(model, torch.as_tensor(x)[None], run_in_cycle, standard)
        loss = float(losses(torch.as_tensor(x)[None])[0])
    return Recommendation(x, x0, change, de_new, de_cur, (ms[0].sqrt() * SPECTRAL_UNIT).numpy(),
                          loss, {"conflicts_resolved": len(conflict), "starts": len(starts),
                                 "lab": predicted_lab(model, x, run_in_cycle)})


def _gauss_newton_start(model, x0, run_in_cycle, standard, lo, hi) -> np.ndarray:
    """One damped Gauss-Newton step on the spectral residual, clipped to the box: a start near
    the optimum when the model is close to linear over a step."""
    x = torch.tensor(x0, dtype=DTYPE)
    fun = lambda v: (model.predict(v[None], None, None if run_in_cycle is None else  # noqa: E731
                                   torch.tensor([float(run_in_cycle)], dtype=DTYPE)).R[0]
                     - standard.R).reshape(-1)
    J = torch.autograd.functional.jacobian(fun, x, vectorize=True)                           # (2W, 10)
    r = fun(x).detach()
    JtJ = J.T @ J
    lam = 1e-3 * torch.trace(JtJ) / 10
    dx = -torch.linalg.solve(JtJ + lam * torch.eye(10, dtype=DTYPE), J.T @ r)
    return np.clip(x0 + dx.numpy(), lo, hi)


def _check(x, x0, lo, hi, tol=1e-9) -> None:
    d = x - x0
    if np.any(x < lo - tol) or np.any(x > hi + tol):
        raise RuntimeError(f"internal: recommendation leaves its box: {x} not in [{lo}, {hi}]")
    if np.any(d[:5] * d[5:] < -tol):
        raise RuntimeError(f"internal: front and back changes have opposite signs: {d}")
