"""Next-run thickness settings from a cycle model, and the ``coating recommend`` command.

Objective (to minimise) for settings ``x`` (10, nm), with the model's predicted curves
``R_s(x)`` (percent) and their L*a*b* for the next run:

    sum_s dE00_s(x)^2 + spectral_weight * sum_s mean_l ((R_s - R_std,s) / 0.1 %)^2
                      + move_weight * sum_i ((x_i - x0_i) / max_step_i)^2

(``s`` front and back; CIEDE2000 from ``coating.colour``; the small move term picks, among
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

import dataclasses
import itertools
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from .colour import Colorimeter, ciede2000
from .recommend_config import RecommendConfig
from .schema import WAVELENGTHS_NM

__all__ = ["Limits", "Standard", "Recommendation", "default_limits", "recommend_settings",
           "predicted_delta_e", "predicted_lab", "run_recommend", "read_runs",
           "select_cycle_model"]

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
                          loss, {"conflicts_resolved": len(conflict), "starts": len(starts)})


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


# --- model choice ------------------------------------------------------------------------------
def select_cycle_model(models: dict, run_rows) -> tuple[int, float]:
    """The cycle whose model has the lowest curve loss (MSE, %^2) on measured ``run_rows``;
    ``models``: cycle_id -> model. Returns (cycle_id, loss)."""
    from .fitting import run_loss
    if not models:
        raise ValueError("no cycle models to choose from")
    losses = {c: float(run_loss(m, run_rows).mean()) for c, m in models.items()}
    c = min(losses, key=losses.get)
    return c, losses[c]


# --- the command ---------------------------------------------------------------------------------
def read_runs(path):
    """NEW.csv: ``furnace_no`` required; ``cycle_id``, ``run_in_cycle``, ``date`` optional; when
    a row carries a full measurement (all history columns filled) it is returned as measured.

    Returns a list of dicts: ``furnace_no``, ``cycle_id`` (int or None), ``run_in_cycle``
    (int or None), ``date`` (str or None), ``measured`` (a one-row ``History`` or None).
    """
    import csv
    import io

    from . import schema
    path = Path(path)
    if not path.exists():
        raise ValueError(f"{path}: no such file")
    text = schema.read_utf8(path)   # a UTF-8 BOM is accepted; another encoding is named, not guessed
    lines = list(csv.reader(line for line in io.StringIO(text, newline="") if not line.startswith("#")))
    lines = [r for r in lines if any(x.strip() for x in r)]  # blank lines (a trailing one) are no rows
    header = [h.strip() for h in lines[0]] if lines else []
    if any(";" in h for h in header):
        raise ValueError(f"{path}: line 1: the header is semicolon-separated; expected commas (export the "
                         f"file as comma-separated CSV)")
    if len(lines) < 2 or "furnace_no" not in header:
        raise ValueError(f"{path}: expected a header with at least 'furnace_no' and one data row")
    for i, r in enumerate(lines[1:]):
        if len(r) != len(header):
            raise ValueError(f"{path}: row {i + 1}: expected {len(header)} comma-separated fields (as in the "
                             f"header), got {len(r)}")
    rows = [dict(zip(header, r)) for r in lines[1:]]
    known = set(schema.COLUMNS)
    extra = [c for c in rows[0] if c not in known]
    if extra:
        raise ValueError(f"{path}: unexpected column(s) {extra}; allowed: the history schema's columns")
    out = []
    first_row: dict[str, int] = {}
    for i, r in enumerate(rows):
        where = f"{path}: row {i + 1}"
        fno = (r.get("furnace_no") or "").strip()
        if not fno:
            raise ValueError(f"{where}: empty furnace_no")
        if fno in first_row:  # two plans for one run: which one the operator gets would be an accident
            raise ValueError(f"{where}: column 'furnace_no': duplicate furnace number {fno!r} (first at row "
                             f"{first_row[fno]}); expected one row per furnace run")
        first_row[fno] = i + 1

        def opt_int(name):
            v = (r.get(name) or "").strip()
            if not v:
                return None
            try:
                x = float(v)
            except ValueError:
                raise ValueError(f"{where}: column {name!r}: expected an integer, got {v!r}") from None
            if not x.is_integer() or x < 1:
                raise ValueError(f"{where}: column {name!r}: expected an integer >= 1, got {v!r}")
            return int(x)
        rec = {"furnace_no": fno, "cycle_id": opt_int("cycle_id"), "run_in_cycle": opt_int("run_in_cycle"),
               "date": (r.get("date") or "").strip() or None, "measured": None}
        meas_cols = schema.SET_COLS + schema.STD_COLS + schema.RF_COLS + schema.RB_COLS
        filled = [c for c in meas_cols if (r.get(c) or "").strip()]
        if filled and len(filled) < len(meas_cols):
            raise ValueError(f"{where} (furnace_no {fno}): a measured run needs all of set_*, std_*, "
                             f"R_F_*, R_B_*; {len(meas_cols) - len(filled)} are missing or empty")
        if filled:
            cols = {c: [r.get(c, "")] for c in schema.COLUMNS}
            cols["furnace_no"] = [fno]
            cols["cycle_id"] = [str(rec["cycle_id"] or 1)]
            cols["run_in_cycle"] = [str(rec["run_in_cycle"] or 1)]
            cols["date"] = [rec["date"] or "2000-01-01"]
            for c in schema.LAB_COLS:
                if not (r.get(c) or "").strip():
                    cols[c] = ["50"]  # Lab is recomputed from the curves where not given
            rec["measured"] = schema._validate(cols, f"{path} row {i + 1}")
        out.append(rec)
    return out


def _latest_cycle_rows(history, cycle_id):
    from .history_rows import select_rows
    idx = np.flatnonzero(history.cycle_id == cycle_id)
    return select_rows(history, idx[np.argsort(history.run_in_cycle[idx], kind="stable")])


def plan_run(entry, history, cycle_models: dict, standard: Standard, fine_tune: bool = True,
             bound_rel: float = RecommendConfig.bound_rel, max_step_rel: float = RecommendConfig.max_step_rel,
             n_starts: int = 4, robust_draws: int = 0, spectral_weight: float = RecommendConfig.spectral_weight,
             refit: bool = True):
    """Recommendation for one NEW.csv entry (see ``run_recommend``). Returns (cycle, Recommendation).

    The cycle model is brought up to date with the cycle's runs before planning
    (``fitting.update_cycle_model``, the rule the closed-loop benchmark runs too): ``refit``
    (grey box): fitted again, with the registry model's hyperparameters, on all of the cycle's
    runs in the history and the measured run (a smoother: every run's information, per-layer
    tooling included, is used at once); otherwise filter steps on the runs after its training
    data and on the measured run. ``fine_tune`` False: the registry model as it is (neither).
    """
    from .fitting import update_cycle_model
    from .history_rows import concat_rows, select_rows
    meas = entry["measured"]
    cycle = entry["cycle_id"]
    if cycle is not None and cycle not in cycle_models:
        raise ValueError(f"furnace_no {entry['furnace_no']}: no model for cycle {cycle} "
                         f"(models for cycles {sorted(cycle_models)})")
    if cycle is None:
        if meas is not None:
            cycle, _ = select_cycle_model(cycle_models, meas)
        else:
            cycle = int(history.cycle_id.max())
            if cycle not in cycle_models:
                raise ValueError(f"furnace_no {entry['furnace_no']}: no cycle_id given and no model for "
                                 f"the history's latest cycle {cycle}")
    model, meta = cycle_models[cycle], getattr(cycle_models[cycle], "registry_meta", {})
    rows = _latest_cycle_rows(history, cycle)
    last_seen = int(meta.get("last_run_in_cycle", 0))
    # (A measured run already in the history is used once, as the measured run.)
    others = select_rows(rows, rows.furnace_no != entry["furnace_no"]) if len(rows) else rows
    if meas is not None and entry["run_in_cycle"] is None:  # the run after the cycle's latest
        last = int(others.run_in_cycle.max()) if len(others) else last_seen
        meas = dataclasses.replace(meas, run_in_cycle=np.array([last + 1]))
    seen = others if meas is None else concat_rows(others, meas)
    if fine_tune:
        newer = select_rows(others, others.run_in_cycle > last_seen) if len(others) else others
        model = update_cycle_model(model, seen, [newer] + ([meas] if meas is not None else []), full_refit=refit)
    if meas is not None:
        current = meas.settings[0]
        run = int(meas.run_in_cycle[0]) + 1
    else:
        if not len(rows):
            raise ValueError(f"furnace_no {entry['furnace_no']}: cycle {cycle} has no runs in the "
                             f"history and the row carries no measurement: no current settings")
        current = rows.settings[-1]
        run = entry["run_in_cycle"] or int(rows.run_in_cycle[-1]) + 1
    ref = np.median(rows.settings, axis=0) if len(rows) else current
    limits = default_limits(ref, bound_rel, max_step_rel)
    if robust_draws and getattr(model, "kind", None) != "greybox":
        robust_draws = 0                     # model1 has no noise model: nominal design
    return cycle, recommend_settings(model, current, run, standard, limits, n_starts=n_starts,
                                     robust_draws=robust_draws, spectral_weight=spectral_weight)


def format_report(furnace_no: str, cycle: int, rec: Recommendation, kind: str) -> str:
    names = [f"F{i}" for i in range(1, 6)] + [f"B{i}" for i in range(1, 6)]
    lines = [f"furnace_no {furnace_no}: recommended settings (cycle {cycle} {kind} model)", "",
             f"{'layer':>6} {'current nm':>11} {'recommended':>12} {'change nm':>10}"]
    for n, c, s, d in zip(names, rec.current, rec.settings, rec.change):
        lines.append(f"{n:>6} {c:11.2f} {s:12.2f} {d:+10.2f}")
    lines += ["", f"predicted dE00 front {rec.dE00[0]:.3f}  back {rec.dE00[1]:.3f}  "
              f"(with the current settings: front {rec.dE00_current[0]:.3f}  back {rec.dE00_current[1]:.3f})",
              "constraint: front and back changes of a layer never have opposite signs", ""]
    return "\n".join(lines)


REPORT_COLUMNS = ["furnace_no"] + [f"set_{n}" for n in [f"F{i}" for i in range(1, 6)] +
                                     [f"B{i}" for i in range(1, 6)]] + ["dE00_F", "dE00_B"]
TABLE_NAME = "recommendations.csv"


def report_file_name(furnace_no: str) -> str:
    """``<furnace_no>.txt`` with every character other than a letter, digit, ``-``, ``_`` or
    ``.`` replaced by ``_`` (so ``A/1`` cannot name a sub-folder)."""
    return "".join(ch if ch.isalnum() or ch in "-_." else "_" for ch in furnace_no) + ".txt"


def report_file_names(furnace_nos, where) -> dict[str, str]:
    """furnace_no -> report file name; refuses two furnace numbers that map to one name (also
    when they differ only in case: a case-insensitive file system keeps one of the two)."""
    names, taken = {}, {}
    for fno in furnace_nos:
        name = report_file_name(fno)
        key = name.lower()
        if key in taken:
            raise ValueError(f"{where}: column 'furnace_no': {taken[key]!r} and {fno!r} would both be "
                             f"reported in {name}; expected furnace numbers that differ in a letter, "
                             f"digit, '-', '_' or '.' (other characters become '_')")
        taken[key] = fno
        names[fno] = name
    return names


def check_out_folder(out: Path) -> None:
    """``OUT`` is replaced as a whole, so it must be new, empty or an earlier ``coating
    recommend`` output (only ``*.txt`` files and ``recommendations.csv``): never a folder of
    other files, which the swap would delete."""
    if out.exists() and not out.is_dir():
        raise ValueError(f"--out {out}: exists and is not a folder; expected a new or earlier output folder")
    if out.is_dir():
        foreign = [p.name for p in sorted(out.iterdir())
                   if not (p.is_file() and not p.is_symlink() and (p.suffix == ".txt" or p.name == TABLE_NAME))]
        if foreign:
            raise ValueError(f"--out {out}: holds {foreign[:3]}{' ...' if len(foreign) > 3 else ''}, which "
                             f"coating recommend did not write and would delete; expected a new, empty or "
                             f"earlier recommend output folder")


def check_finite(furnace_no: str, rec: Recommendation) -> None:
    """Refuse a recommendation with a non-finite setting or prediction (never report NaN as a plan)."""
    for what, v in (("settings", rec.settings), ("predicted dE00", rec.dE00),
                    ("predicted dE00 with the current settings", rec.dE00_current), ("current settings", rec.current)):
        if not np.all(np.isfinite(v)):
            raise ValueError(f"furnace_no {furnace_no}: the {what} came out non-finite ({v}); nothing written. "
                             f"Check the history and the cycle's model (a NaN in the inputs reaches the plan)")


def format_table(rows) -> str:
    """``recommendations.csv`` text: ``REPORT_COLUMNS``, one row per (furnace_no, Recommendation);
    written by the csv module, so a furnace number with a comma or quote is quoted."""
    import csv
    import io
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(REPORT_COLUMNS)
    for fno, rec in rows:
        w.writerow([fno] + [f"{v:.2f}" for v in rec.settings] + [f"{rec.dE00[0]:.4f}", f"{rec.dE00[1]:.4f}"])
    return buf.getvalue()


def run_recommend(history_path, runs_path, standard_path, models_dir, out, kind: str = "greybox",
                  config: RecommendConfig = RecommendConfig()) -> int:
    """``coating recommend``: read everything, plan every NEW.csv row, write the outputs.

    For a row with a measurement (a run just made): the given cycle, or the cycle model with the
    lowest loss on it; the current settings are the run's. Otherwise: the given cycle (or the
    history's latest); the current settings are the cycle's latest run's. The grey box is then
    fitted again on all of the cycle's runs in the history and the measured run, with the
    registry model's hyperparameters (``plan_run``; ``config.refit`` False: filter steps instead,
    i.e. fine-tuning on the runs after its training data and on the measured run;
    ``config.fine_tune`` False: the registry model as it is). ``config``: built by the CLI from
    its flags (``coating.cli.recommend_config``).

    Output, all or nothing: ``OUT/<furnace_no>.txt`` per row and ``OUT/recommendations.csv``,
    written into a temporary folder beside ``OUT`` and swapped in only when every row was
    planned (``coating.atomic.atomic_folder``); if any row fails, ``OUT`` is left as it was.
    Refused before any planning: duplicate furnace numbers, two furnace numbers with one report
    file name, an ``OUT`` holding files this command did not write.
    """
    torch.set_num_threads(max(1, min(2, torch.get_num_threads())))
    from . import registry, schema
    from .atomic import atomic_folder
    out = Path(out)
    check_out_folder(out)
    history = schema.read_history(history_path)
    std = schema.read_standard(standard_path)
    standard = Standard.from_curves(std.R_F, std.R_B)
    entries = read_runs(runs_path)
    names = report_file_names([e["furnace_no"] for e in entries], runs_path)
    cycle_models = registry.load_all(models_dir, kind, history=history)
    if not cycle_models:
        raise ValueError(f"{models_dir}: no {kind} models in the registry")
    if config.robust_draws and kind != "greybox":
        print(f"coating recommend: --robust {config.robust_draws} ignored: {kind} has no noise model "
              f"(nominal design)")
    files, table = {}, []
    for e in entries:
        cycle, rec = plan_run(e, history, cycle_models, standard, fine_tune=config.fine_tune,
                              refit=config.refit, bound_rel=config.bound_rel, max_step_rel=config.max_step_rel,
                              robust_draws=config.robust_draws, spectral_weight=config.spectral_weight)
        check_finite(e["furnace_no"], rec)
        files[names[e["furnace_no"]]] = format_report(e["furnace_no"], cycle, rec, kind).encode("utf-8")
        table.append((e["furnace_no"], rec))
        print(f"{e['furnace_no']}: cycle {cycle}, predicted dE00 F {rec.dE00[0]:.3f} B {rec.dE00[1]:.3f}")
    files[TABLE_NAME] = format_table(table).encode("utf-8")
    atomic_folder(out, files)
    print(f"wrote {len(entries)} recommendation(s) to {out}")
    return 0
