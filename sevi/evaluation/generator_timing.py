"""Timing of the image generators against the course notes' numpy method, measured in one run
(``tools/bench_generate.py``, ``tools/gpu_check.py``): images/s, with the device synchronised."""

from __future__ import annotations

import time

import numpy as np
import torch

from sevi.physics.generator import SeviGenerator


def numpy_image(R, sigma_R, beta, n, grid, rng) -> np.ndarray:
    """The notes' method for one two-shell image: (grid, grid) counts."""
    from numpy.polynomial import legendre as npleg

    xs = np.linspace(-1, 1, 1_000_000)
    img = np.zeros((grid, grid), np.int64)
    for j in range(2):
        coef = np.zeros(2 * len(beta[j]) + 1)
        coef[0], coef[2::2] = 0.5, beta[j]
        cdf = np.cumsum(npleg.legval(xs, coef))
        cdf /= cdf[-1]
        c = np.interp(rng.random(n[j]), cdf, xs)
        r = np.abs(rng.normal(R[j], sigma_R[j], n[j]))
        phi = rng.uniform(0, 2 * np.pi, n[j])
        x, z = r * np.sqrt(1 - c**2) * np.cos(phi), r * c
        ix = np.floor((x + 1) * grid / 2).astype(np.int64)
        iz = np.floor((z + 1) * grid / 2).astype(np.int64)
        ok = (ix >= 0) & (ix < grid) & (iz >= 0) & (iz < grid)
        np.add.at(img, (ix[ok], iz[ok]), 1)
    return img


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_generator(gen: SeviGenerator, params, batch: int, calls: int) -> float:
    """Seconds per image of ``gen.render``: one warm-up call (allocations, kernels), then ``calls``
    timed calls of ``batch`` images each; ``params`` holds at least ``batch * (calls + 1)`` sets."""
    if len(params) < batch * (calls + 1):
        raise ValueError(f"time_generator needs {batch * (calls + 1)} parameter sets, got {len(params)}")
    gen.render(params[:batch], seed=0)
    sync(gen.device)
    t0 = time.perf_counter()
    for k in range(1, calls + 1):
        gen.render(params[k * batch:(k + 1) * batch], seed=k)
    sync(gen.device)
    return (time.perf_counter() - t0) / (calls * batch)


def time_numpy(params, electrons: int, grid: int, seed: int = 0) -> float:
    """Seconds per image of the notes' numpy method (``numpy_image``) on every set of ``params``
    (on the CPU), ``electrons`` per shell."""
    rng = np.random.default_rng(seed)
    t0 = time.perf_counter()
    for i in range(len(params)):
        numpy_image(params.R[i].cpu().numpy(), params.sigma_R[i].cpu().numpy(), params.beta[i].cpu().numpy(),
                    [electrons] * 2, grid, rng)
    return (time.perf_counter() - t0) / len(params)
