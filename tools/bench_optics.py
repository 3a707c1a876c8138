"""Spectra per second of the batched torch TMM against the ``tmm`` package's loop, same run.

    python tools/bench_optics.py [--batch 1024] [--threads N] [--tmm-spectra 20] [--device cuda|cpu]

7-layer stacks with an absorbing layer, 81 wavelengths (380-780 nm, 5 nm), float64, normal
incidence (s only: equal to p and to unpolarised there) and 8 degrees unpolarised (s + p, two
``coh_tmm`` calls per wavelength). ``tmm`` is a dev dependency; without it only torch figures
print. The device defaults to CUDA when available.
"""
from __future__ import annotations

import argparse

import torch

from coating.optics.benchmark import bench_tmm, bench_torch


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--batch", type=int, default=None,
                    help="spectra per call; default 1024 on CPU (keeps the working set in cache), "
                         "262144 on CUDA")
    ap.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch's default)")
    ap.add_argument("--tmm-spectra", type=int, default=20)
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = ap.parse_args(argv)
    device = torch.device(args.device)
    if args.batch is None:
        args.batch = 262144 if device.type == "cuda" else 1024
    if args.threads:
        torch.set_num_threads(args.threads)
    print(f"device {device}, torch {torch.__version__}, threads {torch.get_num_threads()}, "
          f"batch {args.batch}, 7 layers x 81 wavelengths")
    try:
        import tmm  # noqa: F401
        have_tmm = True
    except ImportError:
        have_tmm = False
    for label, angle, pol, pols in (("0 deg, s", 0.0, "s", ("s",)), ("8 deg, unpolarised", 8.0, "u", ("s", "p"))):
        for dtype in (torch.float64, torch.float32):
            rate = bench_torch(args.batch, device, dtype, angle, pol)
            line = f"{label:20s} torch {str(dtype)[6:]:8s} {rate:14,.0f} spectra/s"
            if have_tmm and dtype == torch.float64:
                ref = bench_tmm(args.tmm_spectra, angle, pols)
                line += f"   tmm loop {ref:10,.1f} spectra/s   ratio {rate / ref:8,.0f}x"
            print(line, flush=True)


if __name__ == "__main__":
    main()
