"""From accumulated images to an answer: the regressor's start, refined by the likelihood fit."""

from __future__ import annotations

import numpy as np


def refine_or_explain(p: dict, cfg, device, source: str, images, n_frames: int | None = None) -> tuple[dict, dict]:
    """Refine predictions (sevi/fit/count_fit.py) over the training prior of the model; name the images whose fit
    did not converge on stderr. A direct-path model (spot_blur > 0) reads direct images (summed
    frames in electron units): they are fitted with their own forward model and noise
    (sevi/fit/direct_fit.py), which needs ``n_frames``, the number of frames summed (the background's
    share of the noise); without it the refinement is refused with a clear message."""
    import sys

    from sevi.fit.fit_images import refine_answers
    from sevi.regressor.batches import prior_config

    noise = None
    if cfg.spot_blur > 0:
        if n_frames is None:
            raise SystemExit(f"{source}: the direct-path refinement needs the number of frames summed (an "
                             f"n_frames attribute on the image, as sevi analyze and sevi.camera.direct_image.write_direct_image "
                             f"write it); add it, or use --no-refine")
        from sevi.fit.direct_fit import direct_noise
        try:
            noise = direct_noise(int(n_frames), int(np.shape(images[0])[-1]))
        except ValueError as e:
            raise SystemExit(f"{source}: direct-path refinement: {e}") from None
    try:
        refined, diag = refine_answers(images, p, prior_config(cfg), device, noise=noise)
    except ValueError as e:
        raise SystemExit(f"{source}: refinement: {e}") from None
    bad = np.flatnonzero(~diag["converged"])
    if len(bad):
        print(f"sevi: warning: {source}: the refinement did not converge for {len(bad)} image(s) (rows "
              f"{', '.join(map(str, bad[:10]))}{' ...' if len(bad) > 10 else ''}); see RefineDiagnostics", file=sys.stderr)
    misfit = np.flatnonzero(diag["chi2_dof"] > MISFIT_CHI2)
    if len(misfit):
        print(f"sevi: warning: {source}: the fitted image does not match the forward model for {len(misfit)} "
              f"image(s) (chi^2/dof above {MISFIT_CHI2}: rows {', '.join(map(str, misfit[:10]))}"
              f"{' ...' if len(misfit) > 10 else ''}); their answers and error bars are not to be trusted. "
              f"See RefineDiagnostics", file=sys.stderr)
    return refined, diag


# chi^2 per degree of freedom above which a refined image is named on stderr: a well-described image
# gives 1.00 +- 0.05 (BENCHMARKS.md, SEVI refinement); 1.5 flags a wrong optimum or physics the
# forward model lacks (e.g. saturated pixels where spots pile up on a direct image) without false alarms.
MISFIT_CHI2 = 1.5
