"""One prepared GPU check: every GPU figure the project claims, measured in one run of under 8 minutes.

    python tools/gpu_check.py --out gpu_check_out                       # on a CUDA box, < 8 min
    python tools/gpu_check.py --out /tmp/gpu_check --device cpu --tiny  # the CPU smoke path (tests)

Runs without Ray (nothing here or in what it imports needs it) from a plain copy of the repository:
the repository root goes on ``sys.path``, so the package need not be installed. Steps, in order,
each with its own time budget; a step that fails or overruns leaves one line in the table and
its traceback in the JSON, and the next step runs:

1. environment: device name and memory, torch / CUDA / cuDNN versions;
2. generator: images/s of ``SeviGenerator`` (ITM) at 1024^2 with 2 x 2e6 electrons, and the notes'
   numpy method timed in the same run for the ratio (``tools/bench_generate.py``);
3. expected_renderer: the Poisson renderer against ITM at the course's counts (1024^2 and 128^2);
4. training: the a100 preset's model and batch, fed in-process by ``make_batch``, through
   ``sevi.regressor.training.train_loop`` for a fixed wall budget, with bf16 autocast and without: steps/s,
   images/s, peak GPU memory, the share of step time spent waiting for data, and the loss;
5. centroiding: frames rendered on the device (``tools/bench_frames.py``), frames/s of
   ``centroid_frames`` (full, and without the joint cluster refit as ``sevi frames --fast``),
   recall and precision;
6. optics: spectra/s of the batched TMM (``tools/bench_optics.py``), float32 and float64;
7. refinement: seconds per image of the likelihood refinement at 1024^2, course counts; and of the
   direct-path refinement (a blurred image read at 256^2);
8. frame_renderer: frames/s of the camera renderer at the course's density, and of the streaming sum;
9. regressor_front: images/s and peak memory of the regressors the sweep chose between (its CPU
   front member and the presets), with bf16 autocast and channels-last on and off;
10. frames_limit (only when named: ``--steps frames_limit --frames-model runs/sevi-cpu-frames/final``):
   as many 50,000-frame measurements as its budget allows (50 wanted), the direct path against
   perfect centroiding (``tools/frames_to_limit.py``).

``OUT/gpu_check.json`` is written atomically after every step (so a run killed from outside
keeps what it measured; steps not reached say "not run"). A step is one line in ``STEPS``.
Statuses: "ok", "failed: <why>", "skipped: <why>", "not run". Non-finite figures are written as
null and named in the step's ``non_finite`` list, never as NaN. Exit status 1 if a step failed.
"""

from __future__ import annotations

import argparse
import datetime
import gc
import importlib
import math
import os
import platform
import signal
import sys
import tempfile
import time
import traceback
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # a plain copy of the repository, not pip-installed
    sys.path.insert(0, str(ROOT))

import torch  # noqa: E402

from sevi.io.atomic import write_json
from sevi.runtime.device import pick_device


@dataclass(frozen=True)
class Check:
    """What every step sees: the device, the size mode, where files go."""

    device: torch.device
    tiny: bool  # very small sizes: the whole check in well under a minute on a CPU
    out_dir: Path


class Skipped(Exception):
    """A step that has nothing to measure here (its module is absent); the message says why."""


class StepTimeout(Exception):
    """Raised by the alarm when a step runs past its hard limit."""


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


# -- 1. environment ----------------------------------------------------------------------------
def step_environment(ck: Check, budget_s: float) -> dict:
    out = {"device": str(ck.device), "torch": torch.__version__, "cuda": torch.version.cuda,
           "python": platform.python_version(), "platform": platform.platform(), "cpu_count": os.cpu_count(),
           "torch_threads": torch.get_num_threads()}
    for mod in ("numpy", "scipy", "h5py", "pandas", "tensorboard"):
        try:
            out[f"{mod}_version"] = importlib.import_module(mod).__version__
        except ImportError:
            out[f"{mod}_version"] = None
    if ck.device.type == "cuda":
        p = torch.cuda.get_device_properties(ck.device)
        free, total = torch.cuda.mem_get_info(ck.device)
        out.update(device_name=p.name, memory_gib=total / 2**30, memory_free_gib=free / 2**30,
                   capability=f"{p.major}.{p.minor}", multiprocessors=p.multi_processor_count,
                   cudnn=torch.backends.cudnn.version(), bf16_supported=torch.cuda.is_bf16_supported(),
                   device_count=torch.cuda.device_count())
        out["summary"] = (f"{p.name}, {total / 2**30:.1f} GiB, torch {torch.__version__}, "
                          f"CUDA {torch.version.cuda}, cuDNN {out['cudnn']}")
    else:
        out["device_name"] = platform.processor() or platform.machine()
        out["summary"] = f"CPU {out['device_name']}, {os.cpu_count()} cores, torch {torch.__version__}"
    return out


