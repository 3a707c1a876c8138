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
import resource

import torch

from sevi.evaluation.generator_timing import time_generator, time_numpy
from sevi.io.atomic import write_json
from sevi.physics.expected_renderer import RENDER_BACKENDS, make_renderer
from sevi.physics.generator import GeneratorConfig, SeviGenerator, default_chunk_electrons
from sevi.physics.prior import Prior


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--grid", type=int, default=512)
    ap.add_argument("--electrons", type=int, default=100_000, help="electrons per shell")
    ap.add_argument("--batch", type=int, default=8, help="images per generator call")
    ap.add_argument("--calls", type=int, default=4, help="timed generator calls (after one warm-up)")
    ap.add_argument("--baseline-images", type=int, default=4, help="images for the numpy baseline (0: skip)")
    ap.add_argument("--device", default="auto")
    ap.add_argument("--chunk", type=int, default=None, help="electrons per chunk (default: the device's)")
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
    r0 = resource.getrusage(resource.RUSAGE_SELF)
    t_torch = time_generator(gen, params, a.batch, a.calls)
    r1 = resource.getrusage(resource.RUSAGE_SELF)  # the warm-up call included
    cost = {"user_s": r1.ru_utime - r0.ru_utime, "system_s": r1.ru_stime - r0.ru_stime,
            "page_faults": r1.ru_minflt - r0.ru_minflt}

    out = {"device": str(gen.device), "device_name": torch.cuda.get_device_name(gen.device) if gen.device.type == "cuda" else "cpu",
           "threads": torch.get_num_threads(), "grid": a.grid, "electrons_per_shell": a.electrons, "batch": a.batch,
           "torch_images_per_s": 1 / t_torch, "torch_electrons_per_s": 2 * a.electrons / t_torch,
           "chunk_electrons": gen.config.chunk_electrons or default_chunk_electrons(gen.device), **cost}
    print(f"device {out['device_name']} ({torch.get_num_threads()} threads), G={a.grid}, {a.electrons:.0e} electrons/shell")
    print(f"  torch ITM generator : {1 / t_torch:10.1f} images/s  ({2 * a.electrons / t_torch:.3g} electrons/s; "
          f"chunk {out['chunk_electrons']} electrons; user {cost['user_s']:.2f} s, system {cost['system_s']:.2f} s, "
          f"{cost['page_faults']} page faults over {a.calls + 1} calls)")
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
