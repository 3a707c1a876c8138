"""`sevi simulate-frames`: camera frames (FinalImage) rendered from electron hits, plus the truth.

    sevi simulate-frames FRAMES.h5 --frames N [--per-frame 100] [--hits disc|disc:R|shells|prior|HITS.h5]

The hits are drawn (``disc``, ``disc:R``, ``shells``, ``prior``; sevi.camera.frames) or read from an
HDF5 file; each frame is rendered with the course's spot model (``--renderer fast``, the default:
sevi.camera.frame_renderer; ``reference``: sevi.camera.frames.render_frames, spot by spot; the same
distribution) and the electrons that made a spot are written as the truth table ``DetectedElectrons``
(docs/formats.md, frame file).
"""
from __future__ import annotations

import argparse
from pathlib import Path

__all__ = ["add_parser", "run", "HITS_NAMES"]


def add_parser(subparsers) -> argparse.ArgumentParser:
    p = subparsers.add_parser("simulate-frames",
                              help="simulate camera frames (FinalImage) plus the detected-electron truth")
    p.add_argument("out", help="output frame file (FinalImage, DetectedElectrons truth)")
    p.add_argument("--frames", type=int, default=10, help="number of frames (default 10)")
    p.add_argument("--per-frame", type=float, default=100.0,
                   help="mean detected electrons per frame (default 100); hits drawn = this / 0.9")
    p.add_argument("--hits", default="disc",
                   help="'disc' (uniform, radius 0.95), 'disc:R' (uniform, radius R), 'shells' (two fixed "
                        "Newton spheres), 'prior' "
                        "(a measurement from the notes' prior every 10 frames), or an HDF5 "
                        "file with a table (DetectedElectrons or GeneratedElectrons) with ImageId, x, z")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--batch", type=int, default=16, help="frames rendered at once (default 16)")
    p.add_argument("--device", default=None, help="torch device (default: cuda if available, else cpu)")
    p.add_argument("--renderer", choices=("fast", "reference"), default="fast",
                   help="fast (default): sevi/camera/frame_renderer.py, separable spots, ~7x the reference on a "
                        "CPU; reference: sevi/camera/frames.py, spot by spot. The same spot model and distribution")
    p.set_defaults(func=run)
    return p


def _disc_radius(hits: str) -> float:
    """``disc`` -> 0.95; ``disc:R`` -> R (detector units, in (0, 1])."""
    if hits == "disc":
        return 0.95
    try:
        r = float(hits.split(":", 1)[1])
    except ValueError:
        r = -1.0
    if not 0.0 < r <= 1.0:
        raise SystemExit(f"sevi simulate-frames --hits {hits}: expected disc:R with R in (0, 1], detector units")
    return r


HITS_NAMES = ("disc", "disc:R", "shells", "prior")


def _given_hits(path: str):
    import numpy as np

    from sevi.io.tables import open_h5

    if not Path(path).exists():  # most often a misspelt name, not a missing file
        raise ValueError(f"--hits {path}: not one of {', '.join(HITS_NAMES)}, and no such file; expected one of "
                         f"those or an HDF5 file with a DetectedElectrons or GeneratedElectrons table")
    with open_h5(path) as f:
        for name in ("DetectedElectrons", "GeneratedElectrons"):
            if name in f and all(k in (f[name].dtype.names or ()) for k in ("ImageId", "x", "z")):
                rows = f[name][...]
                break
        else:
            raise ValueError(f"{path}: no DetectedElectrons/GeneratedElectrons table with ImageId, x, z")
    for k in ("x", "z"):
        bad = ~np.isfinite(rows[k])
        if bad.any():
            raise ValueError(f"{path}: field '{name}.{k}' is {rows[k][bad][0]} in row {int(np.argmax(bad))}; "
                             f"expected finite detector coordinates")
    if len(rows) == 0:
        raise ValueError(f"{path}: table '{name}' has no rows; expected electron hits")
    ids = rows["ElectronId"] if "ElectronId" in rows.dtype.names else np.arange(len(rows))
    uniq, frame = np.unique(rows["ImageId"], return_inverse=True)
    return rows["x"].astype(np.float64), rows["z"].astype(np.float64), frame, uniq.astype(np.int32), ids


