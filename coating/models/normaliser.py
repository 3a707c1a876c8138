"""What every per-cycle model shares: stored normalisation and the ``Prediction`` it returns.

A ``Normaliser`` (frozen dataclass of tensors) is computed ONCE from the training rows and stored
with the model as buffers (so ``state_dict()`` carries it); prediction never looks at the
statistics of the batch it predicts. That is the notes' single-sample bug designed out: a sample
predicted alone gives the same output as inside a batch (tests/coating/models/test_normaliser.py).
All tensors are float64 (``DTYPE``) on the CPU.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Mapping

import torch
from torch import nn

from coating.line.schema import WAVELENGTHS_NM

__all__ = ["DTYPE", "N_WL", "Normaliser", "Prediction", "Normalised"]

DTYPE = torch.float64
N_WL = len(WAVELENGTHS_NM)


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


class Normalised(nn.Module):
    """Holds a ``Normaliser`` as buffers, so ``state_dict()`` carries it (and a checkpoint of the
    state dict alone restores it); ``normaliser`` rebuilds the frozen dataclass on access."""

    def _set_normaliser(self, normaliser: Normaliser) -> None:
        for f in dataclasses.fields(Normaliser):
            self.register_buffer(f"norm_{f.name}", getattr(normaliser, f.name).to(DTYPE).clone())

    @property
    def normaliser(self) -> Normaliser:
        return Normaliser(*(getattr(self, f"norm_{f.name}") for f in dataclasses.fields(Normaliser)))
