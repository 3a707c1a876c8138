"""Optical constants of the coating materials: dispersion models and a packing-density model.

Conventions: wavelengths in nm (vacuum); indices are complex ``n + i k`` with ``k >= 0``
absorbing (the convention of ``coating.optics`` and of the ``tmm`` package). Every function is
pure and differentiable in torch: the index parameters (Cauchy coefficients, packing density,
void index) may be tensors with ``requires_grad``.

Sources of the constants are given beside each one. Where a number is our choice (not a
measurement), the comment says so. Evaporated oxide films are porous: their index is below the
bulk index and rises when the voids take up water; ``packed_film_index`` models that with the
Lorentz-Lorentz (Clausius-Mossotti) effective-medium mixing rule, the standard packing-density
model of Macleod, *Thin-Film Optical Filters* (5th ed., 2018), section on microstructure, after
Kinosita & Nishibori, J. Vac. Sci. Technol. 6, 730 (1969).
"""
from __future__ import annotations

import csv
import functools
from dataclasses import dataclass
from importlib import resources

import torch

__all__ = [
    "sellmeier_n", "cauchy_n", "interp_nk", "packed_film_index",
    "Sellmeier", "Cauchy", "Constant", "TabulatedNK", "PackedFilm",
    "MATERIALS", "material", "index",
]

WATER_INDEX = 1.333  # visible index of liquid water (IAPWS); fills the voids of a humid film


def _c(x: torch.Tensor) -> torch.Tensor:
    """Real tensor -> complex of matching precision (imaginary part zero)."""
    return torch.complex(x, torch.zeros_like(x)) if not x.is_complex() else x


def sellmeier_n(wavelength_nm: torch.Tensor, B, C_um2) -> torch.Tensor:
    """Real index from the Sellmeier equation ``n^2 = 1 + sum_i B_i l^2 / (l^2 - C_i)``.

    ``l`` in micrometres (how Sellmeier coefficients are published); ``C_um2`` in um^2.
    Returns shape ``wavelength_nm.shape``.
    """
    lam2 = (wavelength_nm / 1000.0) ** 2
    n2 = torch.ones_like(lam2)
    for b, c in zip(B, C_um2):
        n2 = n2 + b * lam2 / (lam2 - c)
    return torch.sqrt(n2)


def cauchy_n(wavelength_nm: torch.Tensor, A, B_nm2=0.0, C_nm4=0.0) -> torch.Tensor:
    """Real index from Cauchy's formula ``n = A + B / l^2 + C / l^4`` with ``l`` in nm."""
    lam2 = wavelength_nm ** 2
    return A + B_nm2 / lam2 + C_nm4 / (lam2 * lam2)


def interp_nk(wavelength_nm: torch.Tensor, table_nm: torch.Tensor, n: torch.Tensor,
              k: torch.Tensor) -> torch.Tensor:
    """Complex index linearly interpolated in a table; refuses to extrapolate.

    ``table_nm`` strictly increasing, shape ``(T,)``; ``n``, ``k`` shape ``(T,)``.
    """
    lo, hi = float(table_nm[0]), float(table_nm[-1])
    if float(wavelength_nm.min()) < lo or float(wavelength_nm.max()) > hi:
        raise ValueError(f"wavelengths {float(wavelength_nm.min())}..{float(wavelength_nm.max())} nm "
                         f"fall outside the table's range {lo}..{hi} nm")
    idx = torch.searchsorted(table_nm, wavelength_nm.contiguous(), right=True).clamp(1, len(table_nm) - 1)
    x0, x1 = table_nm[idx - 1], table_nm[idx]
    w = (wavelength_nm - x0) / (x1 - x0)
    nn = n[idx - 1] + w * (n[idx] - n[idx - 1])
    kk = k[idx - 1] + w * (k[idx] - k[idx - 1])
    return torch.complex(nn, kk)