def run(args: argparse.Namespace) -> int:
    import numpy as np
    import torch
    from tqdm import tqdm

    from sevi.camera.frames import (
        FrameModel,
        draw_disc_hits,
        draw_prior_hits,
        draw_shell_hits,
        render_frames,
    )
    from sevi.io.frame_files import FrameWriter
    from sevi.io.paths import check_outputs
    from sevi.io.write_behind import WriteBehind
    from sevi.runtime.device import pick_device

    given = args.hits not in ("disc", "shells", "prior") and not args.hits.startswith("disc:")
    check_outputs({"OUT": args.out}, {"--hits": args.hits if given else None})
    for bad, text in ((args.frames < 1, f"--frames: got {args.frames}; expected >= 1 frames"),
                      (not 0 < args.per_frame < 1e5,  # also false for NaN; 1e5 spots would cover a frame
                       f"--per-frame: got {args.per_frame}; expected a mean count of electrons in (0, 1e5)"),
                      (args.batch < 1, f"--batch: got {args.batch}; expected >= 1 frames")):
        if bad:
            raise ValueError(text)
    dev = pick_device(args.device)  # None: cuda when available, else cpu
    model = FrameModel()
    gen = torch.Generator(device=dev)
    gen.manual_seed(args.seed)
    n_hits = args.per_frame / model.detect_prob
    if args.hits in ("disc", "shells", "prior") or args.hits.startswith("disc:"):
        if args.hits == "prior":
            x, z, fr = draw_prior_hits(args.frames, n_hits, generator=gen, seed=args.seed)
        elif args.hits == "shells":
            x, z, fr = draw_shell_hits(args.frames, n_hits, generator=gen)
        else:
            x, z, fr = draw_disc_hits(args.frames, n_hits, radius=_disc_radius(args.hits), generator=gen)
        x, z, fr = x.cpu().numpy(), z.cpu().numpy(), fr.cpu().numpy()
        image_ids = np.arange(args.frames, dtype=np.int32)
        eids = np.arange(len(x))
    else:
        x, z, fr, image_ids, eids = _given_hits(args.hits)
    n_frames = len(image_ids)
    if getattr(args, "renderer", "fast") == "fast":
        from sevi.camera.frame_renderer import FrameRenderer
        fast = FrameRenderer(model, dev)
        render = lambda x, z, f, n: fast(x, z, f, n, gen)  # noqa: E731
    else:
        render = lambda x, z, f, n: render_frames(x, z, f, n, model, generator=gen)  # noqa: E731

    def write(w, ids, images, truth):  # one batch: its frames, then its detected electrons
        w.append(ids, images)
        w.append_truth(*truth)

    # Each batch is written behind the next one's render (sevi.io.write_behind: in order, one at a time).
    with FrameWriter(args.out) as w, WriteBehind() as writes:
        for a in tqdm(range(0, n_frames, args.batch), unit="batch", desc="rendering", disable=None):
            b = min(n_frames, a + args.batch)
            sel = (fr >= a) & (fr < b)
            frames, det = render(torch.from_numpy(x[sel]).to(dev), torch.from_numpy(z[sel]).to(dev),
                                 torch.from_numpy(fr[sel] - a).to(dev), b - a)
            det = det.cpu().numpy()
            writes.submit(write, w, image_ids[a:b], frames.cpu().numpy(),
                          (image_ids[fr[sel][det]], eids[sel][det], x[sel][det], z[sel][det]))
    print(f"sevi simulate-frames: {n_frames} frames -> {args.out}")
    return 0
