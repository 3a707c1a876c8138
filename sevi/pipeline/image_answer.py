"""From accumulated images to an answer: the regressor's start, refined by the likelihood fit.

One function, :func:`answer_images`, takes images to the answer and its diagnostics for every
caller (``sevi predict``, ``sevi analyze``, the evaluation tools):

1. the regressor (``sevi.regressor.inference.predict_images``) reads each image, after the checks
   that keep a bad image from ever giving a NaN answer;
2. by default its answer is refined by the likelihood of the image under the image's own forward
   model plus the model's training prior (``sevi.fit.fit_images.refine_answers``), and the error
   bars are the curvature (count images) or the sandwich (direct images) at the optimum.

What kind of image a model reads is decided once, here (:func:`image_kind`): a model trained on
histograms blurred like the camera spot (``TrainConfig.spot_blur > 0``) reads **direct** images
(summed camera frames, background-subtracted, in electron units; ``sevi.camera.direct_image``),
which may dip below zero and whose fit needs the number of frames summed; any other model reads
**count** images (electron counts per pixel, >= 0).

Fits that did not converge, and fits whose chi^2/dof exceeds :data:`MISFIT_CHI2` (a wrong optimum,
or physics the forward model lacks), are named as ``InputWarning`` s, never silent. So are direct
images whose two fitted shells lie closer than the camera's spot (``TrainConfig.spot_blur``, 0.015
detector units): the frame sum shows them as one ring, and there each shell's betas are off by up to
8 of their error bars (BENCHMARKS.md, "From frames to the limit", calibration), so their error bars
are not claimed (``diagnostics["unresolved"]``; ``sevi analyze`` writes the rows in the answer
file's ``shells_unresolved`` attribute).
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from typing import Iterable, Sequence

import numpy as np

from sevi.fit.estimators import DEFAULT_ESTIMATOR
from sevi.runtime.errors import InputError, InputWarning

__all__ = ["MISFIT_CHI2", "ImageAnswer", "image_kind", "answer_images", "fit_warnings", "unresolved_shells"]

# chi^2 per degree of freedom above which a refined image is named: a well-described image gives
# 1.00 +- 0.05 (BENCHMARKS.md, SEVI refinement); 1.5 flags a wrong optimum or physics the forward
# model lacks (e.g. saturated pixels where spots pile up on a direct image) without false alarms.
MISFIT_CHI2 = 1.5


@dataclass(frozen=True)
class ImageAnswer:
    """What :func:`answer_images` gives: numpy arrays per image, shells sorted by R.

    ``answer``: R, R_sd, sigma_R, sigma_R_sd (n, 2); beta, beta_sd (n, 2, L): the refined answer
    (the regressor's when not refined). ``regressor``: the regressor's own answer, same keys.
    ``diagnostics``: the fits' log_likelihood, log_posterior, chi2_dof, iterations, converged,
    start (n,), or None when not refined. ``kind``: "counts" or "direct"."""
    answer: dict
    regressor: dict
    diagnostics: dict | None
    kind: str

    @property
    def refined(self) -> bool:
        return self.diagnostics is not None


def image_kind(cfg) -> str:
    """"direct" for a model trained on camera-blurred histograms (``spot_blur > 0``), else "counts"."""
    return "direct" if cfg.data.spot_blur > 0 else "counts"


def unresolved_shells(R: np.ndarray, spot: float) -> np.ndarray:
    """(n,) True where an image's two shells lie closer than ``spot`` (detector units): |R1 - R2| <
    spot. ``R``: (n, 2) fitted radii. Such shells are one ring in a frame sum blurred by the spot."""
    R = np.asarray(R, dtype=float)
    return np.abs(R[:, 1] - R[:, 0]) < spot


def fit_warnings(diag: dict, source: str) -> list[str]:
    """The lines that name the images whose fit did not converge, misfits (chi^2/dof above
    :data:`MISFIT_CHI2`) or, on direct images, holds shells closer than the camera's spot
    (``diag["unresolved"]``, with ``diag["spot"]``); empty when every fit is sound."""
    def rows(idx):
        return ", ".join(map(str, idx[:10])) + (" ..." if len(idx) > 10 else "")

    out = []
    bad = np.flatnonzero(~np.asarray(diag["converged"], bool))
    if len(bad):
        out.append(f"{source}: the refinement did not converge for {len(bad)} image(s) (rows {rows(bad)}); "
                   f"see RefineDiagnostics")
    misfit = np.flatnonzero(np.asarray(diag["chi2_dof"]) > MISFIT_CHI2)
    if len(misfit):
        out.append(f"{source}: the fitted image does not match the forward model for {len(misfit)} image(s) "
                   f"(chi^2/dof above {MISFIT_CHI2}: rows {rows(misfit)}); their answers and error bars are "
                   f"not to be trusted. See RefineDiagnostics")
    close = np.flatnonzero(np.asarray(diag.get("unresolved", []), bool))
    if len(close):
        out.append(f"{source}: the two shells lie closer than the camera's spot ({diag['spot']} detector units) "
                   f"in {len(close)} image(s) (rows {rows(close)}): the frame sum shows them as one ring, so each "
                   f"shell's betas and their error bars are not to be trusted there")
    return out


def answer_images(model, cfg, batches: Iterable[tuple[int, np.ndarray]], device, *, source: str,
                  fit_images: Sequence[np.ndarray] | None = None, n_frames: int | None = None,
                  refine: bool = True, tolerance: float = 0.15, fit_centre: bool = False,
                  estimator: str = DEFAULT_ESTIMATOR, fit_batches=None) -> ImageAnswer:
    """Images -> answer (module docstring).

    ``batches``: (index of the first image, images (b, G, G)) for the regressor, in order.
    ``fit_images``: the (G', G') images the fit reads, in the same order; the refinement is skipped
    when ``refine`` is False. They may be the regressor's images or the same measurement at a finer
    grid (the direct path reads the frame sum at 256^2). ``n_frames``: frames summed into a direct
    image (the background's share of its noise; required to refine direct images). ``source``
    names the input in errors and warnings. ``fit_centre``: the image centre is fitted too (count
    images: ``sevi.fit.centred_fit``; frame sums: ``sevi.fit.centred_frame_sum_fit``; the diagnostics
    gain ``centre`` and ``centre_sd``, in the input's pixel indices, a frame sum's in its frames').
    ``estimator``: a frame sum's answer (``sevi.fit.frame_sum_fit``: ``"wls"`` or ``"gls"``).
    ``fit_batches``: per fit image, (batch sums (K, G', G') in electron units, frames (K,)) or None:
    its error bars from the spread of batches of its frames (``sevi.fit.batch_spread``). Raises InputError for a bad image, a model that cannot
    read it, or a fit that cannot start; warns (InputWarning) of unsound fits."""
    import torch

    from sevi.regressor.inference import predict_images

    kind = image_kind(cfg)
    try:
        with torch.inference_mode():
            first = predict_images(model, cfg, batches, device, tolerance,
                                   nonnegative=kind == "counts")  # direct images may dip below 0
    except ValueError as e:
        raise InputError(f"{source}: {e}") from None
    if not refine:
        return ImageAnswer(first, first, None, kind)
    if fit_images is None:
        raise ValueError("answer_images: refine needs fit_images")
    refined, diag = _refine(first, cfg, device, source, fit_images, kind, n_frames, fit_centre, estimator,
                            fit_batches)
    if kind == "direct":
        diag = {**diag, "unresolved": unresolved_shells(refined["R"], cfg.data.spot_blur),
                "spot": float(cfg.data.spot_blur)}
    for line in fit_warnings(diag, source):
        warnings.warn(line, InputWarning, stacklevel=2)
    return ImageAnswer(refined, first, diag, kind)


def _refine(first: dict, cfg, device, source: str, images, kind: str, n_frames: int | None,
            fit_centre: bool = False, estimator: str = DEFAULT_ESTIMATOR, batches=None):
    """The likelihood refinement over the model's training prior, each image by its kind's fit."""
    from sevi.fit.fit_images import refine_answers
    from sevi.regressor.batches import prior_config

    noise = None
    if kind == "direct":
        if n_frames is None:
            raise InputError(f"{source}: the direct-path refinement needs the number of frames summed (an "
                             f"n_frames attribute on the image, as sevi analyze and "
                             f"sevi.camera.direct_image.write_direct_image write it); add it, or use --no-refine")
        from sevi.fit.direct_fit import direct_noise
        try:
            noise = direct_noise(int(n_frames), int(np.shape(images[0])[-1]))
        except ValueError as e:
            raise InputError(f"{source}: direct-path refinement: {e}") from None
    try:
        return refine_answers(images, first, prior_config(cfg), device, noise=noise, fit_centre=fit_centre,
                              estimator=estimator, batches=batches)
    except ValueError as e:
        raise InputError(f"{source}: refinement: {e}") from None
