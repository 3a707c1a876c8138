"""CIE colorimetry of reflectance spectra in torch: XYZ, L*a*b*, Delta E*ab, CIEDE2000.

Conventions:
- Reflectance ``R`` is a fraction in [0, 1], shape ``(..., W)`` on a wavelength grid in nm.
- Illuminant CIE D65 and the CIE 1964 10-degree standard observer, read from the tables shipped
  in ``coating/data/`` (exported from colour-science 0.4.7; see the CSV headers). The tables are
  linearly interpolated onto the grid when the grid is not a subset of theirs.
- Tristimulus values by summation, ``X = k sum_l R(l) S(l) xbar(l) w(l)`` with ``w = 1`` on a
  uniform grid (the ``Integration`` method of colour-science, CIE 015 summation) and
  ``k = 100 / sum S ybar w``: the perfect reflecting diffuser has ``Y = 100``. On a non-uniform
  grid ``w`` are the trapezoid weights.
- The reference white of L*a*b* is the perfect diffuser computed with the same sums, so
  ``R = 1`` gives exactly ``L* = 100, a* = b* = 0``.
- CIEDE2000 after Sharma, Wu & Dalal, Color Res. Appl. 30, 21 (2005), ``k_L = k_C = k_H = 1``.

Everything is batched over leading dimensions and differentiable (the branch points of
CIEDE2000, zero chroma and hue differences of exactly 180 degrees, are handled without NaN
gradients but are of course not smooth there).
"""
from __future__ import annotations

import functools
from dataclasses import dataclass
from importlib import resources

import numpy as np
import torch

__all__ = ["cie_tables", "Colorimeter", "xyz_to_lab", "delta_e_ab", "ciede2000", "reflectance_to_lab"]


def _read_table(name: str) -> np.ndarray:
    """A shipped CSV: ``#`` provenance lines, one header line, then numbers."""
    text = resources.files("coating.optics").joinpath("data", name).read_text(encoding="utf-8")
    lines = [ln for ln in text.splitlines() if ln.strip() and not ln.startswith("#")]
    return np.array([[float(x) for x in ln.split(",")] for ln in lines[1:]], dtype=np.float64)


@functools.lru_cache(maxsize=None)
def _raw_tables() -> tuple[np.ndarray, np.ndarray]:
    return _read_table("cie1964_10deg_cmfs.csv"), _read_table("cie_d65.csv")


def cie_tables(wavelength_nm) -> tuple[np.ndarray, np.ndarray]:
    """CMFs ``(W, 3)`` and D65 ``(W,)`` on the grid ``wavelength_nm`` (nm), float64 numpy.

    Raises ValueError when the grid leaves the tables' common range (360-780 nm).
    """
    wl = np.asarray(wavelength_nm, dtype=np.float64).reshape(-1)
    cmfs, d65 = _raw_tables()
    lo, hi = max(cmfs[0, 0], d65[0, 0]), min(cmfs[-1, 0], d65[-1, 0])
    if wl.min() < lo or wl.max() > hi:
        raise ValueError(f"wavelength grid {wl.min():g}..{wl.max():g} nm leaves the range of the "
                         f"CIE tables shipped ({lo:g}..{hi:g} nm)")
    cmf = np.stack([np.interp(wl, cmfs[:, 0], cmfs[:, i]) for i in (1, 2, 3)], axis=-1)
    return cmf, np.interp(wl, d65[:, 0], d65[:, 1])


def _weights(wl: np.ndarray) -> np.ndarray:
    if len(wl) > 1 and np.any(np.diff(wl) <= 0):
        raise ValueError("wavelength grid must be strictly increasing")
    d = np.diff(wl)
    if len(wl) < 2 or np.allclose(d, d[0]):
        return np.ones_like(wl)  # uniform grid: plain summation, the interval cancels in k
    w = np.zeros_like(wl)
    w[:-1] += d / 2
    w[1:] += d / 2
    return w


@dataclass(frozen=True)
class Colorimeter:
    """Reflectance -> XYZ / L*a*b* on one wavelength grid; build once, call many.

    ``weights`` ``(W, 3)``: ``k S(l) xbar(l) w(l)`` so that ``XYZ = R @ weights``;
    ``white`` ``(3,)``: XYZ of the perfect diffuser (``Y = 100``).
    """
    weights: torch.Tensor
    white: torch.Tensor

    @staticmethod
    def build(wavelength_nm, dtype=torch.float64, device=None) -> "Colorimeter":
        wl = (wavelength_nm.detach().cpu().numpy() if isinstance(wavelength_nm, torch.Tensor)
              else np.asarray(wavelength_nm, dtype=np.float64))
        cmf, s = cie_tables(wl)
        sw = s * _weights(wl)                                   # (W,)
        k = 100.0 / np.sum(sw * cmf[:, 1])
        wts = k * sw[:, None] * cmf                             # (W, 3)
        white = wts.sum(axis=0)                                 # (3,), Y = 100
        return Colorimeter(torch.tensor(wts, dtype=dtype, device=device),
                           torch.tensor(white, dtype=dtype, device=device))

    def xyz(self, R: torch.Tensor) -> torch.Tensor:
        """XYZ (perfect diffuser Y = 100), shape ``(..., 3)``, from ``R`` ``(..., W)`` in [0, 1]."""
        return R @ self.weights.to(R.dtype)

    def lab(self, R: torch.Tensor) -> torch.Tensor:
        """CIE L*a*b*, shape ``(..., 3)``, from reflectance fractions ``(..., W)``."""
        return xyz_to_lab(self.xyz(R), self.white.to(R.dtype))


