"""Batched synthetic coating data around a cycle's machine state, for pretraining models.

The pure function behind the shared generator pool's "coating-spectra" recipe (the Ray actor
that wraps it lives elsewhere). Same physics as ``coating.line.plant.step``, vectorised over runs and
run on any device.
"""
from __future__ import annotations

import dataclasses

import torch

from coating.line import plant
from coating.optics.stacks import StackModel

__all__ = ["coating_spectra_batch"]


def coating_spectra_batch(cycle_state_params, n: int, seed: int, device,
                          params: plant.PlantParams = plant.PlantParams(),
                          settings_rel_sd: float = 0.02, dtype=torch.float64) -> dict[str, torch.Tensor]:
    """``n`` simulated runs drawn around the machine state ``cycle_state_params``.

    Args:
        cycle_state_params: a ``plant.PlantState`` (the cycle's calibration, drift and materials).
        n: number of runs. seed: seed of a ``torch.Generator`` on ``device``; the result is
            deterministic for a given (state, n, seed, device, dtype).
        device: torch device (``"cuda"`` or ``"cpu"``); the caller picks it.
        settings_rel_sd: relative spread of the drawn settings around the state's last settings
            (our choice: 2 %, wider than the operators' moves so models see the surroundings).

    Returns: dict of tensors on ``device``: ``settings`` (n, 10) nm, ``std`` (n, 14),
        ``R_F``, ``R_B`` (n, W) percent at ``params.measure_angle_deg`` with measurement noise,
        ``lab_F``, ``lab_B`` (n, 3) from the noisy curves, ``thickness_nm`` (n, 2, 7).
    """
    state = cycle_state_params
    if not isinstance(state, plant.PlantState):
        raise ValueError(f"cycle_state_params must be a coating.line.plant.PlantState, got {type(state).__name__}")
    if n < 1:
        raise ValueError(f"n must be >= 1, got {n}")
    device = torch.device(device)
    g = torch.Generator(device=device).manual_seed(int(seed))
    kw = dict(dtype=dtype, device=device)
    randn = lambda *shape: torch.randn(*shape, generator=g, **kw)  # noqa: E731

    model = StackModel.build(dtype=dtype, device=device)
    settings = torch.tensor(state.settings, **kw) * (1 + settings_rel_sd * randn(n, 10))      # (n, 10)
    log_ratio = params.std_log_sd * randn(n, 14)
    std = torch.tensor(params.std_median, **kw) * torch.exp(log_ratio)                        # (n, 14)
    sign = torch.tensor(state.monitor_sign, **kw)
    rel_error = (params.kappa * torch.expm1(log_ratio) * sign + params.residual_sd * randn(n, 14)
                 + params.run_scale_sd * randn(n, 2).repeat_interleave(7, dim=1))             # (n, 14)
    # Runs spread over the rest of the cycle: tooling drifts along its trend, voids dry out.
    runs_ahead = torch.rand(n, generator=g, **kw) * max(state.cycle_length - state.run_in_cycle, 1)
    tooling = torch.tensor(state.tooling, **kw) * (1 + torch.tensor(state.tooling_trend, **kw) * runs_ahead[:, None])
    run = state.run_in_cycle + 1 + runs_ahead
    void_fill = params.void_fill_end + (params.void_fill_start - params.void_fill_end) * \
        torch.exp(-run / params.void_fill_tau_runs)
    packing = torch.tensor(state.packing, **kw).expand(n, 2)
    R, thickness = plant.run_reflectance(model, settings, tooling, rel_error, packing, void_fill,
                                         params.measure_angle_deg)                            # (n, 2, W)
    R = 100 * R + params.noise_R_percent * randn(*R.shape) + params.offset_R_percent * randn(n, 2, 1)
    lab = model.colorimeter.lab(R / 100)                                                      # (n, 2, 3)
    return {"settings": settings, "std": std, "R_F": R[:, 0], "R_B": R[:, 1],
            "lab_F": lab[:, 0], "lab_B": lab[:, 1], "thickness_nm": thickness}


def cycle_state(history, cycle_id: int):
    """A simulator state centred on the cycle: nominal machine constants, the cycle's latest
    settings and run count (real plant data carry no calibration, so the rest is the prior)."""
    import numpy as np

    from coating.line import plant

    rows = np.flatnonzero(history.cycle_id == cycle_id)
    last = rows[np.argmax(history.run_in_cycle[rows])]
    base = plant.init(plant.PlantParams(), seed=cycle_id)
    return dataclasses.replace(base, cycle_id=int(cycle_id), run_in_cycle=int(history.run_in_cycle[last]),
                               cycle_length=max(int(history.run_in_cycle[last]) + 1, base.cycle_length),
                               settings=tuple(float(v) for v in history.settings[last]))
