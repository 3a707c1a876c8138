"""A rendered lab image with known truth, written as a camera's software writes it: a 16-bit grey TIFF
(rows = z, the polarisation axis vertical), and its mask as an 8-bit PNG (255 = pixel left out: a gain
hole where the ion beam hit the MCP and a dead column). The truth goes to a JSON beside the image.
For trying `sevi fit` (README) on a file whose answer is known.

    python tools/render_lab_image.py --out cam.tif --mask cam_mask.png
    sevi fit cam.tif --mask cam_mask.png --out answer.h5

The image: 400 x 360 pixels (x, z) at the course camera's 2/1024 detector units per pixel, the
centre 23.4 and 17.8 pixels off the middle, two shells (R 0.2 and 0.33, 2e5 and 3e5 electrons, the
course's prior betas with L = 12), a flat background of 0.3 counts per pixel, Poisson counts.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from sevi.cli.policy import run_command
from sevi.evaluation.lab_images import (
    LabCase,
    dead_column,
    disc_mask,
    render_case,
    truth_betas,
)
from sevi.io.atomic import atomic_path, write_json


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", required=True, help="the image, .tif")
    ap.add_argument("--mask", required=True, help="the mask, .png")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    from PIL import Image

    shape = (400, 360)
    case = LabCase(shape, (199.5 + 23.4, 179.5 - 17.8), (0.2, 0.33), (0.006, 0.008), (2e5, 3e5),
                   truth_betas(2, 12, 3 + args.seed), 2 / 1024, 0.3)
    c = case.centre
    mask = disc_mask(shape, (c[0] + 118, c[1] + 118), 14) | dead_column(shape, int(c[0]) - 60)
    img = render_case(case, args.seed, mask=mask)
    with atomic_path(args.out) as tmp:
        Image.fromarray(img.T.astype(np.uint16)).save(tmp, format="TIFF")
    with atomic_path(args.mask) as tmp:
        Image.fromarray(mask.T.astype(np.uint8) * 255).save(tmp, format="PNG")
    truth = {"centre_x0_z0_px": c, "R": case.R, "sigma_R": case.sigma_R, "n_electrons": case.n_electrons,
             "beta": case.beta.tolist(), "pixel_size": case.pixel_size, "background": case.background}
    write_json(Path(args.out).with_suffix(".truth.json"), truth)
    print(f"wrote {args.out} ({shape[0]} x {shape[1]} pixels, {int(img.sum())} counts), {args.mask} "
          f"({int(mask.sum())} pixels masked), {Path(args.out).with_suffix('.truth.json')}")
    return 0


if __name__ == "__main__":
    raise SystemExit(run_command("render_lab_image", None, main))
