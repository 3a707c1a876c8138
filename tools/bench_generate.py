"""Images per second of the SEVI generator against the notes' numpy method, in the same run.

The baseline is the straightforward method of the course notes, per image and shell: evaluate
I(x) on a 1e6-point grid, cumulative sum as the CDF, ``np.interp`` for the inverse transform,
then project and histogram with ``np.add.at``. Both draw the same parameters from the prior.

    python tools/bench_generate.py --grid 512 --electrons 100000          # CPU target: >= 20x
    python tools/bench_generate.py --grid 1024 --electrons 2000000 --batch 16 --device cuda
    python tools/bench_generate.py --grid 128 --electrons 2200000 --backends itm,poisson   # renderer ratio

``--backends`` times the other renderers of ``sevi.physics.expected_renderer`` on the same parameters and
prints each one's ratio to the ITM generator, measured in the same run.
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch

from sevi.io.atomic import write_json
from sevi.physics.expected_renderer import RENDER_BACKENDS, make_renderer
from sevi.physics.generator import GeneratorConfig, SeviGenerator
from sevi.physics.prior import Prior


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


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--grid", type=int, default=512)
    ap.add_argument("--electrons", type=int, default=100_000, help="electrons per shell")
    ap.add_argument("--batch", type=int, default=8, help="images per generator call")
    ap.add_argument("--calls", type=int, default=4, help="timed generator calls (after one warm-up)")
    ap.add_argument("--baseline-images", type=int, default=4, help="images for the numpy baseline (0: skip)")
    ap.add_argument("--device", default="auto")
    ap.add_argument("--chunk", type=int, default=1 << 22, help="electrons per chunk")
    ap.add_argument("--json", help="also write the figures to this JSON file")
    ap.add_argument("--backends", default="itm", help=f"comma list of {RENDER_BACKENDS}; itm is always timed")
    a = ap.parse_args(argv)
    backends = [b for b in a.backends.split(",") if b and b != "itm"]
    for b in backends:
        if b not in RENDER_BACKENDS:
            ap.error(f"--backends: unknown backend {b!r}; choose from {RENDER_BACKENDS}")

    prior_cfg = Prior().config.with_electrons(a.electrons)
    gen = SeviGenerator(GeneratorConfig(grid=a.grid, chunk_electrons=a.chunk), a.device, prior_cfg)
    params = gen.prior(a.batch * (a.calls + 1), seed=0).params
    t_torch = time_generator(gen, params, a.batch, a.calls)

    out = {"device": str(gen.device), "device_name": torch.cuda.get_device_name(gen.device) if gen.device.type == "cuda" else "cpu",
           "threads": torch.get_num_threads(), "grid": a.grid, "electrons_per_shell": a.electrons, "batch": a.batch,
           "torch_images_per_s": 1 / t_torch, "torch_electrons_per_s": 2 * a.electrons / t_torch}
    print(f"device {out['device_name']} ({torch.get_num_threads()} threads), G={a.grid}, {a.electrons:.0e} electrons/shell")
    print(f"  torch ITM generator : {1 / t_torch:10.1f} images/s  ({2 * a.electrons / t_torch:.3g} electrons/s)")
    for b in backends:
        t_b = time_generator(make_renderer(b, GeneratorConfig(grid=a.grid), a.device, prior_cfg), params, a.batch, a.calls)
        out[f"{b}_images_per_s"], out[f"{b}_ratio_to_itm"] = 1 / t_b, t_torch / t_b
        print(f"  {b:20s}: {1 / t_b:10.1f} images/s  ({t_torch / t_b:.1f}x the ITM generator)")
    if a.baseline_images:
        t_np = time_numpy(params[: a.baseline_images], a.electrons, a.grid)
        out.update(numpy_images_per_s=1 / t_np, ratio=t_np / t_torch)
        print(f"  numpy (notes' method): {1 / t_np:10.1f} images/s")
        print(f"  ratio torch / numpy  : {t_np / t_torch:10.1f}x")
    if a.json:
        write_json(a.json, out)
    return out


if __name__ == "__main__":
    main()
