"""Bounded Levenberg-Marquardt on a Fisher scoring matrix: the one loop every likelihood fit of
``sevi.fit`` runs (``count_fit.Refiner`` and its subclasses, ``image_fit.ImageRefiner``).

Each iteration asks the fit for the gradient g and the curvature H (J diag(1/mu) J^T, plus a prior's
precision where there is one) at theta, holds the parameters at a bound whose gradient pushes outwards
(an active set, so a box edge does not stall the fit) and those the caller fixes, and tries damped
steps (H + lambda diag(H)) s = -g, clipped into the bounds, until one lowers the objective: lambda is
divided by 5 on success and multiplied by 8 on failure (by 10 when the system is singular).

Converged: the objective fell by less than ``tolerance`` (log-likelihood units), or the accepted step
is shorter than ``step_tolerance`` standard deviations in H's metric, or no step lowers it.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

__all__ = ["levenberg_marquardt"]


def levenberg_marquardt(theta: torch.Tensor, f: float, objective: Callable[[torch.Tensor], float],
                        gradient_and_curvature: Callable[[torch.Tensor], tuple[torch.Tensor, torch.Tensor]],
                        lo: torch.Tensor, hi: torch.Tensor, *, max_iterations: int, tolerance: float,
                        step_tolerance: float, lambda_init: float, tries: int = 12,
                        fixed: torch.Tensor | None = None) -> tuple[torch.Tensor, float, int, bool]:
    """Minimise ``objective`` from ``theta`` (inside [lo, hi], with ``f = objective(theta)`` finite):
    (theta, objective, iterations, converged). ``tries``: damped steps tried per iteration;
    ``fixed``: a boolean mask of parameters held where they are."""
    lam = lambda_init
    for it in range(1, max_iterations + 1):
        g, H = gradient_and_curvature(theta)
        held = ((theta <= lo) & (g > 0)) | ((theta >= hi) & (g < 0))
        if fixed is not None:
            held = held | fixed
        free = (~held).nonzero().reshape(-1)
        Hf, gf = H[free][:, free], g[free]
        d = Hf.diagonal().clamp_min(1e-300)
        accepted = False
        for _ in range(tries):
            try:
                sf = -torch.linalg.solve(Hf + lam * torch.diag(d), gf)
            except RuntimeError:
                lam *= 10
                continue
            step = torch.zeros_like(theta)
            step[free] = sf
            new = torch.maximum(torch.minimum(theta + step, hi), lo)
            f_new = objective(new)
            if f_new < f:
                accepted = True
                moved, gain = new - theta, f - f_new
                theta, f = new, f_new
                lam = max(lam / 5, 1e-9)
                break
            lam *= 8
        if not accepted:
            return theta, f, it, True
        size = float(torch.sqrt((moved * (H @ moved)).sum().clamp_min(0)))  # step length in sigmas
        if gain < tolerance or size < step_tolerance:
            return theta, f, it, True
    return theta, f, max_iterations, False
