"""Timing of the batched transfer-matrix reflectance (``coating.optics.transfer_matrix``) against
the ``tmm`` package on the same 7-layer stacks (``tools/bench_optics.py``, ``tools/gpu_check.py``)."""

from __future__ import annotations

import time

import numpy as np
import torch

from coating.optics.transfer_matrix import default_wavelengths_nm, reflectance


def _stacks(batch: int, device, dtype):
    g = torch.Generator().manual_seed(0)
    n = (1.4 + 0.9 * torch.rand(7, 81, generator=g, dtype=torch.float64)).to(torch.complex128)
    n[1] += 0.01j                                           # one weakly absorbing layer (ITO-like)
    d = 5 + 120 * torch.rand(batch, 7, generator=g, dtype=torch.float64)
    cd = torch.complex128 if dtype == torch.float64 else torch.complex64
    return n.to(device, cd), d.to(device, dtype)


def bench_torch(batch, device, dtype, angle, pol, repeats=20) -> float:
    n, d = _stacks(batch, device, dtype)
    wl = default_wavelengths_nm(dtype, device)
    sub = torch.tensor(1.5, dtype=dtype, device=device)
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    with torch.no_grad():
        reflectance(n, d, wl, sub, 1.0, angle, pol)          # warm-up
        sync()
        best = float("inf")
        for _ in range(repeats):
            t = time.perf_counter()
            reflectance(n, d, wl, sub, 1.0, angle, pol)
            sync()
            best = min(best, time.perf_counter() - t)
    return batch / best


def bench_tmm(n_spectra, angle, pols) -> float:
    import tmm
    n, d = _stacks(n_spectra, torch.device("cpu"), torch.float64)
    n, d = n.numpy(), d.numpy()
    wl = default_wavelengths_nm().numpy()
    th = np.radians(angle)
    t = time.perf_counter()
    for b in range(n_spectra):
        d_list = [np.inf, *d[b], np.inf]
        for i, w in enumerate(wl):
            n_list = [1.0, *n[:, i], 1.5]
            for pol in pols:
                tmm.coh_tmm(pol, n_list, d_list, th, w)
    return n_spectra / (time.perf_counter() - t)