# -- 2. generator ------------------------------------------------------------------------------
GENERATOR_TARGET_IMAGES_PER_S = 1000.0  # BENCHMARKS.md target at G 1024 with 2 x 2e6 electrons


def step_generator(ck: Check, budget_s: float) -> dict:
    from sevi.physics.generator import GeneratorConfig, SeviGenerator, default_chunk_electrons
    from sevi.physics.prior import Prior, PriorConfig
    from sevi.evaluation.generator_timing import time_generator, time_numpy

    cuda = ck.device.type == "cuda"
    grid, electrons = (128, 20_000) if ck.tiny else (1024, 2_000_000)
    # Ours: 32 images (128 MiB of int32 counts) keep a GPU busy across many chunks; 2 on a CPU.
    batch = 32 if cuda and not ck.tiny else 2
    # The default chunk (what training uses) and, on a GPU, a 4x larger one (about 1 GiB of scratch).
    chunks = [default_chunk_electrons(ck.device)] + ([1 << 24] if cuda and not ck.tiny else [])
    n_numpy = 1 if ck.tiny else 2
    out = {"grid": grid, "electrons_per_shell": electrons, "batch": batch, "by_chunk": {}}
    prior_cfg = PriorConfig().with_electrons(electrons)
    t_end = time.perf_counter() + 0.75 * budget_s  # the numpy baseline takes the rest
    for chunk in chunks:
        gen = SeviGenerator(GeneratorConfig(grid=grid, chunk_electrons=chunk), ck.device, prior_cfg)
        probe = time_generator(gen, gen.prior(2 * batch, seed=0).params, batch, 1)  # s per image
        share = (t_end - time.perf_counter()) / max(1, len(chunks) - len(out["by_chunk"]))
        calls = 1 if ck.tiny else max(1, min(20, int(share / (probe * batch)) - 1))
        t = time_generator(gen, gen.prior(batch * (calls + 1), seed=1).params, batch, calls)
        out["by_chunk"][str(chunk)] = {"calls": calls, "images_per_s": 1 / t, "electrons_per_s": 2 * electrons / t}
        del gen
    best = max(out["by_chunk"].items(), key=lambda kv: kv[1]["images_per_s"])
    out.update(images_per_s=best[1]["images_per_s"], electrons_per_s=best[1]["electrons_per_s"], best_chunk=int(best[0]))
    t_np = time_numpy(Prior(prior_cfg)(n_numpy, seed=2).params, electrons, grid)
    out.update(numpy_images=n_numpy, numpy_images_per_s=1 / t_np, ratio_to_numpy=out["images_per_s"] * t_np,
               target=f">= {GENERATOR_TARGET_IMAGES_PER_S:g} images/s at G 1024, 2 x 2e6 e-",
               target_met=None if ck.tiny else out["images_per_s"] >= GENERATOR_TARGET_IMAGES_PER_S)
    out["summary"] = (f"{out['images_per_s']:.1f} images/s at G {grid}, 2 x {electrons:.0e} e- (batch {batch}, "
                      f"chunk {out['best_chunk']}); numpy {out['numpy_images_per_s']:.2f}/s, "
                      f"ratio {out['ratio_to_numpy']:.0f}x")
    return out


# -- 3. expected-image renderer (hook) ----------------------------------------------------------
def step_expected_renderer(ck: Check, budget_s: float) -> dict:
    """Images/s of the Poisson renderer (sevi/physics/expected_renderer.py) against the ITM generator, in the
    same run and on the same parameters, at the course's counts: at 1024^2 and at the 128^2 the
    cpu-course model reads (the renderer's cost is set by the pixels, ITM's by the electrons)."""
    from sevi.physics.expected_renderer import make_renderer
    from sevi.physics.generator import GeneratorConfig
    from sevi.physics.prior import PriorConfig
    from sevi.evaluation.generator_timing import time_generator

    electrons = 20_000 if ck.tiny else 2_200_000
    grids = (64,) if ck.tiny else (1024, 128)
    batch = 2 if ck.tiny or ck.device.type != "cuda" else 16
    pc = PriorConfig().with_electrons(electrons)
    out = {"electrons_per_shell": electrons, "batch": batch}
    for g in grids:
        itm = make_renderer("itm", GeneratorConfig(grid=g), ck.device, pc)
        poi = make_renderer("poisson", GeneratorConfig(grid=g), ck.device, pc)
        params = itm.prior(batch * 3, seed=0).params
        t_itm = time_generator(itm, params, batch, 2)
        t_poi = time_generator(poi, params, batch, 2)
        out[f"grid{g}"] = {"itm_images_per_s": 1 / t_itm, "poisson_images_per_s": 1 / t_poi, "ratio": t_itm / t_poi}
    out["summary"] = "; ".join(f"G {g}: poisson {out[f'grid{g}']['poisson_images_per_s']:.1f}/s, ITM "
                               f"{out[f'grid{g}']['itm_images_per_s']:.1f}/s ({out[f'grid{g}']['ratio']:.1f}x)"
                               for g in grids)
    return out


