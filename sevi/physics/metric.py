"""The course's Distance between true and recovered anisotropy parameters, and the training loss.

    Distance = sum_j sqrt( sum_i 2/(4i+1) (beta_hat_ij - beta_ij)^2 ),   j = shells, i = 1..L

is the L2 distance between the true and recovered angular densities I_j(x), summed over shells,
because integral_{-1}^{1} P_l(x)^2 dx = 2/(2l+1) with l = 2i and the P_l are orthogonal.
Lower is better; shells must be in the same (radius) order on both sides.
"""

from __future__ import annotations

# |R1 - R2| below which two shells count as "overlapping" in every split the project reports
# (docs/conventions.md): about 4 sigma_R of the prior's widest shells, where the notes' hardest case begins.
SEPARATION = 0.03

import torch


def legendre_weights(n_terms: int, dtype=torch.float64, device=None) -> torch.Tensor:
    """2/(4i+1) for i = 1..n_terms: (n_terms,)."""
    i = torch.arange(1, n_terms + 1, dtype=dtype, device=device)
    return 2.0 / (4 * i + 1)


def squared_shell_distance(beta_hat: torch.Tensor, beta: torch.Tensor) -> torch.Tensor:
    """sum_i 2/(4i+1) (beta_hat_i - beta_i)^2 per shell: (..., 2, L) -> (..., 2)."""
    if beta_hat.shape != beta.shape:
        raise ValueError(f"beta_hat {tuple(beta_hat.shape)} and beta {tuple(beta.shape)} differ in shape")
    w = legendre_weights(beta.shape[-1], beta_hat.dtype, beta_hat.device)
    return ((beta_hat - beta.to(beta_hat)) ** 2 * w).sum(-1)


def distance(beta_hat: torch.Tensor, beta: torch.Tensor) -> torch.Tensor:
    """The course's Distance per image: (..., 2, L) -> (...)."""
    return squared_shell_distance(beta_hat, beta).sqrt().sum(-1)


def squared_distance_loss(beta_hat: torch.Tensor, beta: torch.Tensor) -> torch.Tensor:
    """The notes' training loss, the metric without the square root, averaged over the batch.

    Smooth at zero (the square root is not), so its gradient does not blow up near a perfect fit.
    """
    return squared_shell_distance(beta_hat, beta).sum(-1).mean()
