"""Fitting the per-cycle models: build, fit, choose by validation, refit, fine-tune, evaluate.

``fit(model_kind, hparams, train_rows, val_rows, report=None)`` is one plain PyTorch loop (full
batch: a cycle has 60-160 runs). ``report(epoch, metrics)`` is called once per epoch (a Ray Tune
trainable passes ``lambda e, m: tune.report(m)``). Validation must be a time split
(``history_rows.time_split``: the latest runs of the cycle), never a random one. The
normaliser is computed here, once, from the training rows (``coating.models.normaliser``).
"""
from __future__ import annotations

import copy
import dataclasses
from dataclasses import dataclass
from typing import Callable, Mapping, Sequence

import numpy as np
import torch
from torch import nn

from coating.line.history_rows import rows_to_tensors, select_rows
from coating.line.schema import WAVELENGTHS_NM, History
from coating.models.greybox import GreyBox
from coating.models.hparams import resolve_hparams
from coating.models.mlp import MLPModel
from coating.models.normaliser import DTYPE, N_WL, Normaliser
from coating.optics.colour import Colorimeter, ciede2000
from coating.optics.stacks import settings_of_recipe

__all__ = ["FitResult", "build_model", "build_model_from_state", "run_loss", "evaluate", "fit", "fit_best",
           "refit", "fine_tune", "update_cycle_model"]


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


def update_cycle_model(model, cycle_rows: History, new_rows: Sequence[History], full_refit: bool = True) -> nn.Module:
    """A cycle model brought up to date before the next run is planned: the one rule that
    ``coating recommend`` and the closed-loop benchmark (``coating.recommend.closed_loop``) share.

    ``cycle_rows``: all of the cycle's runs so far, the just-measured ones included; ``new_rows``:
    batches of runs the model has not seen, oldest first. A grey box with ``full_refit`` (and at
    least 2 runs) is fitted again from scratch on ``cycle_rows`` (``refit``: every run's
    information at once); otherwise (an MLP, or ``full_refit`` False) each batch of ``new_rows``
    is one filter step (``fine_tune``).
    """
    if full_refit and getattr(model, "kind", None) == "greybox" and len(cycle_rows) >= 2:
        return refit(model, cycle_rows)
    for rows in new_rows:
        if len(rows):
            model = fine_tune(model, rows)
    return model