# -- 4. training -------------------------------------------------------------------------------
class _StopRun(Exception):
    """Raised by the feed to end a timed training run (train_loop has no wall clock of its own)."""


def steady_rates(t_call: list[float], wait: list[float], batch: int, eval_every: int, warmup: int) -> dict:
    """Step cadence from the feed's call times. Interval k (call k to call k + 1) holds the wait for
    batch k and training step k, plus the validation when (k + 1) % eval_every == 0: those, and the
    first ``warmup`` (kernel selection, allocations), are left out, so the rate is the steady one."""
    n = min(len(wait), len(t_call) - 1)  # a run stopped by the wall budget may end between the two records
    keep = [k for k in range(warmup, n) if (k + 1) % eval_every]
    if not keep:  # too few steps for a steady window: every interval
        keep = list(range(n))
    if not keep:
        raise RuntimeError("the training run ended before a single step was timed; give it a larger wall budget")
    span = sum(t_call[k + 1] - t_call[k] for k in keep)
    return {"steady_steps": len(keep), "steps_per_s": len(keep) / span, "images_per_s": len(keep) * batch / span,
            "step_s": span / len(keep), "data_wait_s_per_step": sum(wait[k] for k in keep) / len(keep),
            "data_wait_fraction": sum(wait[k] for k in keep) / span}


def training_run(cfg, device: torch.device, wall_s: float, max_steps: int | None = None,
                 eval_every: int = 20, warmup: int = 3) -> dict:
    """``sevi.regressor.training.train_loop`` on ``cfg`` fed in-process (``make_batch`` with the training
    stream's seeds) until ``wall_s`` seconds from the start (setup included) or ``max_steps`` steps.
    The validation set is one batch (``cfg.val_images``), evaluated every ``eval_every`` steps for the
    loss curve; no checkpoints. Returns steps, steady rates (``steady_rates``), the loss curve and
    the peak GPU memory."""
    from sevi.regressor.batches import batch_seed, make_batch, make_generator
    from sevi.regressor.training import LoopContext, train_loop
    from sevi.evaluation.timed_feed import TimedFeed

    cfg = cfg.replace(eval_every=eval_every, checkpoint_every=10**9)
    if device.type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)
    t0 = time.perf_counter()
    gen = make_generator(cfg.data, device)

    def feed(step: int):
        if (max_steps is not None and step >= max_steps) or time.perf_counter() - t0 >= wall_s:
            raise _StopRun
        return make_batch(gen, cfg.data, batch_seed(cfg, step))

    timed, curve = TimedFeed(feed), []
    report = lambda m, ckpt: curve.append({k: m[k] for k in ("step", "loss", "val/distance") if k in m})  # noqa: E731
    with tempfile.TemporaryDirectory(prefix="gpu_check_train_") as tmp:
        try:
            train_loop(cfg, timed, LoopContext(device=device, report=report, out_dir=tmp))
        except _StopRun:
            pass
    sync(device)
    steps = len(timed.wait)
    if steps == 0:
        raise RuntimeError(f"no training step finished within {wall_s:.0f} s (setup took it all)")
    out = {"steps": steps, "wall_s": time.perf_counter() - t0, "setup_s": timed.t_call[0] - t0,
           **steady_rates(timed.t_call, timed.wait, cfg.data.batch_size, eval_every, warmup),
           "loss_curve": curve,
           "peak_memory_gib": torch.cuda.max_memory_allocated(device) / 2**30 if device.type == "cuda" else None}
    vals = [c["val/distance"] for c in curve if "val/distance" in c]
    out["val_distance_first"], out["val_distance_last"] = (vals[0], vals[-1]) if vals else (None, None)
    out["loss_falling"] = vals[-1] < vals[0] if len(vals) >= 2 else None
    return out


