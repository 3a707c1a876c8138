"""Frames/s of the fast renderer (``sevi.camera.frame_renderer.FrameRenderer``) against today's
``sevi.camera.frames.render_frames`` and a plain numpy spot-by-spot renderer, on the same hits, with
1 and 2 torch threads, in one run; and of the streaming sum (``accumulate_frames``) with its hits.
The new renderer is timed serial and with ``overlap=True`` (its background drawn in a second
Python thread: one more core, whatever torch's thread count).

    OMP_NUM_THREADS=2 python tools/bench_frame_renderer.py --out bench_frame_renderer.json

Hits: the course's load (``draw_prior_hits``: a prior measurement every 10 frames), about
``--per-frame`` detected spots per frame on 1024^2 frames. Each figure is the best of ``--repeats``
timed calls after an untimed warm-up (``frames_per_second``); the baselines render only the first
``--baseline-frames`` frames (they are ~100x slower). The numpy renderer does not use torch's
threads; it is timed once. The load average is written with the figures: on a shared box another
process on one core halves the 2-thread figures (OpenMP waits for its slowest thread).
"""
from __future__ import annotations

import argparse
import os
import platform
import sys
import time

import numpy as np
import torch

from sevi.camera.frame_renderer import FrameRenderer, accumulate_frames
from sevi.camera.frames import FrameModel, draw_prior_hits, render_frames
from sevi.io.atomic import write_json
from sevi.physics.prior import Prior, ShellParams
from sevi.runtime.device import pick_device


def numpy_frames(x: np.ndarray, z: np.ndarray, frame: np.ndarray, n_frames: int, model: FrameModel,
                 rng: np.random.Generator) -> np.ndarray:
    """The course's recipe in plain numpy, spot by spot in its window, float64: ``(B, G, G)`` uint8.

    Per electron: detected with ``detect_prob`` (and only inside ``[-1, 1)^2``), ``A``, ``sigma``,
    ``rho`` drawn; its window of ``2h+1`` px around ``round(px), round(pz)`` is the formula
    evaluated on the S x S sub-pixel grid and averaged; then a ``N(20, 20^2)`` background per pixel,
    rounding and clipping. The baseline a straightforward implementation gives.
    """
    G, h, S = model.grid, model.window_half_px, model.subpixel
    n = len(x)
    detected = (rng.random(n) < model.detect_prob) & (x >= -1) & (x < 1) & (z >= -1) & (z < 1)
    amp = np.clip(rng.normal(model.amp_mean, model.amp_std, n), 0, None)
    s_px = np.clip(rng.normal(model.sigma_mean, model.sigma_std, n), 1e-6, None) * model.px_per_unit
    rho = np.clip(rng.normal(0.0, model.rho_std, n), -1, 1)
    img = rng.normal(model.background_mean, model.background_std, (n_frames, G, G))
    sub = (np.arange(S) + 0.5) / S - 0.5
    u = np.arange(-h, h + 1)
    px, pz = (x + 1) * G / 2 - 0.5, (z + 1) * G / 2 - 0.5
    for k in np.flatnonzero(detected):
        rows, cols = int(np.round(px[k])) + u, int(np.round(pz[k])) + u
        dx = (rows[:, None] + sub[None, :] - px[k])[:, :, None, None]
        dz = (cols[:, None] + sub[None, :] - pz[k])[None, None, :, :]
        win = amp[k] * np.exp(-(dx * dx + dz * dz + 2 * rho[k] * dx * dz) / (2 * s_px[k] ** 2)).mean(axis=(1, 3))
        ri, ci = (rows >= 0) & (rows < G), (cols >= 0) & (cols < G)
        img[frame[k]][np.ix_(rows[ri], cols[ci])] += win[np.ix_(ri, ci)]
    return np.clip(np.round(img), 0, 255).astype(np.uint8)


def frames_per_second(render, x, z, frame, n_frames: int, *, device: torch.device, seed: int = 0,
                      repeats: int = 3) -> float:
    """Frames/s of ``render(x, z, frame, n_frames, generator)`` (a :class:`FrameRenderer`, or any
    callable of that signature returning frames first): the best of ``repeats`` timed calls after
    one untimed warm-up, each with a generator seeded ``seed``, synchronised on CUDA."""
    def once() -> float:
        gen = torch.Generator(device=device).manual_seed(seed)
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        t0 = time.perf_counter()
        render(x, z, frame, n_frames, gen)
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        return time.perf_counter() - t0

    once()
    return n_frames / min(once() for _ in range(max(1, repeats)))


