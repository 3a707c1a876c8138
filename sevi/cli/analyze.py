"""`sevi analyze`: camera frames -> image -> regressor -> Answer, by one of two paths.

    sevi analyze FRAMES.h5 --model RUN/final --out ANSWER.h5 [--path auto|events|direct]
                 [--events EVENTS.h5] [--no-ray] [--chunk 256]

The path (``--path``, default ``auto``): ``auto`` takes it from the model's training config.
A model trained with ``spot_blur > 0`` (``--spot-blur 0.015``: histograms blurred like the camera
spot) reads the **direct** image; a model with ``spot_blur = 0`` (clean histograms) reads
the **events** image. Forcing the other path than the model was trained for is allowed but warned
about: the model then sees images unlike its training set.

**events** (a model with spot_blur = 0). Step 1 is ``sevi frames`` (streamed, chunked, parallel Ray tasks, resumable: an interrupted
analyze re-run skips the chunks already centroided). Step 2 reads the events file's
``AccumulatedImage`` (counts of centroided electrons on the frames' grid) and runs the model as
``sevi predict`` does, writing ``Answer``, ``AnswerUncertainty`` (1-sigma) and ``AnswerSigmaR``.
The model must have been trained for the electron count the measurement holds (a clear error
says so otherwise).

**direct** (a model with spot_blur > 0; sevi/camera/direct_image.py). The frames are summed, streamed ``--chunk``
frames at a time (``--chunk`` MB of memory, one process, no Ray, no events file); the camera
background's expected mean after rounding and clipping (21.67 counts per pixel for N(20, 20^2)) is
subtracted once per frame; the sum is block-summed to the model's grid and divided by the mean spot
flux, so the image is in electron units and the same electron-count check applies. The refinement
(default; ``--no-refine`` skips it) reads the same frame sum at 256^2 and fits it with the direct
image's own forward model and noise (sevi/fit/direct_fit.py). The answer file's attrs record ``path``
and, for the direct path, ``n_frames``.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path


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
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import h5py
    import torch

    from sevi.camera.centroid_file import centroid_file
    from sevi.cli.frames import chunk_runner
    from sevi.io.answer_file import write_answer
    from sevi.io.paths import refuse_output_over_input
    from sevi.regressor.inference import (
        electron_window,
        load_model_file,
        predict_images,
    )
    from sevi.runtime.device import pick_device

    if args.chunk < 1:
        raise ValueError(f"--chunk: got {args.chunk}; expected >= 1 frames per task (events) or per read (direct)")
    events = Path(args.events or Path(args.out).with_suffix(".events.h5"))
    refuse_output_over_input({"--out": args.out, "--events": events}, {"FRAMES": args.frames, "--model": args.model})
    device = pick_device(args.device)
    model, cfg = load_model_file(args.model, device)  # fail before hours of centroiding, not after
    electron_window(cfg, args.electron_tolerance)  # a bad --electron-tolerance fails now, not after centroiding
    path = choose_path(args.path, cfg)
    if path == "direct":
        return run_direct(args, model, cfg, device)
    code = centroid_file(args.frames, events, chunk=args.chunk, fast=args.fast,
                         device=None if args.device == "auto" else args.device,
                         runner=chunk_runner(not args.no_ray))
    if code:
        return code
    with h5py.File(events, "r") as f:
        if "AccumulatedImage" not in f:
            raise SystemExit(f"sevi analyze: {events}: no AccumulatedImage (an events file from an older version?)")
        image = f["AccumulatedImage"][()]
    try:
        with torch.inference_mode():
            p = predict_images(model, cfg, [(0, image[None])], device, args.electron_tolerance, nonnegative=True)
    except ValueError as e:
        raise SystemExit(f"sevi analyze: {events}: {e}")
    first, diag = p, None
    if not args.no_refine:
        from sevi.pipeline.image_answer import refine_or_explain
        p, diag = refine_or_explain(p, cfg, device, str(events), [image])
    write_answer(args.out, p, None, attrs={"model": str(args.model), "frames": str(args.frames),
                                           "events": str(events), "device": str(device), "path": "events"},
                 regressor=None if args.no_refine else first, diagnostics=diag)
    print(f"wrote {args.out}: R = {p['R'][0].round(4).tolist()}, beta_2 = {p['beta'][0, :, 0].round(3).tolist()}")
    return 0


def choose_path(requested: str, cfg) -> str:
    """'events' or 'direct' for ``--path`` (auto: direct iff the model was trained with spot_blur > 0).
    A forced path that does not match the model's training images is warned about on stderr."""

    trained_for = "direct" if cfg.spot_blur > 0 else "events"
    if requested == "auto":
        return trained_for
    if requested not in ("events", "direct"):
        raise SystemExit(f"sevi analyze: --path must be auto, events or direct, got {requested!r}")
    if requested != trained_for:
        print(f"sevi analyze: warning: --path {requested} with a model trained for the {trained_for} path "
              f"(spot_blur = {cfg.spot_blur}); its answers are not calibrated for these images", file=sys.stderr)
    return requested


def run_direct(args, model, cfg, device) -> int:
    """The direct path: stream-sum the frames, subtract the background, rebin, predict, write."""
    import torch

    from sevi.camera.direct_image import direct_image, sum_frames
    from sevi.io.answer_file import write_answer
    from sevi.io.frame_files import FrameFileError
    from sevi.regressor.inference import predict_images

    try:
        total, n = sum_frames(args.frames, args.chunk)
        image = direct_image(total, n, cfg.grid)
    except (FrameFileError, ValueError) as e:
        raise SystemExit(f"sevi analyze: {e}")
    try:
        with torch.inference_mode():
            p = predict_images(model, cfg, [(0, image[None])], device, args.electron_tolerance)
    except ValueError as e:
        raise SystemExit(f"sevi analyze: {args.frames} (direct path, {n} frames summed): {e}")
    first, diag = p, None
    if not args.no_refine:  # the fit reads the frame sum at its own grid (256^2: pixels of half a spot sigma)
        from sevi.fit.direct_fit import REFINE_GRID
        from sevi.pipeline.image_answer import refine_or_explain
        p, diag = refine_or_explain(p, cfg, device, f"{args.frames} (direct path)",
                                    [direct_image(total, n, REFINE_GRID)], n_frames=n)
    write_answer(args.out, p, None, attrs={"model": str(args.model), "frames": str(args.frames), "device": str(device),
                                           "path": "direct", "n_frames": n, "spot_blur": cfg.spot_blur},
                 regressor=None if args.no_refine else first, diagnostics=diag)
    print(f"wrote {args.out} (direct path, {n} frames, ~{image.sum():.0f} electrons): "
          f"R = {p['R'][0].round(4).tolist()}, beta_2 = {p['beta'][0, :, 0].round(3).tolist()}")
    return 0