def step_training(ck: Check, budget_s: float) -> dict:
    from sevi.regressor.train_config import PRESETS

    a100 = PRESETS["a100"]
    if ck.tiny:  # the a100 shape of things (polar input, strided stem) at toy sizes
        cfg = a100.replace(grid=64, n_r=32, n_theta=32, electrons=(2000, 4000), width=4, batch_size=4,
                                  target_stats_draws=200)
        max_steps, eval_every, warmup = 6, 3, 1
    else:
        cfg, max_steps, eval_every, warmup = a100, None, 20, 3
    cfg = cfg.replace(val_images=cfg.data.batch_size)  # one validation batch: a loss curve, cheaply
    out = {"preset": "a100" + (" (tiny sizes)" if ck.tiny else ""), "batch_size": cfg.data.batch_size, "grid": cfg.data.grid,
           "width": cfg.width, "input": f"{cfg.data.representation} {cfg.data.n_r} x {cfg.data.n_theta}",
           "electrons": list(cfg.data.electrons), "eval_every": eval_every,
           "autocast_note": "autocast applies on CUDA only; on a CPU both runs are float32",
           "memory_note": "peak_memory_gib: torch's peak allocation in the run: model, optimizer, activations "
                          "and the in-process generator's images and scratch"}
    wall = 0.45 * budget_s  # two runs, and room for the last step and the teardown
    for amp in ("bf16", "none"):
        out[f"amp_{amp}"] = training_run(cfg.replace(amp=amp), ck.device, wall, max_steps,
                                         eval_every, warmup)
    b, f = out["amp_bf16"], out["amp_none"]
    out["bf16_speedup"] = b["steps_per_s"] / f["steps_per_s"]
    mem = (f", peak {b['peak_memory_gib']:.1f} / {f['peak_memory_gib']:.1f} GiB"
           if b["peak_memory_gib"] is not None else "")
    fall = {True: "falls", False: "does not fall", None: "too few evaluations"}[b["loss_falling"]]
    out["summary"] = (f"batch {cfg.data.batch_size}: bf16 {b['steps_per_s']:.2f} steps/s ({b['images_per_s']:.0f} img/s), "
                      f"fp32 {f['steps_per_s']:.2f} steps/s{mem}; data wait {100 * b['data_wait_fraction']:.0f}% "
                      f"(bf16); val Distance {fall} over {b['steps']} steps")
    return out


# -- 5. centroiding ----------------------------------------------------------------------------
FRAMES_TARGET_PER_S = 2000.0  # BENCHMARKS.md target


def step_centroiding(ck: Check, budget_s: float) -> dict:
    from sevi.camera.centroid import centroid_frames
    from sevi.camera.centroid_config import CentroidConfig
    from sevi.camera.frames import FrameModel
    from sevi.evaluation.centroid_scoring import evaluate, found_px, simulate

    cuda = ck.device.type == "cuda"
    n = 3 if ck.tiny else (320 if cuda else 32)
    model = FrameModel()
    t0 = time.perf_counter()
    frames, truth = simulate(n, 100.0, "prior", 0, ck.device, model)  # rendered on the device, uint8 on the host
    sync(ck.device)
    out = {"frames": n, "hits": "prior", "per_frame": 100.0, "frames_rendered_per_s": n / (time.perf_counter() - t0),
           "target": f">= {FRAMES_TARGET_PER_S:g} frames/s"}
    t_end = time.perf_counter() + 0.8 * (budget_s - (time.perf_counter() - t0))
    for name, over in (("full", {}), ("fast", {"cluster_max": 0})):
        cfg = CentroidConfig.from_frame_model(model, **over)
        centroid_frames(frames[:min(n, cfg.frame_batch)].to(ck.device), cfg)  # warm-up
        sync(ck.device)
        found, done, spent = [], 0, 0.0
        share = (t_end - time.perf_counter()) / (2 if name == "full" else 1)
        chunk = 4 * cfg.frame_batch
        while done < n and (done == 0 or spent < share):  # frames start on the host, as from a file
            t = time.perf_counter()
            res = centroid_frames(frames[done:done + chunk].to(ck.device), cfg)
            sync(ck.device)
            spent += time.perf_counter() - t
            found += found_px(res, min(chunk, n - done), model.grid)
            done = min(n, done + chunk)
        r = evaluate(truth[:done], found, tol=1.5, overlap_px=23.0)
        out[name] = {"frames": done, "frames_per_s": done / spent, "recall": r["recall"], "precision": r["precision"],
                     "isolated_recall": r["isolated_recall"], "overlapping_recall": r["overlapping_recall"],
                     "n_true": r["n_true"], "n_found": r["n_found"]}
    out["frames_per_s"] = out["full"]["frames_per_s"]
    out["target_met"] = None if ck.tiny else max(out["full"]["frames_per_s"], out["fast"]["frames_per_s"]) >= FRAMES_TARGET_PER_S
    fu, fa = out["full"], out["fast"]
    out["summary"] = (f"{fu['frames_per_s']:.0f} frames/s (fast {fa['frames_per_s']:.0f}), recall {fu['recall']:.3f}, "
                      f"precision {fu['precision']:.3f} on {fu['frames']} frames")
    return out


# -- 6. optics ---------------------------------------------------------------------------------
OPTICS_TARGET_SPECTRA_PER_S = 1e7  # BENCHMARKS.md target


