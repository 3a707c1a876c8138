"""`sevi predict`: anisotropy parameters and their 1-sigma error bars from accumulated images.

Input (``--images``): an HDF5 file holding either
  * ``counts`` (n, G, G) with ``image_id`` (n,) (a ``sevi simulate`` output), or
  * a single accumulated image: a 2-D dataset ``image`` (G, G) or ``counts`` (G, G).
Axis 0 = x, axis 1 = z over [-1, 1]. Images must be square, with finite counts >= 0 and at least
one electron (the first bad image and pixel are named). G must be a multiple of the model's grid (rebinned exactly),
and each image's electron total must lie within the range the model was trained for (both shells
together: 2 * electrons[0] .. 2 * electrons[1], widened by ``--electron-tolerance``, default 15%,
which covers the ~10% of electrons a real detector misses).

Output (``--out``, written atomically):
  * ``Answer``: the course's table (SphereId '<u1', R '<f8', beta '<f8' (L,), smaller R first),
    with an ``ImageId`` field first when the input held several images (two rows per image);
  * ``AnswerUncertainty``: the same layout and rows, holding the 1-sigma uncertainties of R and
    beta (SphereId as in Answer);
  * ``AnswerSigmaR``: (ImageId,) SphereId, sigma_R '<f8', sigma_R_sd '<f8' (the shell widths and
    their uncertainties, which the course's Answer has no field for).

Refinement (the default; ``--no-refine`` skips it): each image's answer is refined by the Poisson
likelihood of the image under the exact forward model plus the training prior (sevi/fit/count_fit.py), and
the uncertainties are the curvature of that objective at its optimum. A direct-path model's images
(summed frames, electron units, with an ``n_frames`` attribute) are fitted with their own forward
model and noise (sevi/fit/direct_fit.py). Then also:
  * ``AnswerRegressor``: the regressor's own answer, laid out as ``Answer``;
  * ``RefineDiagnostics``: (ImageId,) log_likelihood, log_posterior, chi2_dof, iterations,
    converged (1 or 0), start (which starting point won; where overlapping shells leave several
    optima, each one's start and weight in the mixture, e.g. "answer 0.70 + swapped 0.30") per
    image. A fit that did not converge is named on stderr, never silent.
With ``--centre fit`` the image centre is fitted too, per image (sevi/fit/centred_fit.py; a direct image
with ``n_frames``: sevi/fit/centred_frame_sum_fit.py; the whole image instead of its folded
quadrant), and ``AnswerCentre`` holds (ImageId,) x0, z0, x0_sd, z0_sd in the input's pixel indices
(a direct image's: its camera frames'; axis 0 = x; the course's centre is (G - 1) / 2 on both axes)
and fitted = 1.
Without refinement the uncertainties are the model's heteroscedastic head (a Gaussian log-variance
per target trained by NLL; model.py / training.py). Calibration of both: tools/eval_sevi.py and
tools/eval_refine.py (BENCHMARKS.md).
"""

from __future__ import annotations

import argparse

from sevi.fit.estimators import DEFAULT_ESTIMATOR, ESTIMATORS


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("predict", help="predict R, sigma_R and betas (with error bars) from accumulated images",
                       description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", required=True, help="model.pt, or a dir holding it (final model or checkpoint)")
    p.add_argument("--images", required=True, help="HDF5 with counts (n, G, G) + image_id, or one 2-D image")
    p.add_argument("--out", required=True, help="output HDF5 (Answer, AnswerUncertainty, AnswerSigmaR)")
    p.add_argument("--device", default="auto", help="auto | cpu | cuda[:k] (default auto)")
    p.add_argument("--batch", type=int, default=64, help="images per forward pass (default 64)")
    p.add_argument("--electron-tolerance", type=float, default=0.15,
                   help="relative slack on the trained electron range (default 0.15)")
    p.add_argument("--no-refine", action="store_true",
                   help="the regressor's answer alone (default: refined by the likelihood fit, sevi/fit/count_fit.py)")
    p.add_argument("--estimator", choices=ESTIMATORS, default=DEFAULT_ESTIMATOR,
                   help=f"a frame sum's answer (a direct image with n_frames; default {DEFAULT_ESTIMATOR}): gls, one "
                        "generalised-least-squares step from the fit; wls, the weighted fit alone")
    p.add_argument("--centre", choices=("course", "fit"), default="course",
                   help="course (default): the course's centre, the corner between the middle pixels; fit: the "
                        "centre fitted per image with its error bars (sevi/fit/centred_fit.py; a frame sum: "
                        "sevi/fit/centred_frame_sum_fit.py; several times slower), written as AnswerCentre")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from sevi.io.answer_file import write_answer
    from sevi.io.image_file import open_images
    from sevi.io.paths import check_outputs
    from sevi.pipeline.image_answer import answer_images
    from sevi.regressor.inference import load_model_file
    from sevi.runtime.device import pick_device
    from sevi.runtime.errors import InputError

    if args.batch < 1:
        raise InputError(f"--batch must be >= 1 (images per forward pass), got {args.batch}")
    if args.centre == "fit" and args.no_refine:
        raise InputError("--centre fit needs the refinement (the centre is a parameter of the likelihood fit); "
                         "drop --no-refine")
    check_outputs({"--out": args.out}, {"--images": args.images, "--model": args.model})
    device = pick_device(args.device)
    model, cfg = load_model_file(args.model, device)
    with open_images(args.images) as images:  # any integer or real dtype, either byte order (docs/formats.md)
        ids = images.ids
        batches = ((s, images.read(s, s + args.batch)) for s in range(0, images.n, args.batch))
        fit_images = None if args.no_refine else [images.image(i) for i in range(images.n)]
        res = answer_images(model, cfg, batches, device, source=args.images, fit_images=fit_images,
                            n_frames=images.attrs.get("n_frames"), refine=not args.no_refine,
                            tolerance=args.electron_tolerance, fit_centre=args.centre == "fit",
                            estimator=args.estimator)
    centre = None
    if args.centre == "fit":
        c, sd = res.diagnostics["centre"], res.diagnostics["centre_sd"]
        centre = {"x0": c[:, 0], "z0": c[:, 1], "x0_sd": sd[:, 0], "z0_sd": sd[:, 1], "fitted": 1}
    write_answer(args.out, res.answer, ids, attrs={"model": str(args.model), "images": str(args.images),
                                                   "device": str(device), "model_grid": cfg.data.grid,
                                                   "centre": args.centre,
                                                   # a frame sum's bars: the model's (its frames are not here)
                                                   **({"estimator": args.estimator, "error_bars": "model"}
                                                      if res.refined and res.kind == "direct" else {})},
                 regressor=res.regressor if res.refined else None, diagnostics=res.diagnostics, centre=centre)
    n = 1 if ids is None else len(ids)
    print(f"wrote Answer for {n} image{'s' * (n != 1)} to {args.out}")
    return 0
