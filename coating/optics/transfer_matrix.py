"""Batched coherent transfer-matrix reflectance of thin-film stacks, in torch.

Conventions (the same as the ``tmm`` package's ``coh_tmm``, which the tests compare against):

- Complex refractive index ``n + i k`` with ``k >= 0`` for an absorbing medium; time
  dependence ``exp(-i w t)``, so a forward wave is ``exp(+i kz z)`` and decays when
  ``Im(kz) > 0``.
- Layers are listed in the order the light meets them: incident medium (semi-infinite,
  lossless), layer 1, ..., layer L, substrate (semi-infinite, may absorb). The back surface of
  the substrate is ignored (a lens is thick; its second surface is its own coating).
- Lengths in nanometres (``thickness_nm``, ``wavelength_nm``); angles in degrees, measured in
  the incident medium from the surface normal.
- Reflectance is the fraction of incident power, in [0, 1] (the plant reports percent).
- Polarisation ``"s"`` (TE), ``"p"`` (TM) or ``"u"`` (unpolarised, the mean of s and p).

Method: the characteristic-matrix (Abeles) form with tilted admittances. For layer j with
``q_j = n_j cos(theta_j) = sqrt(n_j^2 - (n_0 sin theta_0)^2)`` the phase thickness is
``delta_j = 2 pi q_j d_j / lambda`` and the tilted admittance is ``eta_j = q_j`` (s) or
``n_j^2 / q_j`` (p). With ``[B, C]^T = prod_j M_j [1, eta_sub]^T`` and
``M_j = [[cos delta_j, -i sin delta_j / eta_j], [-i eta_j sin delta_j, cos delta_j]]``
(the complex conjugate of Macleod's matrix, because Macleod writes ``n - i k``),
``r = (eta_0 B - C) / (eta_0 B + C)`` and ``R = |r|^2``. The sign of the square root does not
matter inside a layer (``delta`` and ``eta`` flip together); for the substrate the forward
root (``Im q > 0``, or ``Re q > 0`` when lossless) is taken. The p amplitude differs from
tmm's by a sign convention; ``R`` does not.

The computation runs in the real dtype of ``thickness_nm`` (complex128 for float64); indices
given in a lower precision are upcast, so ``torch.tensor([[1.5 + 0j]])`` (complex64 by default)
limits the result to float32 accuracy: pass ``dtype=torch.complex128`` for 1e-12 work.

Everything is vectorised over any leading batch shape and over wavelengths; the only Python
loop is over layers. Differentiable with respect to thicknesses and indices (use float64 or
complex128 for gradient checks).
"""
from __future__ import annotations

import math

import torch

__all__ = ["default_wavelengths_nm", "reflectance", "as_complex"]

POLARIZATIONS = ("s", "p", "u")


def default_wavelengths_nm(dtype: torch.dtype = torch.float64, device=None) -> torch.Tensor:
    """The plant's grid: 380..780 nm in 5 nm steps (81 points), shape ``(81,)``."""
    return torch.arange(380, 781, 5, dtype=dtype, device=device)


def as_complex(n, real_dtype: torch.dtype, device=None) -> torch.Tensor:
    """``n`` (number, real or complex tensor) as a complex tensor matching ``real_dtype``."""
    cdtype = torch.complex128 if real_dtype == torch.float64 else torch.complex64
    if isinstance(n, torch.Tensor):
        return n.to(device=device, dtype=cdtype) if n.is_complex() else \
            torch.complex(n.to(device=device, dtype=real_dtype), torch.zeros_like(n, dtype=real_dtype, device=device))
    return torch.as_tensor(complex(n), dtype=cdtype, device=device)


def _forward_q(n: torch.Tensor, s2: torch.Tensor) -> torch.Tensor:
    """``n cos(theta)`` for the forward-travelling wave (tmm's ``is_forward_angle``).

    Principal root, then flipped where it points backwards: forward means ``Im q > 0``
    (decaying), or ``Re q > 0`` when ``q`` is (numerically) real.
    """
    q = torch.sqrt(n * n - s2)
    tiny = 100 * torch.finfo(q.real.dtype).eps
    backward = (q.imag < -tiny) | ((q.imag.abs() <= tiny) & (q.real < 0))
    return torch.where(backward, -q, q)


