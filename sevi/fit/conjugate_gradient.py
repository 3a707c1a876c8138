"""Preconditioned conjugate gradients for a symmetric positive-definite operator given only as a
product (``apply(X) = A X`` row by row), with a diagonal (Jacobi) preconditioner.

Used where the matrix is too large to form: the frame sum's pixel covariance (``sevi.fit.frame_sum_fit``,
16,384 folded pixels at 256^2). Textbook PCG (Golub & Van Loan, *Matrix Computations*, 4th ed.,
algorithm 11.5.1), run on every row of the right-hand side at once; it stops when the worst row's
residual ``|B - A X| / |B|`` is below ``tol``, or after ``max_iterations``, and says which.
"""

from __future__ import annotations

from typing import Callable

import torch

__all__ = ["conjugate_gradient"]


def conjugate_gradient(apply: Callable[[torch.Tensor], torch.Tensor], B: torch.Tensor, diag: torch.Tensor,
                       tol: float = 1e-6, max_iterations: int = 5000) -> tuple[torch.Tensor, float, int]:
    """X (R, n) with ``apply(X) = B`` (B: (R, n), one system per row), preconditioned by ``diag``
    (n,) > 0, A's diagonal: (X, the worst row's relative residual, iterations)."""
    X = torch.zeros_like(B)
    r = B.clone()
    z = r / diag
    p = z.clone()
    rz = (r * z).sum(1)
    norm = B.norm(dim=1).clamp_min(1e-300)
    worst = float((r.norm(dim=1) / norm).max())
    if worst < tol:
        return X, worst, 0
    for it in range(1, max_iterations + 1):
        Ap = apply(p)
        alpha = rz / (p * Ap).sum(1).clamp_min(1e-300)
        X += alpha[:, None] * p
        r -= alpha[:, None] * Ap
        worst = float((r.norm(dim=1) / norm).max())
        if worst < tol:
            return X, worst, it
        z = r / diag
        rz_new = (r * z).sum(1)
        p = z + (rz_new / rz.clamp_min(1e-300))[:, None] * p
        rz = rz_new
    return X, worst, max_iterations