def step_optics(ck: Check, budget_s: float) -> dict:
    from coating.optics.benchmark import bench_torch

    cuda = ck.device.type == "cuda"
    batch = 64 if ck.tiny else (262144 if cuda else 1024)  # bench_optics' defaults per device
    repeats = 2 if ck.tiny else 10
    out = {"batch": batch, "layers": 7, "wavelengths": 81, "repeats": repeats,
           "target": f">= {OPTICS_TARGET_SPECTRA_PER_S:g} spectra/s"}
    for label, angle, pol in (("0deg_s", 0.0, "s"), ("8deg_unpolarised", 8.0, "u")):
        for dtype in (torch.float32, torch.float64):
            out[f"{label}_{str(dtype)[6:]}_spectra_per_s"] = bench_torch(batch, ck.device, dtype, angle, pol, repeats)
    best = max(v for k, v in out.items() if k.endswith("_spectra_per_s"))
    out["target_met"] = None if ck.tiny else best >= OPTICS_TARGET_SPECTRA_PER_S
    out["summary"] = (f"8 deg unpolarised: float32 {out['8deg_unpolarised_float32_spectra_per_s']:.3g}, "
                      f"float64 {out['8deg_unpolarised_float64_spectra_per_s']:.3g} spectra/s (batch {batch})")
    return out


# -- 7. refinement (hook) ----------------------------------------------------------------------
def step_refinement(ck: Check, budget_s: float) -> dict:
    """Seconds per image of the likelihood refinement (sevi/fit/count_fit.py) at 1024^2 with the course's counts,
    started from the truth's radii moved by 0.01 and the prior's mean betas: the fit's own cost."""
    import numpy as np

    from sevi.fit.count_fit import FitConfig, Refiner, choose_fit_grid
    from sevi.physics.generator import GeneratorConfig, SeviGenerator
    from sevi.physics.prior import Prior, PriorConfig

    grid, electrons, n = (64, 50_000, 1) if ck.tiny else (1024, 2_200_000, 4)
    pc = PriorConfig().with_electrons(electrons)
    params = Prior(pc)(n, seed=3).params
    images = SeviGenerator(GeneratorConfig(grid=grid), ck.device, pc).render(params, seed=3).images
    ref = Refiner(FitConfig(fit_grid=choose_fit_grid(grid)), pc, ck.device)
    mean_beta = Prior(pc).mean_beta().numpy()
    secs, iters, conv = [], [], []
    for i in range(n):
        sync(ck.device)
        t0 = time.perf_counter()
        f = ref(images[i], params.R[i].numpy() + np.array([0.01, -0.01]), params.sigma_R[i].numpy(),
                np.stack([mean_beta, mean_beta]))
        sync(ck.device)
        secs.append(time.perf_counter() - t0)
        iters.append(f.iterations)
        conv.append(f.converged)
    out = {"grid": grid, "fit_grid": ref.config.fit_grid, "electrons_per_shell": electrons, "images": n,
           "seconds_per_image": float(np.mean(secs)), "iterations": iters, "converged": conv,
           "target": "<= 0.2 s per image at 1024^2 on a GPU"}
    out["direct"] = direct_refinement(ck, params, pc, mean_beta, 1 if ck.tiny else 2)
    out["summary"] = (f"{out['seconds_per_image']:.2f} s/image at G {grid} (fit on {ref.config.fit_grid}), iterations {iters}; "
                      f"direct {out['direct']['seconds_per_image']:.2f} s/image at 256^2")
    return out


def direct_refinement(ck: Check, params, pc, mean_beta, n: int) -> dict:
    """Seconds per image of the direct-path refinement (sevi/fit/direct_fit.py): count images rendered at
    1024^2 (256^2 with --tiny), blurred by the camera's mean spot, read at 256^2."""
    import numpy as np

    from sevi.camera.direct_image import blur_images
    from sevi.fit.count_fit import FitConfig
    from sevi.fit.direct_fit import REFINE_GRID, DirectNoise, DirectRefiner
    from sevi.physics.generator import GeneratorConfig, SeviGenerator

    G = 256 if ck.tiny else 1024
    noise = DirectNoise(flux_scale=1.0, flux_rel_var=0.0, background_var=0.0)
    hits = SeviGenerator(GeneratorConfig(grid=G), ck.device, pc).render(params[:n], seed=4).images
    k = G // REFINE_GRID
    images = blur_images(hits.to(ck.device), noise.spot_sigma).reshape(n, REFINE_GRID, k, REFINE_GRID, k).sum((2, 4))
    ref = DirectRefiner(FitConfig(fit_grid=REFINE_GRID), pc, ck.device, noise)
    secs, conv = [], []
    for i in range(n):
        sync(ck.device)
        t0 = time.perf_counter()
        f = ref(images[i].cpu().numpy(), params.R[i].numpy() + np.array([0.01, -0.01]), params.sigma_R[i].numpy(),
                np.stack([mean_beta, mean_beta]))
        sync(ck.device)
        secs.append(time.perf_counter() - t0)
        conv.append(f.converged)
    return {"images": n, "seconds_per_image": float(np.mean(secs)), "converged": conv, "chi2_dof": f.chi2_dof}