def reflectance(
    n_layers: torch.Tensor,
    thickness_nm: torch.Tensor,
    wavelength_nm: torch.Tensor,
    n_substrate,
    n_incident=1.0,
    angle_deg: float = 0.0,
    polarization: str = "u",
) -> torch.Tensor:
    """Reflectance of thin-film stacks, shape ``(..., W)``, fraction of incident power.

    Args:
        n_layers: complex (or real) indices, shape broadcastable to ``(..., L, W)``: one row
            per layer from the incident side, one column per wavelength. A shared stack design
            is ``(L, W)``; per-stack indices (index drift) are ``(batch, L, W)``.
        thickness_nm: physical thicknesses in nm, shape ``(..., L)`` (e.g. ``(batch, L)``).
        wavelength_nm: vacuum wavelengths in nm, shape ``(W,)``; any grid.
        n_substrate: substrate index, scalar or broadcastable to ``(..., W)``.
        n_incident: incident-medium index (real, lossless), scalar or ``(W,)``.
        angle_deg: angle of incidence in the incident medium, degrees, in [0, 90).
        polarization: ``"s"``, ``"p"`` or ``"u"`` (unpolarised: mean of s and p reflectance).

    Returns:
        ``R`` with shape ``broadcast(...) + (W,)`` and the real dtype of ``thickness_nm``.
    """
    if polarization not in POLARIZATIONS:
        raise ValueError(f"polarization must be one of {POLARIZATIONS}, got {polarization!r}")
    if not 0.0 <= float(angle_deg) < 90.0:
        raise ValueError(f"angle_deg must be in [0, 90), got {angle_deg!r}")
    if thickness_nm.is_complex() or not thickness_nm.is_floating_point():
        raise ValueError(f"thickness_nm must be a real floating tensor, got {thickness_nm.dtype}")
    rdtype = thickness_nm.dtype
    device = thickness_nm.device
    if n_layers.dim() < 2 or n_layers.shape[-2] != thickness_nm.shape[-1]:
        raise ValueError(
            f"n_layers must have shape (..., L, W) with L = thickness_nm.shape[-1] = "
            f"{thickness_nm.shape[-1]}, got {tuple(n_layers.shape)}")
    if n_layers.shape[-1] not in (1, wavelength_nm.shape[-1]):
        raise ValueError(f"n_layers has {n_layers.shape[-1]} wavelength columns, "
                         f"wavelength_nm has {wavelength_nm.shape[-1]}")
    if isinstance(n_incident, torch.Tensor) and n_incident.is_complex():
        raise ValueError("n_incident must be real (a lossless incident medium)")

    wl = wavelength_nm.to(device=device, dtype=rdtype)                      # (W,)
    n_layers = as_complex(n_layers, rdtype, device)                         # (..., L, W)
    n_sub = as_complex(n_substrate, rdtype, device)                         # (..., W) or ()
    n0 = torch.as_tensor(n_incident, dtype=rdtype, device=device)           # () or (W,)

    # The conserved tangential component n0 sin(theta0); its square enters every layer.
    s2 = (n0 * math.sin(math.radians(float(angle_deg)))) ** 2               # () or (W,)
    q0 = n0 * math.cos(math.radians(float(angle_deg)))                      # real, forward
    q_layers = torch.sqrt(n_layers * n_layers - s2)                         # (..., L, W), any root
    q_sub = _forward_q(n_sub, s2)                                           # (..., W)
    delta = 2 * math.pi * q_layers * thickness_nm.unsqueeze(-1) / wl        # (..., L, W)
    # cos and sin of a complex phase from real functions of its parts (about twice as fast on
    # CPU as torch's complex cos/sin): cos(x+iy) = cos x cosh y - i sin x sinh y, etc.
    x, y = delta.real, delta.imag
    cx, sx, chy, shy = torch.cos(x), torch.sin(x), torch.cosh(y), torch.sinh(y)
    cos_d = torch.complex(cx * chy, -sx * shy)
    sin_d = torch.complex(sx * chy, cx * shy)

    pols = ("s", "p") if polarization == "u" else (polarization,)
    # Off-diagonal elements of every layer's matrix at once, (..., L, W) each: for s,
    # m12 = -i sin / q and m21 = -i q sin; for p (eta = n^2 / q) the same two times 1 / n^2 and
    # n^2, so one complex division serves both polarisations.
    sin_over_q = sin_d / q_layers * -1j
    sin_times_q = sin_d * q_layers * -1j
    n2 = n_layers * n_layers
    L = n_layers.shape[-2]
    # One unbind per tensor, not one index per layer: each indexing op's backward writes a
    # zero-filled tensor of the full (..., L, W) size, which dominated the gradient's cost.
    cos_l = cos_d.unbind(-2)
    R = 0
    for pol in pols:
        if pol == "s":
            m12, m21, eta_sub, eta0 = sin_over_q, sin_times_q, q_sub, q0
        else:
            m12, m21 = sin_times_q * (1 / n2), sin_over_q * n2
            eta_sub = n_sub * n_sub / q_sub
            eta0 = n0 * n0 / q0
        m12_l, m21_l = m12.unbind(-2), m21.unbind(-2)
        # Propagate [B, C] from the substrate towards the incident side: (..., W) each.
        B = cos_l[L - 1] + m12_l[L - 1] * eta_sub
        C = m21_l[L - 1] + cos_l[L - 1] * eta_sub
        for j in range(L - 2, -1, -1):
            c = cos_l[j]
            B, C = c * B + m12_l[j] * C, m21_l[j] * B + c * C
        r = (eta0 * B - C) / (eta0 * B + C)
        R = R + (r.real ** 2 + r.imag ** 2)
    return R / len(pols)
