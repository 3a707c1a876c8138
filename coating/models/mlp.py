"""The MLP cycle models: model1 (settings -> curves and L*a*b*) and model2 (std -> curves).

- ``"model1"``: the 10 settings ``[F1..F5, B1..B5]`` (nm) -> front and back reflectance curves
  (81 points each, percent) and L*a*b* of both sides. The notes' recommendation model.
- ``"model2"``: the 14 sensor std values ``[F1..F7, B1..B7]`` -> front and back curves. The notes'
  diagnosis model (which layer's instability moved the colour).
Trained by ``coating.models.fitting.fit``.
"""
from __future__ import annotations

from typing import Mapping

import numpy as np
import torch
from torch import nn

from coating.line.schema import WAVELENGTHS_NM
from coating.models.normaliser import DTYPE, N_WL, Normalised, Normaliser, Prediction
from coating.optics.colour import Colorimeter

__all__ = ["MLPModel", "tanh_mlp"]


def tanh_mlp(n_in: int, n_out: int, width: int, depth: int) -> nn.Sequential:
    """``depth`` hidden layers of ``width`` tanh units, float64: ``(B, n_in) -> (B, n_out)``."""
    layers, d = [], n_in
    for _ in range(depth):
        layers += [nn.Linear(d, width), nn.Tanh()]  # tanh: smooth input gradients for the optimiser
        d = width
    layers.append(nn.Linear(d, n_out))
    return nn.Sequential(*layers).to(DTYPE)


class MLPModel(Normalised):
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
        self.net = tanh_mlp(n_in, n_out, int(hparams["width"]), int(hparams["depth"]))
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
