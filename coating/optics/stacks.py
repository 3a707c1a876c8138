"""The plant's default front and back AR stacks and the 10-value thickness setting.

The plant's recipe (docs/coating.md) lists 7 layers per side, e.g. front
``24.11 5 12.42 36.85 102.73 93.93 25`` nm and back ``25.07 5 13.20 37.19 104.42 94.26 25`` nm;
layers 1, 3, 4, 5, 6 (1-based, recipe order) are adjusted run to run, layers 2 (5 nm) and 7
(25 nm) are fixed. A setting vector is ``[F1..F5, B1..B5]`` (nm): the adjustable layers of
the front then the back, in recipe order.

Our reading of the recipe (a choice, documented because the plant's notes do not give the
materials): the fixed layers are a 5 nm ITO antistatic layer and a 25 nm hard-coat primer;
the adjustable ones are the classic four-layer ZrO2/SiO2 broadband AR plus an SiO2 adhesion
layer. In deposition order from the lens:

    lens | primer 25 (L7) | SiO2 (L1) | ZrO2 (L3) | SiO2 (L4) | ZrO2 (L5) | ITO 5 (L2) | SiO2 (L6) | air

ITO under the outer SiO2 is where ophthalmic AR processes usually put it. With the literal
list order as deposition order no assignment of common materials gives an AR coating (the
outer 25 nm would spoil the quarter-wave SiO2), hence this mapping. With it the default front
stack gives a luminous reflectance (Y, D65, 10 deg) of ~0.97 % and a bluish residual colour
(L* ~ 8.7, a* ~ -3.6, b* ~ -18), a plausible ophthalmic AR.

Settings are machine set points; the deposited thickness is ``setting * tooling`` (the plant
simulator's calibration factor), so a nominal setting is ``recipe / tooling``.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from coating.optics import materials
from coating.optics.colour import Colorimeter
from coating.optics.transfer_matrix import default_wavelengths_nm, reflectance

__all__ = [
    "RECIPE_FRONT_NM", "RECIPE_BACK_NM", "RECIPE_MATERIALS", "ADJUSTABLE", "FIXED",
    "INCIDENT_FIRST", "N_SETTINGS", "SETTING_NAMES", "recipe_thickness", "settings_of_recipe",
    "incident_first", "StackModel",
]

RECIPE_FRONT_NM = (24.11, 5.0, 12.42, 36.85, 102.73, 93.93, 25.0)   # docs/coating.md
RECIPE_BACK_NM = (25.07, 5.0, 13.20, 37.19, 104.42, 94.26, 25.0)    # docs/coating.md
RECIPE_MATERIALS = ("SiO2", "ITO", "ZrO2", "SiO2", "ZrO2", "SiO2", "primer")  # our reading
ADJUSTABLE = (0, 2, 3, 4, 5)  # 0-based recipe positions set by F1..F5 (and B1..B5)
FIXED = (1, 6)
# Recipe positions listed from the incident (air) side to the substrate, for coating.optics.
INCIDENT_FIRST = (5, 1, 4, 3, 2, 0, 6)
N_SETTINGS = 10
SETTING_NAMES = tuple(f"set_F{i}" for i in range(1, 6)) + tuple(f"set_B{i}" for i in range(1, 6))


def recipe_thickness(settings: torch.Tensor, front_fixed=RECIPE_FRONT_NM,
                     back_fixed=RECIPE_BACK_NM) -> torch.Tensor:
    """Recipe-order thicknesses ``(..., 2, 7)`` (front, back) from settings ``(..., 10)`` nm.

    The adjustable positions take the settings as given; the fixed ones take the recipe's
    values. No tooling factor is applied here (the plant simulator applies it).
    """
    if settings.shape[-1] != N_SETTINGS:
        raise ValueError(f"settings must have {N_SETTINGS} values [F1..F5, B1..B5], "
                         f"got shape {tuple(settings.shape)}")
    out = settings.new_zeros(settings.shape[:-1] + (2, 7))
    fixed = torch.tensor([front_fixed, back_fixed], dtype=settings.dtype, device=settings.device)
    out = out + fixed  # (..., 2, 7)
    adj = torch.tensor(ADJUSTABLE, device=settings.device)
    sides = settings.reshape(settings.shape[:-1] + (2, 5))
    return out.index_copy(-1, adj, sides)


def settings_of_recipe(front_nm=RECIPE_FRONT_NM, back_nm=RECIPE_BACK_NM) -> tuple[float, ...]:
    """The 10 adjustable thicknesses of a recipe, ``[F1..F5, B1..B5]`` (nm)."""
    return tuple(front_nm[i] for i in ADJUSTABLE) + tuple(back_nm[i] for i in ADJUSTABLE)


def incident_first(recipe_nm: torch.Tensor) -> torch.Tensor:
    """Reorder recipe-order values ``(..., 7)`` (thickness or index rows) to optics order."""
    return recipe_nm[..., list(INCIDENT_FIRST)]


@dataclass(frozen=True)
class StackModel:
    """Indices of the default stack on one grid; build once, call many.

    ``n_recipe``: ``(7, W)`` complex indices in recipe order (nominal packing densities);
    ``n_substrate``: ``(W,)``; ``wavelength_nm``: ``(W,)``; ``colorimeter`` for Lab.
    """
    wavelength_nm: torch.Tensor
    n_recipe: torch.Tensor
    n_substrate: torch.Tensor
    colorimeter: Colorimeter

    @staticmethod
    def build(wavelength_nm=None, dtype=torch.float64, device=None) -> "StackModel":
        wl = default_wavelengths_nm(dtype, device) if wavelength_nm is None else \
            torch.as_tensor(wavelength_nm, dtype=dtype, device=device)
        n = torch.stack([materials.index(m, wl) for m in RECIPE_MATERIALS])   # (7, W)
        return StackModel(wl, n, materials.index("lens", wl), Colorimeter.build(wl, dtype, device))

    def reflectance(self, recipe_nm: torch.Tensor, n_recipe: torch.Tensor | None = None,
                    angle_deg: float = 0.0, polarization: str = "u") -> torch.Tensor:
        """Reflectance fraction ``(..., W)`` of stacks given in recipe order ``(..., 7)`` nm.

        ``n_recipe`` overrides the indices (e.g. drifted), shape broadcastable to ``(..., 7, W)``.
        """
        n = self.n_recipe if n_recipe is None else n_recipe
        n_inc = n[..., list(INCIDENT_FIRST), :]
        return reflectance(n_inc, incident_first(recipe_nm), self.wavelength_nm,
                           self.n_substrate, 1.0, angle_deg, polarization)
