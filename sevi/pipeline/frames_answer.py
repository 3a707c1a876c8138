"""From camera frames to an answer, by one of two paths (``sevi analyze``).

**direct** (a model that reads direct images, ``sevi.pipeline.image_answer.image_kind``): the frames
are summed, streamed ``chunk`` frames at a time (``chunk`` MB of memory, no events file); the camera
background's expected mean after rounding and clipping (21.67 counts per pixel for N(20, 20^2)) is
subtracted once per frame; the sum is block-summed to the model's grid and divided by the mean spot
flux, so the image is in electron units (``sevi.camera.direct_image``). The refinement reads the
same frame sum at 256^2 (``sevi.fit.direct_fit.REFINE_GRID``: pixels of half a spot sigma) and fits
it with the direct image's own forward model and noise.

**events** (a model that reads count images): the frames are centroided into an events file
(``sevi.camera.centroid_file``: streamed, chunked, resumable; the chunks run by the caller's
runner), and its ``AccumulatedImage`` (counts of centroided electrons on the frames' grid) is read
like ``sevi predict`` reads a count image.

The default (``path="auto"``) is the direct path (:func:`choose_path`); forcing a path other than the
model's is allowed and warned about (InputWarning): the model then reads images unlike its training set.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from pathlib import Path

from sevi.camera.centroid_file import DEFAULT_CHUNK, ChunkRunner, run_in_process
from sevi.fit.estimators import DEFAULT_BATCHES, DEFAULT_ESTIMATOR
from sevi.pipeline.image_answer import ImageAnswer, answer_images, image_kind
from sevi.runtime.errors import InputError, InputWarning

__all__ = ["PATHS", "FramesAnswer", "answer_frames", "choose_path"]

PATHS = ("auto", "events", "direct")


@dataclass(frozen=True)
class FramesAnswer:
    """The answer of a measurement and how it was reached: ``path`` ("events" or "direct"),
    ``attrs`` for the answer file (path, events file or n_frames), ``electrons`` (the image's
    total, both shells)."""
    result: ImageAnswer
    path: str
    attrs: dict
    electrons: float


def choose_path(requested: str, cfg) -> str:
    """'events' or 'direct' for ``requested`` in :data:`PATHS`.

    "auto" is the direct path: on the course's camera it was the more accurate in every measurement
    compared (README, "From camera frames"; BENCHMARKS.md), because the centroider loses spots where
    rings are crowded and the events image cannot say which. A model trained on count images
    (``spot_blur = 0``) is refused for "auto" with the way out named; ``--path events`` runs the
    events path as a diagnostic."""
    trained_for = "direct" if image_kind(cfg) == "direct" else "events"
    if requested == "auto":
        if trained_for != "direct":
            raise InputError("--path auto (the direct path) needs a model trained for frame sums (spot_blur > 0, "
                             "e.g. python -m ray_jobs.sevi_train --preset cpu-frames); this one reads count "
                             "images: give --path events to run the events path, a diagnostic")
        return "direct"
    if requested not in PATHS:
        raise InputError(f"--path: got {requested!r}; expected auto, events or direct")
    if requested != trained_for:
        warnings.warn(f"--path {requested} with a model trained for the {trained_for} path (spot_blur = "
                      f"{cfg.data.spot_blur}); its answers are not calibrated for these images", InputWarning)
    return requested


def answer_frames(frames, model, cfg, device, *, path: str = "auto", events=None, chunk: int = DEFAULT_CHUNK,
                  fast: bool = False, runner: ChunkRunner = run_in_process, centroid_device: str | None = None,
                  refine: bool = True, tolerance: float = 0.15, fit_centre: bool = False,
                  estimator: str = DEFAULT_ESTIMATOR, batches: int = DEFAULT_BATCHES) -> FramesAnswer:
    """A frame file -> its answer (module docstring). ``events``: the events file of the events path
    (kept, so a re-run resumes); ``chunk``: frames per centroiding task or per read;
    ``centroid_device``: the centroider's device (None: its default); ``fit_centre``: the image
    centre fitted too (``sevi.pipeline.image_answer.answer_images``); ``estimator``: the direct path's
    answer (``sevi.fit.frame_sum_fit``: ``"wls"`` or ``"gls"``; the events path has one); ``batches``:
    the direct path's error bars from the spread of that many contiguous batches of the frames
    (``sevi.fit.batch_spread``), 0 for the model's (too few frames for the fit's parameters: the
    model's, with a warning)."""
    import h5py
    import numpy as np

    from sevi.camera.centroid_file import centroid_file
    from sevi.camera.direct_image import batch_images, direct_image, sum_frames_in_batches
    from sevi.fit.batch_spread import batches_needed
    from sevi.fit.direct_fit import REFINE_GRID
    from sevi.regressor.batches import prior_config

    if chunk < 1:
        raise InputError(f"--chunk: got {chunk}; expected >= 1 frames per task (events) or per read (direct)")
    how = choose_path(path, cfg)
    if batches < 0:
        raise InputError(f"--batches: got {batches}; expected >= 0 batches of frames (0: the model's error bars)")
    if how == "direct":
        summed = sum_frames_in_batches(frames, batches if refine else 0, REFINE_GRID, chunk)
        total, n = summed.total.astype(np.float64), summed.n_frames
        image = direct_image(total, n, cfg.data.grid)
        fit_batches, error_bars = None, "model"
        if summed.batch_sums is not None:
            needed = batches_needed(2 * (3 + prior_config(cfg).n_terms) + (2 if fit_centre else 0))
            if len(summed.batch_frames) >= needed:
                fit_batches = [(batch_images(summed.batch_sums, summed.batch_frames, REFINE_GRID), summed.batch_frames)]
                error_bars = f"spread of {len(summed.batch_frames)} batches of frames"
            else:
                warnings.warn(f"{frames}: {n} frames make {len(summed.batch_frames)} batches, fewer than the "
                              f"{needed} the error bars from their spread need; the error bars are the model's",
                              InputWarning, stacklevel=2)
        res = answer_images(model, cfg, [(0, image[None])], device, source=f"{frames} (direct path, {n} frames summed)",
                            fit_images=[direct_image(total, n, REFINE_GRID)] if refine else None, n_frames=n,
                            refine=refine, tolerance=tolerance, fit_centre=fit_centre, estimator=estimator,
                            fit_batches=fit_batches)
        return FramesAnswer(res, "direct", {"path": "direct", "n_frames": n, "spot_blur": cfg.data.spot_blur,
                                             **({"estimator": estimator, "error_bars": error_bars} if refine else {})},
                            float(image.sum()))
    centroid_file(frames, events, chunk=chunk, fast=fast, device=centroid_device, runner=runner)
    with h5py.File(events, "r") as f:
        if "AccumulatedImage" not in f:
            raise InputError(f"{events}: no AccumulatedImage (an events file from an older version?)")
        image = f["AccumulatedImage"][()]
    res = answer_images(model, cfg, [(0, image[None])], device, source=str(events), fit_images=[image],
                        refine=refine, tolerance=tolerance, fit_centre=fit_centre)
    return FramesAnswer(res, "events", {"path": "events", "events": str(Path(events))}, float(image.sum()))
