"""The likelihood refinement of many images: each image's regressor answer refined by the fit its
kind needs (count images: :class:`sevi.fit.count_fit.Refiner`; frame sums, given their noise and
camera: :class:`sevi.fit.frame_sum_fit.FrameSumRefiner`; direct images without a camera:
:class:`sevi.fit.direct_fit.DirectRefiner`; with the centre fitted, the centred variants), with one
fitter built per (fit grid, image grid)."""

from __future__ import annotations

import dataclasses

import numpy as np

from sevi.fit.count_fit import FitConfig, Refiner, choose_fit_grid
from sevi.fit.estimators import DEFAULT_ESTIMATOR
from sevi.physics.prior import PriorConfig


def refine_answers(images, first: dict, prior: PriorConfig, device="cpu", config: FitConfig | None = None,
                   progress: bool = True, noise=None, fit_centre: bool = False,
                   estimator: str = DEFAULT_ESTIMATOR, batches=None) -> tuple[dict, dict]:
    """Refine a batch of regressor answers.

    images: an iterable of (G, G) images in the order of ``first``'s rows: counts, or with ``noise``
    (a ``sevi.fit.direct_fit.DirectNoise`` whose ``background_var`` is per pixel of these images) direct
    images in electron units, fitted by ``sevi.fit.direct_fit.DirectRefiner``; first: the regressor's
    answer (``sevi.regressor.inference.predict_images``: R, R_sd, sigma_R, sigma_R_sd (n, 2), beta, beta_sd
    (n, 2, L)). Returns (refined answer with the same keys, diagnostics: log_likelihood,
    log_posterior, chi2_dof (n,) float64, iterations (n,) int32, converged (n,) bool, start (n,) str).
    Count images are fitted at 512^2 (``choose_fit_grid``), direct ones at 256^2, where the grid divides.
    ``fit_centre``: the centre is fitted too, on count images (``sevi.fit.centred_fit``) and on frame
    sums (``noise`` with its camera: ``sevi.fit.centred_frame_sum_fit``), and the diagnostics gain
    ``centre`` and ``centre_sd`` (n, 2), in the input images' pixel indices (a frame sum's: its
    camera's frame pixels). ``estimator``: a frame sum's answer, ``"wls"`` or ``"gls"``
    (``sevi.fit.frame_sum_fit``); other images have one. ``batches``: per frame sum, (the sums of K
    batches of its frames (K, G, G) in electron units, their frame counts (K,)), whose spread gives
    its error bars (``sevi.fit.batch_spread``), or None (the model's); frame sums only.
    """
    from tqdm import tqdm

    keys = ("R", "R_sd", "sigma_R", "sigma_R_sd", "beta", "beta_sd")
    out = {k: np.array(first[k], dtype=np.float64, copy=True) for k in keys}
    if fit_centre and noise is not None and noise.n_frames is None:
        raise ValueError("the centre is fitted on count images and frame sums; a direct image without its camera "
                         "takes the course's centre")
    diag = {k: [] for k in ("log_likelihood", "log_posterior", "chi2_dof", "iterations", "converged", "start")}
    if fit_centre:
        diag.update(centre=[], centre_sd=[])
    refiners: dict[tuple[int, int], Refiner] = {}
    n = len(first["R"])
    for i, img in enumerate(tqdm(images, total=n, desc="refine", unit="image", disable=None if progress else True)):
        G = np.shape(img)[-1]
        if config is not None:
            fg = config.fit_grid
        elif noise is None:
            fg = choose_fit_grid(G)
        else:
            from sevi.fit.direct_fit import REFINE_GRID
            fg = choose_fit_grid(G, REFINE_GRID)
        if (fg, G) not in refiners:
            cfg = dataclasses.replace(config or FitConfig(), fit_grid=fg)
            if noise is None and fit_centre:
                from sevi.fit.centred_fit import CentredRefiner
                refiners[fg, G] = CentredRefiner(cfg, prior, device)
            elif noise is None:
                refiners[fg, G] = Refiner(cfg, prior, device)
            elif noise.n_frames is not None:  # a frame sum: the camera's exact response
                from sevi.fit.frame_sum_fit import FrameSumRefiner
                per_fitted_pixel = dataclasses.replace(noise, background_var=noise.background_var * (G // fg) ** 2)
                if fit_centre:
                    from sevi.fit.centred_frame_sum_fit import (
                        CENTRED_OVERSAMPLE,
                        CentredFrameSumRefiner,
                    )
                    refiners[fg, G] = CentredFrameSumRefiner(cfg, prior, device, per_fitted_pixel, CENTRED_OVERSAMPLE,
                                                              estimator=estimator)
                else:
                    refiners[fg, G] = FrameSumRefiner(cfg, prior, device, per_fitted_pixel, estimator=estimator)
            else:
                from sevi.fit.direct_fit import DirectRefiner
                per_fitted_pixel = dataclasses.replace(noise, background_var=noise.background_var * (G // fg) ** 2)
                refiners[fg, G] = DirectRefiner(cfg, prior, device, per_fitted_pixel)
        if batches is not None:
            if not hasattr(refiners[fg, G], "set_batches"):
                raise ValueError("error bars from batches of frames need frame sums (noise with n_frames)")
            refiners[fg, G].set_batches(*(batches[i] if batches[i] is not None else (None, None)))
        f = refiners[fg, G](img, first["R"][i], first["sigma_R"][i], first["beta"][i], first["R_sd"][i])
        for k, v in (("R", f.R), ("R_sd", f.R_sd), ("sigma_R", f.sigma_R), ("sigma_R_sd", f.sigma_R_sd),
                     ("beta", f.beta), ("beta_sd", f.beta_sd)):
            out[k][i] = v
        if fit_centre:
            from sevi.fit.centred_fit import to_input_pixels
            # a frame sum's centre in its camera's frame pixels, a count image's in its own
            c, c_sd = to_input_pixels(f.centre, f.centre_sd, G if noise is None else noise.camera.grid, fg)
            diag["centre"].append(c)
            diag["centre_sd"].append(c_sd)
        for k in ("log_likelihood", "log_posterior", "chi2_dof", "iterations", "converged", "start"):
            diag[k].append(getattr(f, k))
    diag = {k: np.array(v) for k, v in diag.items()}
    for k in keys:
        if not np.isfinite(out[k]).all():
            i = int(np.argmax(~np.isfinite(out[k].reshape(n, -1)).all(1)))
            raise ValueError(f"the refinement's {k} for image {i} is not finite")
    return out, diag