def step_frame_renderer(ck: Check, budget_s: float) -> dict:
    """Frames/s of the camera renderer (sevi/camera/frame_renderer.py) at the course's density (~100
    spots per 1024^2 frame, the prior's measurements), uint8 frames on the device, in calls of 1024
    frames (64 with --tiny, at 256^2); and of the streaming sum of a measurement."""
    import numpy as np

    from sevi.camera.frame_renderer import FrameRenderer, accumulate_frames
    from sevi.camera.frames import FrameModel, draw_prior_hits
    from sevi.physics.prior import Prior, PriorConfig, ShellParams

    model = FrameModel(grid=256, sigma_mean=0.06, sigma_std=0.004) if ck.tiny else FrameModel()
    per_call = 64 if ck.tiny else 1024
    gen = torch.Generator(device=ck.device).manual_seed(1)
    x, z, frame = draw_prior_hits(per_call, 100.0, generator=gen)
    rend = FrameRenderer(model, ck.device)
    rend(x, z, frame, per_call, gen)  # warm-up
    sync(ck.device)
    t0, calls = time.perf_counter(), 0
    while time.perf_counter() - t0 < 0.4 * budget_s and calls < 50:
        rend(x, z, frame, per_call, gen)
        sync(ck.device)
        calls += 1
    fps = calls * per_call / (time.perf_counter() - t0)
    p = Prior(PriorConfig())(1, 5).params
    n = 2_000 if ck.tiny else 20_000
    params = ShellParams(p.R, p.sigma_R, p.beta, (p.n_electrons.double() * n / 50_000).long())
    t0 = time.perf_counter()
    fs = accumulate_frames(rend, params, n, generator=gen, progress=False)
    sync(ck.device)
    stream_fps = n / (time.perf_counter() - t0)
    return {"frames_per_s": fps, "stream_frames_per_s": stream_fps, "grid": model.grid,
            "spots_per_frame": float(len(x) / per_call), "stream_frames": n, "detected": int(len(fs.x)),
            "brightest_per_frame": float(np.max(fs.frame_sum) / n), "target": ">= 20,000 frames/s on a GPU",
            "summary": f"{fps:,.0f} frames/s rendered, {stream_fps:,.0f} frames/s summed ({model.grid}^2)"}


def step_frames_limit(ck: Check, budget_s: float) -> dict:
    """The course-scale measurement (tools/frames_to_limit.py): as many 50,000-frame measurements as the
    budget allows (50 wanted on a GPU), each answered by the direct path and compared with perfect
    centroiding. Needs a frames model (``--frames-model``); with --tiny an untrained tiny one and 60
    frames, to run the code."""
    import numpy as np

    from sevi.evaluation.frames_benchmark import draw_measurements, evaluate_measurement, render_measurement, summarise
    from sevi.fit.estimators import DEFAULT_BATCHES
    from sevi.regressor.inference import load_model_file

    if ck.tiny:
        from sevi.regressor.batches import target_stats
        from sevi.regressor.checkpoints import build_model, save_final_model
        from sevi.regressor.train_config import PRESETS
        cfg = PRESETS["tiny"].replace(spot_blur=0.015)
        m = build_model(cfg)
        m.set_target_stats(*target_stats(cfg))
        path = save_final_model(m.eval(), cfg, ck.out_dir / "tiny_frames_model")
        frames, wanted = (60, 60), 1
    else:
        if not FRAMES_MODEL:
            raise Skipped("no frames model given (--frames-model runs/sevi-cpu-frames/final)")
        path, frames, wanted = FRAMES_MODEL, (50_000, 50_000), 50
    model, cfg = load_model_file(path, ck.device)
    rows, t0 = [], time.perf_counter()
    for meas in draw_measurements(wanted, frames, seed=0):
        if rows and (time.perf_counter() - t0) * (len(rows) + 1) / len(rows) > budget_s:
            break  # the next one would overrun the budget
        # as sevi analyze answers by default: the error bars from the spread of batches of the frames
        rendered = render_measurement(meas, ck.device, batches=DEFAULT_BATCHES)
        rows.append(evaluate_measurement(meas, rendered, model, cfg, ck.device, truth_start=False, floor=False,
                                         batches=True))
    s = summarise(rows)
    return {"measurements": len(rows), "frames": frames[0], "rows": rows, "summary_table": s,
            "seconds_per_measurement": (time.perf_counter() - t0) / max(len(rows), 1),
            "summary": f"{len(rows)} measurements: direct median {s['all']['direct_median']:.4f}, perfect centroiding "
                       f"{s['all']['oracle_median']:.4f} (ratio {s['all']['ratio_of_medians']:.2f}, worst "
                       f"{s['all']['worst_ratio']:.2f}); {np.mean([r['direct_s'] for r in rows]):.1f} s per direct answer"}


FRAMES_MODEL = ""  # set by --frames-model

