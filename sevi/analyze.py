"""`sevi analyze`: camera frames -> electron events -> accumulated image -> regressor -> Answer.

    sevi analyze FRAMES.h5 --model RUN/final --out ANSWER.h5 [--events EVENTS.h5] [--no-ray]

Step 1 is ``sevi frames`` (streamed, chunked, parallel Ray tasks, resumable: an interrupted
analyze re-run skips the chunks already centroided). Step 2 reads the events file's
``AccumulatedImage`` (counts of centroided electrons on the frames' grid) and runs the model as
``sevi predict`` does, writing ``Answer``, ``AnswerUncertainty`` (1-sigma) and ``AnswerSigmaR``.
The model must have been trained for the electron count the measurement holds (a clear error
says so otherwise).
"""

from __future__ import annotations

import argparse
from pathlib import Path


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("analyze", help="frames -> events -> image -> Answer with uncertainties (the whole path)",
                       description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("frames", help="HDF5 with a FinalImage table (the course's camera frames)")
    p.add_argument("--model", required=True, help="model.pt, or the directory holding it")
    p.add_argument("--out", required=True, help="output Answer HDF5 (written atomically)")
    p.add_argument("--events", default=None, help="events file (default: OUT with suffix .events.h5)")
    p.add_argument("--chunk", type=int, default=256, help="frames per task")
    p.add_argument("--no-ray", action="store_true", help="centroid chunks in this process")
    p.add_argument("--device", default="auto")
    p.add_argument("--electron-tolerance", type=float, default=0.15)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import h5py
    import torch

    from ray_jobs.frames_job import run_frames
    from sevi.generator import pick_device
    from sevi.predict import predict_images, write_answer
    from sevi.training import load_model

    device = pick_device(args.device)
    try:
        model, cfg = load_model(args.model, device)  # fail before hours of centroiding, not after
    except (FileNotFoundError, KeyError, RuntimeError, ValueError) as e:
        raise SystemExit(f"sevi analyze: cannot load model {args.model}: {e}")
    events = Path(args.events or Path(args.out).with_suffix(".events.h5"))
    frames_args = argparse.Namespace(frames=args.frames, out=str(events), chunk=args.chunk, grid=1024,
                                     no_ray=args.no_ray, device=None if args.device == "auto" else args.device,
                                     gpus_per_task=0.25, max_in_flight=None)
    code = run_frames(frames_args)
    if code:
        return code
    with h5py.File(events, "r") as f:
        if "AccumulatedImage" not in f:
            raise SystemExit(f"sevi analyze: {events}: no AccumulatedImage (an events file from an older version?)")
        image = f["AccumulatedImage"][()]
    try:
        with torch.inference_mode():
            p = predict_images(model, cfg, [(0, image[None])], device, args.electron_tolerance)
    except ValueError as e:
        raise SystemExit(f"sevi analyze: {events}: {e}")
    write_answer(args.out, p, None, attrs={"model": str(args.model), "frames": str(args.frames),
                                           "events": str(events), "device": str(device)})
    print(f"wrote {args.out}: R = {p['R'][0].round(4).tolist()}, beta_2 = {p['beta'][0, :, 0].round(3).tolist()}")
    return 0