def packed_film_index(n_bulk: torch.Tensor, packing_density, n_void=1.0) -> torch.Tensor:
    """Index of a porous film by Lorentz-Lorentz mixing of bulk material and filled voids.

    ``(n^2 - 1)/(n^2 + 2) = p (n_b^2 - 1)/(n_b^2 + 2) + (1 - p)(n_v^2 - 1)/(n_v^2 + 2)``,
    solved for ``n``; ``p`` is the packing density (solid volume fraction, 0..1), ``n_void``
    the index of what fills the voids (1.0 vacuum/air, 1.333 water). Works for complex
    ``n_bulk`` (absorbing) and broadcasts ``p`` and ``n_void`` (e.g. per-run tensors).
    """
    nb2 = n_bulk * n_bulk
    nv2 = torch.as_tensor(n_void) ** 2 if not isinstance(n_void, torch.Tensor) else n_void ** 2
    m = packing_density * (nb2 - 1) / (nb2 + 2) + (1 - packing_density) * (nv2 - 1) / (nv2 + 2)
    n2 = (1 + 2 * m) / (1 - m)
    return torch.sqrt(n2 if n2.is_complex() else _c(n2))


@dataclass(frozen=True)
class Sellmeier:
    """Bulk dispersion by Sellmeier coefficients (``B``, ``C`` in um^2); non-absorbing."""
    B: tuple[float, ...]
    C_um2: tuple[float, ...]
    source: str

    def nk(self, wavelength_nm: torch.Tensor) -> torch.Tensor:
        return _c(sellmeier_n(wavelength_nm, self.B, self.C_um2))


@dataclass(frozen=True)
class Cauchy:
    """Dispersion by Cauchy coefficients (nm units) and a constant extinction ``k``."""
    A: float
    B_nm2: float
    C_nm4: float = 0.0
    k: float = 0.0
    source: str = ""

    def nk(self, wavelength_nm: torch.Tensor) -> torch.Tensor:
        n = cauchy_n(wavelength_nm, self.A, self.B_nm2, self.C_nm4)
        return torch.complex(n, torch.full_like(n, self.k))


@dataclass(frozen=True)
class Constant:
    """A wavelength-independent index (incident medium, a quick what-if)."""
    n: complex
    source: str = ""

    def nk(self, wavelength_nm: torch.Tensor) -> torch.Tensor:
        re = torch.full_like(wavelength_nm, complex(self.n).real)
        return torch.complex(re, torch.full_like(re, complex(self.n).imag))


@dataclass(frozen=True)
class TabulatedNK:
    """Measured (n, k) at tabulated wavelengths, linearly interpolated; no extrapolation."""
    wavelength_nm: tuple[float, ...]
    n: tuple[float, ...]
    k: tuple[float, ...]
    source: str = ""

    def nk(self, wavelength_nm: torch.Tensor) -> torch.Tensor:
        kw = dict(dtype=wavelength_nm.dtype, device=wavelength_nm.device)
        return interp_nk(wavelength_nm, torch.tensor(self.wavelength_nm, **kw),
                         torch.tensor(self.n, **kw), torch.tensor(self.k, **kw))

    @staticmethod
    def from_csv(path, source: str = "") -> "TabulatedNK":
        """Read ``wavelength_nm,n,k`` rows; lines starting with ``#`` are provenance comments."""
        with open(path, newline="") as f:
            rows = [r for r in csv.reader(line for line in f if not line.startswith("#"))]
        header, body = rows[0], rows[1:]
        if [h.strip() for h in header] != ["wavelength_nm", "n", "k"]:
            raise ValueError(f"{path}: header must be 'wavelength_nm,n,k', got {','.join(header)!r}")
        vals = []
        for i, r in enumerate(body, start=2):
            try:
                vals.append(tuple(float(x) for x in r))
            except ValueError:
                raise ValueError(f"{path}: row {i}: expected three numbers, got {r!r}") from None
            if len(r) != 3:
                raise ValueError(f"{path}: row {i}: expected three numbers, got {r!r}")
        wl, n, k = zip(*vals)
        if any(b <= a for a, b in zip(wl, wl[1:])):
            raise ValueError(f"{path}: wavelength_nm must be strictly increasing")
        return TabulatedNK(wl, n, k, source or str(path))


@dataclass(frozen=True)
class PackedFilm:
    """An evaporated film: a bulk dispersion diluted by voids (``packed_film_index``).

    ``packing_density`` and ``void_fill`` (fraction of the voids filled with water, 0..1;
    the void index is interpolated linearly between air and water) are the chamber-condition
    knobs the plant simulator drifts.
    """
    bulk: object
    packing_density: float
    void_fill: float = 0.0
    source: str = ""

    def nk(self, wavelength_nm: torch.Tensor, packing_density=None, void_fill=None) -> torch.Tensor:
        p = self.packing_density if packing_density is None else packing_density
        f = self.void_fill if void_fill is None else void_fill
        n_void = 1.0 + (WATER_INDEX - 1.0) * f
        return packed_film_index(self.bulk.nk(wavelength_nm), p, n_void)


