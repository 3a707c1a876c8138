"""`sevi fit`: a lab's VMI image fitted under the exact forward model: 1 to 4 shells, the centre
fitted, masked pixels left out, a gain map applied.

    sevi fit IMAGE --out ANSWER.h5 [--mask MASK] [--gain GAIN] [--shells 1..4|auto] [--centre auto|X,Z]

IMAGE, MASK and GAIN: ``.npy``, ``.tif``/``.tiff`` (8-, 16- or 32-bit grey; a multi-page TIFF is
summed), ``.png`` (8- or 16-bit grey), or the course's HDF5 (one ``image``/``counts``). Camera files
are read as they are shown, rows = z (the polarisation axis vertical, PyAbel's layout); the course's
HDF5 is axis 0 = x (docs/conventions.md, "Any image"). The mask is nonzero where a pixel is left out;
the gain multiplies the expected counts per pixel and must be finite and > 0 where the mask keeps
a pixel. X,Z: the centre in the file's pixel indices, x the column, z the row (pixel centres on
whole numbers); given, it is held, otherwise fitted from a fast estimate of our own.

Outputs (written atomically; the CSV and PNG beside ``--out`` unless named):
  * ANSWER.h5: ``Answer`` (SphereId, R, beta; one row per shell, smaller R first),
    ``AnswerUncertainty`` (1-sigma, same layout), ``AnswerSigmaR``, ``AnswerElectrons``
    (detected electrons per shell), ``AnswerCentre`` (x0, z0, x0_sd, z0_sd, fitted) and
    ``RefineDiagnostics`` (log-likelihood, chi^2/dof, iterations, converged, the shells chosen);
  * ANSWER.csv: one row per shell, every parameter and its 1-sigma, for a spreadsheet;
  * ANSWER.png: image, model, residuals and the angular distributions with their 1-sigma bands.

R and sigma_R are in the units of ``--pixel-size`` (default the course camera's 2/1024 detector
units per pixel). The Python front door: ``sevi.pipeline.fit_image.fit_image``.
"""

from __future__ import annotations

