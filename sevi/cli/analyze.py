"""`sevi analyze`: camera frames -> image -> regressor -> refined Answer, by one of two paths.

    sevi analyze FRAMES.h5 --model RUN/final --out ANSWER.h5 [--path auto|events|direct]
                 [--events EVENTS.h5] [--no-ray] [--chunk 256] [--centre course|fit] [--estimator gls|wls]
                 [--batches 100]

The path (``--path``, default ``auto``) is the model's: a model trained with ``spot_blur > 0``
(``--spot-blur 0.015``: histograms blurred like the camera spot) reads the **direct** image, the
summed frames; a model with ``spot_blur = 0`` reads the **events** image, the frames centroided
(``sevi frames``: chunked, parallel Ray tasks, resumable). Forcing the other path is allowed but
warned about. The steps of each path: ``sevi/pipeline/frames_answer.py``.

Output (written atomically): ``Answer``, ``AnswerUncertainty`` (1-sigma), ``AnswerSigmaR``, and with
the refinement (the default; ``--no-refine`` skips it) ``AnswerRegressor`` and
``RefineDiagnostics``, as ``sevi predict`` writes them. The file's attrs record ``path`` and, for the
direct path, ``n_frames``, ``estimator``, ``error_bars`` (the spread of ``--batches`` batches of the
frames, or the model's) and ``shells_unresolved`` (the rows whose two fitted shells lie closer than
the camera's spot, whose per-shell betas are not to be trusted: a warning names them); for the
events path, the events file. With ``--centre fit`` the image centre is fitted too, with its error
bars (the direct path: ``sevi/fit/centred_frame_sum_fit.py``; the events path:
``sevi/fit/centred_fit.py``), and written as ``AnswerCentre`` in the frames' pixel indices (axis 0 = x;
the course's centre is 511.5 on both axes), as ``sevi predict --centre fit`` writes it. The model must have been trained
for the electron count the measurement holds (a clear error says so otherwise).
"""

from __future__ import annotations

import argparse
from pathlib import Path

from sevi.fit.estimators import DEFAULT_BATCHES, DEFAULT_ESTIMATOR, ESTIMATORS


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("analyze", help="frames -> events -> image -> Answer with uncertainties (the whole path)",
                       description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("frames", help="HDF5 with a FinalImage table (the course's camera frames)")
    p.add_argument("--model", required=True, help="model.pt, or the directory holding it")
    p.add_argument("--out", required=True, help="output Answer HDF5 (written atomically)")
    p.add_argument("--path", choices=("auto", "events", "direct"), default="auto",
                   help="auto (default): direct for a model trained with spot_blur > 0, else events")
    p.add_argument("--events", default=None, help="events file (default: OUT with suffix .events.h5)")
    p.add_argument("--chunk", type=int, default=256, help="frames per task (events) or per read (direct)")
    p.add_argument("--no-ray", action="store_true", help="centroid chunks in this process")
    p.add_argument("--fast", action="store_true", help="events path: skip the joint refit of clusters "
                                                       "of 3+ spots (as sevi frames --fast)")
    p.add_argument("--device", default="auto")
    p.add_argument("--electron-tolerance", type=float, default=0.15)
    p.add_argument("--no-refine", action="store_true", help="the regressor's answer alone (default: refined by "
                                                            "the likelihood fit, as sevi predict)")
    p.add_argument("--estimator", choices=ESTIMATORS, default=DEFAULT_ESTIMATOR,
                   help=f"the direct path's answer (default {DEFAULT_ESTIMATOR}): gls, one generalised-least-squares "
                        "step that uses the frame sum's pixel correlations (rings closer than a spot told apart); "
                        "wls, the weighted least-squares fit alone (sevi/fit/frame_sum_fit.py)")
    p.add_argument("--batches", type=int, default=DEFAULT_BATCHES,
                   help=f"the direct path's error bars from the spread of this many contiguous batches of the frames "
                        f"(default {DEFAULT_BATCHES}; no model of the camera's noise needed, sevi/fit/batch_spread.py); "
                        "0: the model's error bars. The answer file's error_bars attribute says which")
    p.add_argument("--centre", choices=("course", "fit"), default="course",
                   help="course (default): the course's centre, the corner between the frame's middle pixels; fit: "
                        "the centre fitted with its error bars (sevi/fit/centred_frame_sum_fit.py; slower)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import numpy as np

    from sevi.cli.frames import chunk_runner
    from sevi.io.answer_file import write_answer
    from sevi.io.paths import check_outputs
    from sevi.pipeline.frames_answer import answer_frames
    from sevi.regressor.inference import electron_window, load_model_file
    from sevi.runtime.device import pick_device
    from sevi.runtime.errors import InputError

    events = Path(args.events or Path(args.out).with_suffix(".events.h5"))
    check_outputs({"--out": args.out, "--events": events}, {"FRAMES": args.frames, "--model": args.model})
    device = pick_device(args.device)
    model, cfg = load_model_file(args.model, device)  # fail before hours of centroiding, not after
    electron_window(cfg, args.electron_tolerance)  # a bad --electron-tolerance fails now, not after centroiding
    if args.centre == "fit" and args.no_refine:
        raise InputError("--centre fit needs the refinement (the centre is a parameter of the likelihood fit); "
                         "drop --no-refine, or use --centre course")
    done = answer_frames(args.frames, model, cfg, device, path=args.path, events=events, chunk=args.chunk,
                         fast=args.fast, runner=chunk_runner(not args.no_ray),
                         centroid_device=None if args.device == "auto" else args.device,
                         refine=not args.no_refine, tolerance=args.electron_tolerance,
                         fit_centre=args.centre == "fit", estimator=args.estimator, batches=args.batches)
    res = done.result
    extra, centre = {}, None
    if args.centre == "fit":  # in the frames' pixel indices (the events path: its image's)
        c, sd = res.diagnostics["centre"], res.diagnostics["centre_sd"]
        centre = {"x0": c[:, 0], "z0": c[:, 1], "x0_sd": sd[:, 0], "z0_sd": sd[:, 1], "fitted": 1}
    if res.refined and "unresolved" in res.diagnostics:  # rows whose shells lie closer than the spot
        extra["shells_unresolved"] = np.flatnonzero(res.diagnostics["unresolved"]).astype(np.int64)
    write_answer(args.out, res.answer, None, attrs={"model": str(args.model), "frames": str(args.frames),
                                                    "device": str(device), "centre": args.centre, **done.attrs, **extra},
                 regressor=res.regressor if res.refined else None, diagnostics=res.diagnostics, centre=centre)
    p = res.answer
    how = f"direct path, {done.attrs['n_frames']} frames, ~{done.electrons:.0f} electrons" if done.path == "direct" \
        else f"events path, {done.electrons:.0f} events"
    print(f"wrote {args.out} ({how}): R = {p['R'][0].round(4).tolist()}, "
          f"beta_2 = {p['beta'][0, :, 0].round(3).tolist()}")
    return 0