def stream_rate(renderer: FrameRenderer, n_frames: int, per_frame: float, seed: int) -> dict:
    """Frames/s of ``accumulate_frames`` on one prior measurement at ``per_frame`` emitted electrons
    per frame (both shells equally): hit sampling, rendering and summing together."""
    p = Prior()(1, seed).params
    half = round(n_frames * per_frame / 2)
    params = ShellParams(p.R, p.sigma_R, p.beta, torch.tensor([[half, half]]))
    gen = torch.Generator(device=renderer.device).manual_seed(seed)
    t0 = time.perf_counter()
    res = accumulate_frames(renderer, params, n_frames, generator=gen, progress=False)
    if renderer.device.type == "cuda":
        torch.cuda.synchronize(renderer.device)
    dt = time.perf_counter() - t0
    return {"frames": res.n_frames, "electrons": 2 * half, "detected": len(res.x), "seconds": dt,
            "frames_per_s": res.n_frames / dt}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", required=True, help="JSON file for the figures")
    ap.add_argument("--frames", type=int, default=64, help="frames per timed call of the new renderer (default 64)")
    ap.add_argument("--baseline-frames", type=int, default=4,
                    help="frames per timed call of render_frames and of the numpy renderer (default 4)")
    ap.add_argument("--stream-frames", type=int, default=256, help="frames of the streaming measurement (default 256)")
    ap.add_argument("--per-frame", type=float, default=100.0, help="detected spots per frame (default 100)")
    ap.add_argument("--threads", default="1,2", help="torch thread counts to time (default 1,2)")
    ap.add_argument("--repeats", type=int, default=3, help="timed calls per figure, best kept (default 3)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--device", default="cpu", help="cpu (default), cuda or auto")
    a = ap.parse_args(argv)
    try:
        device = pick_device(a.device)
        threads = [int(t) for t in a.threads.split(",") if t.strip()]
    except ValueError as e:
        ap.error(str(e))
    if min(a.frames, a.baseline_frames, a.stream_frames, a.repeats, *threads) < 1 or a.baseline_frames > a.frames:
        ap.error("--frames, --baseline-frames (<= --frames), --stream-frames, --repeats and --threads must be >= 1")

    model = FrameModel()
    gen = torch.Generator().manual_seed(a.seed)
    x, z, f = draw_prior_hits(a.frames, a.per_frame / model.detect_prob, generator=gen, seed=a.seed)
    x, z, f = x.to(device), z.to(device), f.to(device)
    base = f < a.baseline_frames
    xb, zb, fb = x[base], z[base], f[base]
    out = {"tool": "tools/bench_frame_renderer.py", "argv": sys.argv[1:] if argv is None else list(argv),
           "device": str(device), "cpu": platform.processor() or platform.machine(), "cpu_count": os.cpu_count(),
           "torch": torch.__version__, "omp_num_threads": os.environ.get("OMP_NUM_THREADS"),
           "grid": model.grid, "frames": a.frames, "baseline_frames": a.baseline_frames, "hits": int(x.numel()),
           "spots_per_frame": a.per_frame, "load_average_start": os.getloadavg()[0], "by_threads": {}}

    t0 = time.perf_counter()
    numpy_frames(xb.cpu().numpy(), zb.cpu().numpy(), fb.cpu().numpy(), a.baseline_frames, model,
                 np.random.default_rng(a.seed))
    out["numpy_frames_per_s"] = a.baseline_frames / (time.perf_counter() - t0)
    print(f"numpy spot by spot: {out['numpy_frames_per_s']:.2f} frames/s ({a.baseline_frames} frames)", flush=True)

    old_threads = torch.get_num_threads()
    old = lambda x_, z_, f_, n_, g_: render_frames(x_, z_, f_, n_, model, generator=g_)  # noqa: E731
    try:
        for t in threads:
            torch.set_num_threads(t)
            r = {"render_frames_per_s": frames_per_second(old, xb, zb, fb, a.baseline_frames, device=device,
                                                          seed=a.seed, repeats=max(1, a.repeats - 1))}
            # overlap: the background drawn in a second Python thread (CPU only; same frames).
            for name, overlap in (("serial", False), ("overlap", True)):
                if overlap and device.type != "cpu":
                    continue
                new = FrameRenderer(model, device, overlap=overlap)
                fps = frames_per_second(new, x, z, f, a.frames, device=device, seed=a.seed, repeats=a.repeats)
                r[name] = {"frames_per_s": fps, "ratio_to_render_frames": fps / r["render_frames_per_s"],
                           "ratio_to_numpy": fps / out["numpy_frames_per_s"],
                           "stream": stream_rate(new, a.stream_frames, a.per_frame / model.detect_prob, a.seed)}
            out["by_threads"][str(t)] = r
            print(f"{t} torch thread(s): render_frames {r['render_frames_per_s']:.1f} frames/s", flush=True)
            for name in ("serial", "overlap"):
                if name in r:
                    v = r[name]
                    print(f"  new ({name:7s}) {v['frames_per_s']:6.0f} frames/s = {v['ratio_to_render_frames']:5.1f}x "
                          f"render_frames, {v['ratio_to_numpy']:5.1f}x numpy; streaming sum "
                          f"{v['stream']['frames_per_s']:.0f} frames/s ({v['stream']['frames']} frames, "
                          f"{v['stream']['electrons']} electrons)", flush=True)
    finally:
        torch.set_num_threads(old_threads)
    out["load_average_end"] = os.getloadavg()[0]
    write_json(a.out, out)
    print(f"load average {out['load_average_start']:.2f} -> {out['load_average_end']:.2f}; figures in {a.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