# (name, function(check, budget_s) -> figures, budget in seconds on a GPU). Budgets sum to 445 s
# under the default 450 s cap, which leaves room for Python and CUDA start-up within 8 minutes.
# OPTIONAL steps run only when named in --steps (each with its own time cap).
# -- 9. the regressors the sweep chose between ----------------------------------------------
def regressor_front_members(tiny: bool) -> dict:
    """The configurations to time: the CPU sweep's front member (ResNet34 depth, width 8, 32^2
    polar; BENCHMARKS.md, section 12) and the presets that train today's models; --tiny: two
    toy sizes of the same layouts."""
    from sevi.regressor.train_config import PRESETS

    smoke = PRESETS["cpu-smoke"]
    if tiny:
        return {"front w8 32^2 (toy)": smoke.replace(width=4, grid=32), "cpu-smoke (toy)": smoke.replace(width=4)}
    return {"sweep front: 3-4-6-3 w8 polar 32^2": smoke.replace(width=8, grid=32), "cpu-smoke": smoke,
            "cpu-course": PRESETS["cpu-course"], "cpu-frames": PRESETS["cpu-frames"], "a100": PRESETS["a100"]}


def time_regressor(cfg, device: torch.device, batch: int, bf16: bool, channels_last: bool, min_s: float) -> dict:
    """Images/s of one regressor's forward pass (inference, no grad) on ``batch`` images' features,
    and the peak memory of the timed passes (CUDA only)."""
    from sevi.regressor.checkpoints import build_model

    model = build_model(cfg).to(device).eval()
    G = cfg.data.grid
    images = torch.poisson(torch.full((batch, G, G), 2.0, device=device))
    x = cfg.data.features(images)
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
        x = x.contiguous(memory_format=torch.channels_last)
    amp = torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16)
    with torch.inference_mode(), amp:
        model(x)  # warm-up
        sync(device)
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(device)
        n, t0 = 0, time.perf_counter()
        while True:
            model(x)
            n += batch
            sync(device)
            if time.perf_counter() - t0 >= min_s:
                break
    rate = n / (time.perf_counter() - t0)
    peak = torch.cuda.max_memory_allocated(device) / 2**30 if device.type == "cuda" else None
    return {"images_per_s": rate, "latency_ms_per_batch": 1000.0 * batch / rate, "peak_memory_gib": peak}


def step_regressor_front(ck: Check, budget_s: float) -> dict:
    """Each configuration of :func:`regressor_front_members` timed with bf16 autocast and channels-last
    on and off (batch 256 on a GPU, 8 with --tiny)."""
    members = regressor_front_members(ck.tiny)
    batch = 8 if ck.tiny else 256
    combos = [(bf, cl) for bf in (False, True) for cl in (False, True)]
    min_s = 0.05 if ck.tiny else max(0.2, 0.6 * budget_s / (len(members) * len(combos)))
    out = {"batch": batch, "note": "forward pass on the features of Poisson images; bf16 autocast runs on a CPU "
                                   "too, where it is rarely faster", "members": {}}
    for name, cfg in members.items():
        row = {"blocks": "-".join(map(str, cfg.blocks)), "width": cfg.width, "grid": cfg.data.grid,
               "input": f"{cfg.data.representation} {tuple(cfg.data.features.shape)}"}
        for bf, cl in combos:
            row[f"bf16={'on' if bf else 'off'} channels_last={'on' if cl else 'off'}"] = time_regressor(
                cfg, ck.device, batch, bf, cl, min_s)
        out["members"][name] = row
    best = {n: max(v["images_per_s"] for k, v in r.items() if k.startswith("bf16")) for n, r in out["members"].items()}
    out["summary"] = "; ".join(f"{n}: {v:,.0f} images/s (best setting)" for n, v in best.items())
    return out


STEPS: list[tuple[str, Callable[[Check, float], dict], float]] = [
    ("environment", step_environment, 15),
    ("generator", step_generator, 60),
    ("expected_renderer", step_expected_renderer, 30),
    ("training", step_training, 170),
    ("centroiding", step_centroiding, 60),
    ("optics", step_optics, 30),
    ("refinement", step_refinement, 50),
    ("frame_renderer", step_frame_renderer, 30),
    ("regressor_front", step_regressor_front, 25),
    ("frames_limit", step_frames_limit, 420),
]
OPTIONAL = {"frames_limit"}  # 50 course-scale measurements: run alone, --steps frames_limit --max-total-s 450