import argparse
from pathlib import Path


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("fit", help="fit a lab's VMI image (1-4 shells, centre, mask, gain; TIFF, PNG, .npy, HDF5)",
                       description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("image", metavar="IMAGE", help="the image: .npy, .tif/.tiff, .png, or the course's .h5")
    p.add_argument("--out", required=True, help="answer HDF5 (Answer, AnswerUncertainty, AnswerCentre, ...)")
    p.add_argument("--mask", help="pixels left out (nonzero), a file of the image's shape")
    p.add_argument("--gain", help="a flat field: expected counts multiplied per pixel, the image's shape")
    p.add_argument("--shells", default="auto", help="1..4, or auto (chosen by the fit's evidence; default)")
    p.add_argument("--centre", default="auto", help="auto (fitted; default) or X,Z in the file's pixel indices (held)")
    p.add_argument("--pixel-size", type=float, default=None,
                   help="units of R per pixel (default 2/1024, the course camera's detector units)")
    p.add_argument("--terms", type=int, default=12, help="L: betas beta_2 .. beta_2L per shell (default 12)")
    p.add_argument("--bin", type=int, default=None, help="fit k x k blocks (default: the longer side to <= 512)")
    p.add_argument("--device", default="cpu", help="cpu (default) | auto | cuda[:k]")
    p.add_argument("--csv", help="CSV output (default: --out with .csv)")
    p.add_argument("--png", help="PNG output (default: --out with .png)")
    p.set_defaults(func=run)


def _shells(text: str):
    from sevi.runtime.errors import InputError

    if text == "auto":
        return "auto"
    try:
        return int(text)
    except ValueError:
        raise InputError(f"--shells: {text!r}; expected 1..4 or auto") from None


def _centre(text: str):
    from sevi.runtime.errors import InputError

    if text == "auto":
        return "auto"
    try:
        x, z = (float(v) for v in text.split(","))
    except ValueError:
        raise InputError(f"--centre: {text!r}; expected auto or X,Z (two numbers: the file's column, row)") from None
    return x, z


def run(args: argparse.Namespace) -> int:
    from sevi.io.answer_file import write_answer
    from sevi.io.lab_image import read_lab_image
    from sevi.io.paths import check_outputs
    from sevi.pipeline.fit_image import COURSE_PIXEL_SIZE, fit_image
    from sevi.pipeline.fit_report import write_csv, write_figure
    from sevi.runtime.device import pick_device

    out = Path(args.out)
    csv = args.csv or str(out.with_suffix(".csv"))
    png = args.png or str(out.with_suffix(".png"))
    inputs = {"IMAGE": args.image, "--mask": args.mask, "--gain": args.gain}
    check_outputs({"--out": args.out, "--csv": csv, "--png": png}, inputs)
    shells, centre = _shells(args.shells), _centre(args.centre)
    device = pick_device(args.device)
    img, mask, gain = read_lab_image(args.image, args.mask, args.gain)
    f = fit_image(img.data, mask=None if mask is None else mask.data, gain=None if gain is None else gain.data,
                  shells=shells, centre=centre, n_terms=args.terms,
                  pixel_size=COURSE_PIXEL_SIZE if args.pixel_size is None else args.pixel_size, bin=args.bin,
                  source=args.image, mask_source=args.mask or "mask", gain_source=args.gain or "gain", device=device)
    p = {"R": f.R[None], "beta": f.beta[None], "R_sd": f.R_sd[None], "beta_sd": f.beta_sd[None],
         "sigma_R": f.sigma_R[None], "sigma_R_sd": f.sigma_R_sd[None], "n_electrons": f.n_electrons,
         "n_electrons_sd": f.n_electrons_sd}
    chosen = f"{f.n_shells} shell(s), " + ("by log evidence " + ", ".join(f"{k}: {v:.1f}" for k, v in f.evidence.items())
                                           if args.shells == "auto" else "as asked")
    diag = {"log_likelihood": [f.log_likelihood], "log_posterior": [f.log_likelihood], "chi2_dof": [f.chi2_dof],
            "iterations": [f.iterations], "converged": [int(f.converged)], "start": [chosen[:64]]}
    centre_row = {"x0": f.centre[0], "z0": f.centre[1], "x0_sd": f.centre_sd[0], "z0_sd": f.centre_sd[1],
                  "fitted": int(f.centre_fitted)}
    attrs = {"image": str(args.image), "mask": str(args.mask or ""), "gain": str(args.gain or ""),
             "pixel_size": f.pixel_size, "bin": f.bin, "background": f.background, "n_shells": f.n_shells,
             "shells_chosen": chosen,
             "axes": ("x = axis 0, z = axis 1 of the HDF5 image" if img.what.startswith("HDF5") else
                      "x = the file's column, z = the file's row (the polarisation axis)")}
    write_answer(args.out, p, None, attrs, diagnostics=diag, centre=centre_row,
                 uncertainty="1-sigma, curvature of the Poisson log-likelihood at the optimum (Laplace), "
                             "centre included")
    write_csv(csv, f)
    write_figure(png, f, title=Path(args.image).name)
    c, s = f.centre, f.centre_sd
    how = "fitted" if f.centre_fitted else "given"
    print(f"{args.image}: {img.what}, {img.data.shape[0]} x {img.data.shape[1]} pixels (x, z)"
          + (f", {int((~f.keep).sum())} masked" if mask is not None else "") + (", gain map" if gain is not None else ""))
    print(f"centre ({c[0]:.2f} +- {s[0]:.2f}, {c[1]:.2f} +- {s[1]:.2f}) px ({how}); {chosen}; "
          f"chi2/dof {f.chi2_dof:.3f}; {f.seconds:.1f} s ({f.cpu_seconds:.1f} s CPU)")
    for j in range(f.n_shells):
        b = ", ".join(f"beta_{2 * (i + 1)} {f.beta[j, i]:.3f} +- {f.beta_sd[j, i]:.3f}" for i in range(min(2, f.n_terms)))
        print(f"  shell {j}: R {f.R[j]:.5f} +- {f.R_sd[j]:.5f}, sigma_R {f.sigma_R[j]:.5f}, "
              f"N {f.n_electrons[j]:.4g}" + (f", {b}" if b else ""))
    if not f.converged:
        print(f"warning: the fit did not converge in {f.iterations} iterations")
    print(f"wrote {args.out}, {csv}, {png}")
    return 0