# --- Bulk dispersion data -------------------------------------------------------------------
FUSED_SILICA = Sellmeier(
    B=(0.6961663, 0.4079426, 0.8974794), C_um2=(0.0684043 ** 2, 0.1162414 ** 2, 9.896161 ** 2),
    source="Malitson, J. Opt. Soc. Am. 55, 1205 (1965), fused silica, 0.21-3.71 um")
CUBIC_ZIRCONIA = Sellmeier(
    B=(1.347091, 2.117788, 9.452943), C_um2=(0.062543 ** 2, 0.166739 ** 2, 24.320570 ** 2),
    source="Wood & Nassau, Appl. Opt. 21, 2978 (1982), cubic (Y-stabilised) ZrO2, 0.36-5.1 um")


@functools.lru_cache(maxsize=None)
def _ito_table() -> TabulatedNK:
    path = resources.files("coating.optics").joinpath("data/ito_nk.csv")
    with resources.as_file(path) as p:
        return TabulatedNK.from_csv(p, source="coating/data/ito_nk.csv (see its header)")


# Film materials of the default stacks. Packing densities are our choice, picked so that the
# film indices at 550 nm land where e-beam films are reported (SiO2 ~1.46, ZrO2 ~2.05; Macleod
# ch. on microstructure quotes 0.9-1.0 for unassisted oxides on heated substrates; ion-assisted
# or heated ophthalmic processes sit near the top of that range).
SIO2_FILM = PackedFilm(FUSED_SILICA, packing_density=0.985,
                       source="bulk: Malitson 1965; packing density 0.985 our choice (n550 ~ 1.453)")
ZRO2_FILM = PackedFilm(CUBIC_ZIRCONIA, packing_density=0.91,
                       source="bulk: Wood & Nassau 1982; packing density 0.91 our choice (n550 ~ 2.04)")
# Lens substrate with its hard coat: CR-39-like, n_d = 1.498 (PPG CR-39 data sheet); the small
# Cauchy slope (Abbe number ~58) is our choice of a plausible value.
LENS_SUBSTRATE = Cauchy(A=1.4866, B_nm2=4000.0,
                        source="CR-39 n_d 1.498, Abbe ~58; Cauchy form and coefficients our fit")
# Hydrophobic (fluorinated silane) top coat: n ~ 1.38 is typical of such layers; our choice.
TOP_COAT = Cauchy(A=1.375, B_nm2=1500.0,
                  source="fluoro-silane anti-smudge top coat, n ~1.38 typical; our choice")
# Hard-coat primer under the AR stack: hard coats are index-matched to the lens to avoid
# interference fringes; n550 ~ 1.51 (slightly above the lens) is our choice.
PRIMER = Cauchy(A=1.4966, B_nm2=4000.0,
                source="index-matched hard-coat primer, n550 ~1.51; our choice")
AIR = Constant(1.0, source="air taken as vacuum (n - 1 ~ 2.7e-4 ignored)")

MATERIALS: dict[str, object] = {
    "air": AIR,
    "SiO2": SIO2_FILM,
    "ZrO2": ZRO2_FILM,
    "fused_silica": FUSED_SILICA,
    "cubic_zirconia": CUBIC_ZIRCONIA,
    "lens": LENS_SUBSTRATE,
    "topcoat": TOP_COAT,
    "primer": PRIMER,
}


def material(name: str):
    """Look up a material model by name (``MATERIALS`` plus ``"ITO"``)."""
    if name == "ITO":
        return _ito_table()
    try:
        return MATERIALS[name]
    except KeyError:
        raise ValueError(f"unknown material {name!r}; known: {sorted([*MATERIALS, 'ITO'])}") from None


def index(name_or_model, wavelength_nm: torch.Tensor) -> torch.Tensor:
    """Complex index of a named material (or a model object) on a grid; shape ``(W,)``."""
    model = material(name_or_model) if isinstance(name_or_model, str) else name_or_model
    return model.nk(wavelength_nm)