def xyz_to_lab(xyz: torch.Tensor, white: torch.Tensor) -> torch.Tensor:
    """CIE 1976 L*a*b* from XYZ ``(..., 3)`` and a reference white ``(3,)`` on the same scale."""
    t = xyz / white
    eps = (6.0 / 29.0) ** 3
    # The cube root's gradient is infinite at 0; only evaluate it where it is used.
    cube = torch.pow(torch.clamp(t, min=eps), 1.0 / 3.0)
    f = torch.where(t > eps, cube, t / (3 * (6.0 / 29.0) ** 2) + 4.0 / 29.0)
    L = 116 * f[..., 1] - 16
    a = 500 * (f[..., 0] - f[..., 1])
    b = 200 * (f[..., 1] - f[..., 2])
    return torch.stack([L, a, b], dim=-1)


def delta_e_ab(lab1: torch.Tensor, lab2: torch.Tensor) -> torch.Tensor:
    """CIE 1976 Delta E*ab: Euclidean distance in L*a*b*, shape ``(...)``."""
    return torch.sqrt(((lab1 - lab2) ** 2).sum(-1))


def _safe_sqrt(x: torch.Tensor) -> torch.Tensor:
    pos = x > 0
    return torch.where(pos, torch.sqrt(torch.where(pos, x, torch.ones_like(x))), torch.zeros_like(x))


def _safe_atan2_deg(b: torch.Tensor, a: torch.Tensor) -> torch.Tensor:
    """Hue angle in [0, 360) degrees; 0 where a = b = 0 (Sharma 2005, eq. 4)."""
    zero = (a == 0) & (b == 0)
    h = torch.rad2deg(torch.atan2(torch.where(zero, torch.ones_like(b), b), a))
    return torch.where(zero, torch.zeros_like(h), torch.remainder(h, 360.0))


def ciede2000(lab1: torch.Tensor, lab2: torch.Tensor) -> torch.Tensor:
    """CIEDE2000 colour difference ``Delta E_00`` (Sharma et al. 2005), shape ``(...)``.

    ``lab1``, ``lab2``: ``(..., 3)`` L*a*b*, broadcast. Parametric factors ``k_L = k_C = k_H = 1``.
    """
    L1, a1, b1 = lab1.unbind(-1)
    L2, a2, b2 = lab2.unbind(-1)
    C1 = _safe_sqrt(a1 ** 2 + b1 ** 2)
    C2 = _safe_sqrt(a2 ** 2 + b2 ** 2)
    Cbar7 = ((C1 + C2) / 2) ** 7
    G = 0.5 * (1 - torch.sqrt(Cbar7 / (Cbar7 + 25.0 ** 7)))
    a1p, a2p = (1 + G) * a1, (1 + G) * a2
    C1p = _safe_sqrt(a1p ** 2 + b1 ** 2)
    C2p = _safe_sqrt(a2p ** 2 + b2 ** 2)
    h1p, h2p = _safe_atan2_deg(b1, a1p), _safe_atan2_deg(b2, a2p)

    dLp = L2 - L1
    dCp = C2p - C1p
    chroma0 = (C1p * C2p) == 0
    dh = h2p - h1p
    dhp = torch.where(dh > 180, dh - 360, torch.where(dh < -180, dh + 360, dh))
    dhp = torch.where(chroma0, torch.zeros_like(dhp), dhp)
    dHp = 2 * _safe_sqrt(C1p * C2p) * torch.sin(torch.deg2rad(dhp / 2))

    Lbarp = (L1 + L2) / 2
    Cbarp = (C1p + C2p) / 2
    hsum = h1p + h2p
    hbarp = torch.where(
        chroma0, hsum,
        torch.where((h1p - h2p).abs() <= 180, hsum / 2,
                    torch.where(hsum < 360, (hsum + 360) / 2, (hsum - 360) / 2)))
    T = (1 - 0.17 * torch.cos(torch.deg2rad(hbarp - 30)) + 0.24 * torch.cos(torch.deg2rad(2 * hbarp))
         + 0.32 * torch.cos(torch.deg2rad(3 * hbarp + 6)) - 0.20 * torch.cos(torch.deg2rad(4 * hbarp - 63)))
    dtheta = 30 * torch.exp(-(((hbarp - 275) / 25) ** 2))
    Cbarp7 = Cbarp ** 7
    RC = 2 * torch.sqrt(Cbarp7 / (Cbarp7 + 25.0 ** 7))
    SL = 1 + 0.015 * (Lbarp - 50) ** 2 / torch.sqrt(20 + (Lbarp - 50) ** 2)
    SC = 1 + 0.045 * Cbarp
    SH = 1 + 0.015 * Cbarp * T
    RT = -torch.sin(torch.deg2rad(2 * dtheta)) * RC
    tL, tC, tH = dLp / SL, dCp / SC, dHp / SH
    return _safe_sqrt(tL ** 2 + tC ** 2 + tH ** 2 + RT * tC * tH)


@functools.lru_cache(maxsize=8)
def _default_colorimeter(wl_key: tuple, dtype: torch.dtype, device: str) -> Colorimeter:
    return Colorimeter.build(np.asarray(wl_key), dtype=dtype, device=device)


def reflectance_to_lab(R: torch.Tensor, wavelength_nm) -> torch.Tensor:
    """Convenience: L*a*b* ``(..., 3)`` of reflectance fractions ``R`` ``(..., W)``.

    Builds (and caches by grid, dtype and device) a ``Colorimeter``; for hot loops build one
    yourself.
    """
    wl = (wavelength_nm.detach().cpu().numpy() if isinstance(wavelength_nm, torch.Tensor)
          else np.asarray(wavelength_nm, dtype=np.float64))
    return _default_colorimeter(tuple(float(x) for x in wl), R.dtype, str(R.device)).lab(R)