# -- the runner --------------------------------------------------------------------------------
def finite_only(obj, path: str = "", bad: list | None = None):
    """A copy of ``obj`` with every non-finite float replaced by None; their key paths go in ``bad``."""
    if isinstance(obj, dict):
        return {k: finite_only(v, f"{path}.{k}" if path else str(k), bad) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [finite_only(v, f"{path}[{i}]", bad) for i, v in enumerate(obj)]
    if isinstance(obj, float) and not math.isfinite(obj):
        bad.append(path)
        return None
    return obj


def _one_line(e: BaseException) -> str:
    msg = str(e).strip().splitlines()
    return f"{type(e).__name__}: {msg[0] if msg else ''}"[:300]


GRACE_S = 10.0  # a step is stopped at budget + max(GRACE_S, budget / 4): its own sizing aims at the budget


def _on_alarm(signum, frame):
    raise StepTimeout()


def run_step(fn, ck: Check, budget_s: float) -> dict:
    """One step under a hard limit (SIGALRM at budget + a grace); never raises except on ^C."""
    hard_s = budget_s + max(GRACE_S, 0.25 * budget_s)
    old = signal.signal(signal.SIGALRM, _on_alarm)
    signal.setitimer(signal.ITIMER_REAL, hard_s)
    t0 = time.perf_counter()
    try:
        figures = fn(ck, budget_s)
        status = "ok"
    except Skipped as e:
        figures, status = {}, f"skipped: {e}"
    except StepTimeout:
        figures, status = {}, f"failed: over its time budget ({budget_s:.0f} s; stopped at {hard_s:.0f} s)"
    except Exception as e:  # noqa: BLE001 - one failing step must not lose the others
        figures = {"traceback": traceback.format_exc().splitlines()[-25:]}
        status = f"failed: {_one_line(e)}"
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, old)
    seconds = time.perf_counter() - t0
    gc.collect()
    if ck.device.type == "cuda":
        try:
            torch.cuda.empty_cache()
        except Exception:  # noqa: BLE001 - a broken context is already reported by the step
            pass
    bad: list[str] = []
    figures = finite_only(figures, bad=bad)
    if bad:
        figures["non_finite"] = bad
    return {"status": status, "budget_s": budget_s, "seconds": seconds, **figures}


def print_table(steps: dict) -> None:
    print(f"\n{'step':<18} {'status':<10} {'seconds':>8}  figures")
    for name, s in steps.items():
        st = s["status"]
        head = st.split(":")[0]
        detail = s.get("summary", "") if head == "ok" else st[len(head) + 1:].strip()
        print(f"{name:<18} {head:<10} {s.get('seconds', 0.0):>8.1f}  {detail}")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", required=True, help="output folder; gpu_check.json goes there")
    ap.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"))
    ap.add_argument("--tiny", action="store_true", help="very small sizes: the whole check in well under a minute on a CPU")
    ap.add_argument("--max-total-s", type=float, default=450.0,
                    help="time cap of the whole run: a step gets at most what is left (default 450 s)")
    ap.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch's default)")
    ap.add_argument("--steps", default="", help="comma-separated subset of steps to run (default all but "
                                                 f"{', '.join(sorted(OPTIONAL))})")
    ap.add_argument("--frames-model", default="", help="a frames model for the frames_limit step")
    a = ap.parse_args(argv)
    global FRAMES_MODEL
    FRAMES_MODEL = a.frames_model
    t_start = time.perf_counter()
    if a.threads:
        torch.set_num_threads(a.threads)
    names = [n for n, _, _ in STEPS]
    chosen = [s.strip() for s in a.steps.split(",") if s.strip()] or [n for n in names if n not in OPTIONAL]
    unknown = sorted(set(chosen) - set(names))
    if unknown:
        ap.error(f"--steps: unknown {unknown}; steps are {names}")
    try:
        device = pick_device(a.device)
    except ValueError as e:
        ap.error(str(e))
    ck = Check(device, a.tiny, Path(a.out))
    path = Path(a.out) / "gpu_check.json"
    result = {"tool": "tools/gpu_check.py", "argv": sys.argv[1:] if argv is None else list(argv),
              "started_utc": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
              "device": str(device), "tiny": a.tiny, "max_total_s": a.max_total_s,
              "steps": {n: {"status": "not run" if n in chosen else "skipped: not chosen (--steps)"} for n in names}}
    write_json(path, result)
    print(f"gpu_check: device {device}{' (tiny sizes)' if a.tiny else ''}, writing {path}", flush=True)
    for name, fn, budget in STEPS:
        if name not in chosen:
            continue
        left = a.max_total_s - (time.perf_counter() - t_start)
        if left < min(budget, 5.0):
            result["steps"][name] = {"status": f"skipped: total time cap of {a.max_total_s:.0f} s reached", "budget_s": budget}
        else:
            print(f"[{time.perf_counter() - t_start:6.1f} s] {name} (budget {min(budget, left):.0f} s) ...", flush=True)
            result["steps"][name] = run_step(fn, ck, min(budget, left))
        s = result["steps"][name]
        print(f"[{time.perf_counter() - t_start:6.1f} s] {name}: {s['status']}"
              + (f" - {s['summary']}" if "summary" in s else ""), flush=True)
        result["total_s"] = time.perf_counter() - t_start
        write_json(path, result)
    print_table(result["steps"])
    print(f"total {result['total_s']:.1f} s; figures in {path}")
    return 1 if any(s["status"].startswith("failed") for s in result["steps"].values()) else 0


if __name__ == "__main__":
    sys.exit(main())
