"""The Python front door for a lab's VMI image: one call from an array to a fitted answer.

    from sevi.pipeline.fit_image import fit_image
    fit = fit_image(image, mask=mask, gain=gain, shells="auto")
    fit.beta, fit.beta_sd, fit.centre, fit.chi2_dof, fit.model

In the spirit of ``abel.Transform``: an image in, a result object out. ``sevi fit`` is a thin layer over
it (file formats in, answer files out). What it does, in order:

1. checks what it was given, each failure one line naming ``source`` (the file) and what is expected
   (``InputError``): a 2-D image of finite counts >= 0 with counts in the trusted pixels; a mask and a
   gain of the image's shape, the gain finite and > 0 wherever the mask keeps a pixel;
2. bins the image into ``bin`` x ``bin`` blocks (default: the fewest that bring its longer side to at
   most ``MAX_FIT_SIDE`` pixels; the edge cut to whole blocks): counts summed, a block masked when any
   of its pixels is, its gain the mean of its pixels' (exact where the gain is flat over a block);
3. starts the centre from ``sevi.fit.centre_estimate`` (or takes the given one and holds it);
4. starts the shells from the radial distribution's peaks and a Legendre projection
   (``sevi.fit.shell_starts``), and fits (``sevi.fit.image_fit``): ``shells="auto"`` fits 1, 2, ...
   shells, each start the previous fit plus the strongest ring left in its residuals (or the next
   peak), and keeps the number before the evidence first falls; an integer fits that many, and
   refuses (one line) when the image cannot separate them (a shell whose electron count is not
   3 sd above zero, or a singular curvature);
5. returns :class:`ImageFit`: parameters and their covariance, the centre in the input's pixel
   indices, chi^2/dof and the model image on the input's grid (gain applied).

Axes: the array's axis 0 is x and axis 1 is z, the polarisation axis (docs/conventions.md); a camera
image shown with the polarisation axis vertical (rows = z, PyAbel's layout) is ``image.T``
(``sevi.io.lab_image`` does this for image files). Scale: ``pixel_size`` detector units per input
pixel (default the course camera's, 2/1024; docs/conventions.md, "Any image").
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from sevi.runtime.errors import InputError

__all__ = ["MAX_FIT_SIDE", "MAX_SHELLS", "COURSE_PIXEL_SIZE", "ImageFit", "fit_image", "check_inputs",
           "default_bin"]

MAX_FIT_SIDE = 512  # the default binning brings the fitted image's longer side to at most this
MAX_SHELLS = 4
COURSE_PIXEL_SIZE = 2.0 / 1024  # detector units per pixel of the course's camera


@dataclass
class ImageFit:
    """What :func:`fit_image` returns. Shells sorted by R, smaller first; R and sigma_R in detector
    units, the centre (x0, z0) in the input's pixel indices (axis 0, axis 1)."""

    names: list[str]  # theta's order (sevi.fit.image_fit.parameter_names), centre in the fit grid's pixels
    theta: np.ndarray
    cov: np.ndarray = field(repr=False)
    n_shells: int
    n_terms: int
    R: np.ndarray
    R_sd: np.ndarray
    sigma_R: np.ndarray
    sigma_R_sd: np.ndarray
    n_electrons: np.ndarray  # detected electrons per shell in the image (gain 1), masked pixels included
    n_electrons_sd: np.ndarray
    beta: np.ndarray  # (k, L)
    beta_sd: np.ndarray
    centre: np.ndarray  # (x0, z0), input pixel indices
    centre_sd: np.ndarray
    centre_fitted: bool
    background: float  # counts per input pixel (before the gain)
    chi2_dof: float
    log_likelihood: float
    log_evidence: float
    evidence: dict  # number of shells -> log evidence of each fit tried
    converged: bool
    iterations: int
    bin: int
    pixel_size: float
    image: np.ndarray = field(repr=False)  # the input (float64)
    keep: np.ndarray = field(repr=False)  # True where a pixel is in the likelihood
    model: np.ndarray = field(repr=False)  # expected counts per input pixel (gain applied)
    seconds: float = 0.0  # wall time of the call
    cpu_seconds: float = 0.0  # this process's CPU time during the call (the work, on a shared machine)

    @property
    def residuals(self) -> np.ndarray:
        """(image - model) / sqrt(model) per input pixel; 0 where masked or where the model is 0."""
        with np.errstate(invalid="ignore", divide="ignore"):
            r = (self.image - self.model) / np.sqrt(self.model)
        return np.where(self.keep & (self.model > 0), r, 0.0)


def _size(shape) -> str:
    """A 2-D shape in the fit's axes, as pixels along x and z (a camera file's columns and rows)."""
    return f"{shape[0]} x {shape[1]} pixels (x, z)" if len(shape) == 2 else f"shape {tuple(shape)}"


def _where(mask_bad: np.ndarray) -> str:
    i, k = np.argwhere(mask_bad)[0]
    return f"pixel ({i}, {k})"


def check_inputs(image, mask=None, gain=None, source: str = "image", mask_source: str = "mask",
                 gain_source: str = "gain"):
    """(image float64, keep bool, gain float64), or InputError naming the first problem."""
    img = np.asarray(image)
    if img.dtype.kind not in "iuf":
        raise InputError(f"{source}: holds {img.dtype}; expected counts (integers or reals)")
    if img.ndim != 2:
        raise InputError(f"{source}: has shape {img.shape}; expected one 2-D image of counts (one grey channel)")
    if min(img.shape) < 8:
        raise InputError(f"{source}: has shape {img.shape}; expected an image of at least 8 x 8 pixels")
    img = img.astype(np.float64)
    keep = np.ones(img.shape, bool)
    if mask is not None:
        m = np.asarray(mask)
        if m.shape != img.shape:
            raise InputError(f"{mask_source}: has {_size(m.shape)}, the image {_size(img.shape)}; expected a mask of "
                             f"the image's shape (nonzero = pixel left out)")
        if m.dtype.kind == "f" and not np.isfinite(m).all():
            raise InputError(f"{mask_source}: {_where(~np.isfinite(m))} is not finite; expected 0 (keep) or "
                             f"nonzero (leave out)")
        keep = ~(m.astype(bool))
    if not np.isfinite(img[keep]).all():
        raise InputError(f"{source}: {_where(keep & ~np.isfinite(img))} is not finite; expected counts >= 0 "
                         f"(or mask the pixel)")
    if (img[keep] < 0).any():
        raise InputError(f"{source}: {_where(keep & (img < 0))} holds {img[keep & (img < 0)][0]:g}; expected "
                         f"counts >= 0 (or mask the pixel)")
    img = np.where(keep, img, 0.0)
    g = np.ones(img.shape)
    if gain is not None:
        g = np.asarray(gain)
        if g.shape != img.shape:
            raise InputError(f"{gain_source}: has {_size(g.shape)}, the image {_size(img.shape)}; expected a gain "
                             f"map of the image's shape")
        if g.dtype.kind not in "iuf":
            raise InputError(f"{gain_source}: holds {g.dtype}; expected real gains")
        g = g.astype(np.float64)
        bad = keep & ~(np.isfinite(g) & (g > 0))
        if bad.any():
            v = g[bad][0]
            raise InputError(f"{gain_source}: {_where(bad)} has gain {v:g} and is not masked; expected a finite gain "
                             f"> 0 at every pixel the mask keeps (mask the pixel to leave it out)")
        g = np.where(keep, g, 1.0)
    if not keep.any():
        raise InputError(f"{mask_source}: masks every pixel; expected some pixels kept")
    if not img[keep].sum() > 0:
        raise InputError(f"{source}: has no counts in the pixels it keeps; expected an image of electron counts")
    return img, keep, g


def default_bin(shape) -> int:
    return max(1, math.ceil(max(shape) / MAX_FIT_SIDE))


def _binned(img, keep, gain, k: int):
    nx, nz = img.shape[0] // k, img.shape[1] // k
    if k == 1:
        return img, keep, gain

    def blocks(a):
        return a[:nx * k, :nz * k].reshape(nx, k, nz, k)

    return blocks(img).sum((1, 3)), blocks(keep).all((1, 3)), blocks(gain).mean((1, 3))


def fit_image(image, mask=None, gain=None, shells: int | str = "auto", centre="auto", n_terms: int = 12,
              pixel_size: float = COURSE_PIXEL_SIZE, bin: int | None = None, source: str = "image",
              mask_source: str = "mask", gain_source: str = "gain", device="cpu", config=None) -> ImageFit:
    """Fit an image (module docstring). ``shells``: 1..4 or "auto"; ``centre``: "auto" or (x0, z0) in
    the input's pixel indices (then held); ``n_terms``: L, betas up to beta_2L; ``bin``: block size
    (default :func:`default_bin`); ``config``: a ``sevi.fit.image_fit.ImageFitConfig`` (its n_terms is
    replaced by ``n_terms``)."""
    import dataclasses
    import time

    from sevi.fit.centre_estimate import estimate_centre
    from sevi.fit.image_fit import ImageFitBounds, ImageFitConfig, ImageRefiner
    from sevi.physics.grid_image import GridImage, PixelGrid

    t0, c0_cpu = time.perf_counter(), time.process_time()
    img, keep, g = check_inputs(image, mask, gain, source, mask_source, gain_source)
    if shells != "auto" and not (isinstance(shells, (int, np.integer)) and 1 <= shells <= MAX_SHELLS):
        raise InputError(f"shells: {shells!r}; expected 1..{MAX_SHELLS} or 'auto'")
    if not 0 <= n_terms <= 24:
        raise InputError(f"n_terms: {n_terms}; expected 0..24 (betas up to beta_48)")
    if not (pixel_size > 0 and math.isfinite(pixel_size)):
        raise InputError(f"pixel_size: {pixel_size}; expected detector units per pixel > 0")
    k = default_bin(img.shape) if bin is None else int(bin)
    if not 1 <= k <= min(img.shape) // 8:
        raise InputError(f"bin: {bin}; expected 1..{min(img.shape) // 8} (blocks of at most 1/8 of the image)")
    bi, bk, bg_ = _binned(img, keep, g, k)
    if not bk.any() or not bi[bk].sum() > 0:
        raise InputError(f"{source}: no counts left in the unmasked {k} x {k} blocks; expected a smaller --bin")
    grid = PixelGrid(bi.shape, pixel_size * k)
    cfg = dataclasses.replace(config or ImageFitConfig(), n_terms=n_terms)
    fixed = centre != "auto"
    if fixed:
        try:
            cx, cz = (float(v) for v in centre)
        except (TypeError, ValueError):
            raise InputError(f"centre: {centre!r}; expected 'auto' or two numbers x0, z0 (pixel indices)") from None
        if not (-0.5 <= cx <= img.shape[0] - 0.5 and -0.5 <= cz <= img.shape[1] - 0.5):
            raise InputError(f"centre: ({cx:g}, {cz:g}) lies outside the image {img.shape}; expected pixel indices "
                             f"inside it (axis 0 = x, axis 1 = z)")
        c0 = ((cx - (k - 1) / 2) / k, (cz - (k - 1) / 2) / k)
    else:
        c0 = estimate_centre(bi, bk, bg_)
    refiner = ImageRefiner(grid, cfg, device)
    bounds = ImageFitBounds.make(grid, c0, float(bi[bk].sum()), float(bi[bk].max()),
                                 0.0 if fixed else cfg.centre_window / k + 2, n_terms)
    fits = _choose_shells(refiner, bi, bk, bg_, c0, bounds, shells, fixed, source)
    best_k = _auto_choice(fits) if shells == "auto" else max(fits)
    f = fits[best_k]
    # the model on the input's grid (gain applied), and the centre in the input's pixel indices
    if k == 1:
        model = f.model * g
    else:
        full = GridImage(PixelGrid(img.shape, pixel_size), n_terms, cfg.forward, device)
        c_in = (k * f.centre[0] + (k - 1) / 2, k * f.centre[1] + (k - 1) / 2)
        m = np.full(img.shape, f.background / k ** 2)
        for j in range(f.n_shells):
            m = m + full.shell(f.R[j], f.sigma_R[j], f.n_electrons[j], f.beta[j], c_in)[0].cpu().numpy()
        model = m * g
    centre_in = k * f.centre + (k - 1) / 2
    return ImageFit(f.names, f.theta, f.cov, f.n_shells, n_terms, f.R, f.R_sd, f.sigma_R, f.sigma_R_sd,
                    f.n_electrons, f.n_electrons_sd, f.beta, f.beta_sd, centre_in, k * f.centre_sd, not fixed,
                    f.background / k ** 2, f.chi2_dof, f.log_likelihood, f.log_evidence,
                    {q: fits[q].log_evidence for q in sorted(fits)}, f.converged, f.iterations, k, pixel_size,
                    img, keep, model, time.perf_counter() - t0,
                    time.process_time() - c0_cpu)


def _auto_choice(fits: dict) -> int:
    """The number of shells before the evidence first falls (or is undefined)."""
    best = min(fits)
    for q in sorted(fits)[1:]:
        if fits[q].log_evidence > fits[best].log_evidence and math.isfinite(fits[q].log_evidence):
            best = q
        else:
            break
    return best


def _separable(f) -> str | None:
    """Why a fit's shells are not separated (None when they are)."""
    if not math.isfinite(f.log_evidence) or not np.isfinite(f.cov).all():
        return "its curvature is singular (two shells the image cannot tell apart)"
    weak = [j for j in range(f.n_shells) if not f.n_electrons[j] > 3 * f.n_electrons_sd[j]]
    if weak:
        j = weak[0]
        return (f"shell {j} (R {f.R[j]:.4g}) holds {f.n_electrons[j]:.3g} +- {f.n_electrons_sd[j]:.2g} electrons, "
                f"not 3 sd above zero")
    return None


def _choose_shells(refiner, img, keep, gain, c0, bounds, shells, fixed: bool, source: str) -> dict:
    """Fits keyed by their number of shells (module docstring, step 4)."""
    from sevi.fit.shell_starts import radial_peaks

    ps = refiner.grid.pixel_size
    peaks = radial_peaks(img, keep, gain, c0)
    if not peaks:
        raise InputError(f"{source}: no ring stands out of the radial distribution around the centre "
                         f"({c0[0]:.1f}, {c0[1]:.1f}) (binned pixels); expected an image with at least one shell")
    target = MAX_SHELLS if shells == "auto" else int(shells)
    fits: dict = {}
    prev = None
    q = min(len(peaks), target) if shells != "auto" else 1
    while q <= target:
        if prev is None:
            rings = [(p.r * ps, p.width * ps) for p in peaks[:q]]
        else:
            extra = _residual_ring(refiner, img, keep, gain, prev, peaks)
            if extra is None:
                if shells == "auto":
                    break
                raise InputError(f"{source}: --shells {shells}: the image shows {prev.n_shells} ring(s) and no further "
                                 f"one in the fit's residuals; expected --shells {prev.n_shells} or auto")
            rings = [(r, s) for r, s in zip(prev.R, prev.sigma_R)] + [extra]
        centre = c0 if prev is None else tuple(prev.centre)
        f = refiner(img, keep, gain, _start(refiner, img, keep, gain, centre, rings), bounds, fixed)
        fits[q] = f
        if shells == "auto" and q > 1 and not f.log_evidence > fits[q - 1].log_evidence:
            break
        prev = f
        q += 1
    if shells != "auto":
        f = fits[max(fits)]
        why = _separable(f)
        if why is not None:
            raise InputError(f"{source}: --shells {shells}: the fit cannot separate {shells} shells: {why}; expected "
                             f"fewer shells (or auto)")
    return fits


def _start(refiner, img, keep, gain, centre, rings) -> np.ndarray:
    """theta from a centre and (R, sigma_R) per shell: the Legendre projection's N, betas and background."""
    from sevi.fit.shell_starts import legendre_start

    rings = sorted((float(r), float(min(s, r / 10.5))) for r, s in rings)
    R = [r for r, _ in rings]
    S = [s for _, s in rings]
    N, beta, bg = legendre_start(refiner.model, img, keep, gain, centre, R, S)
    per = [np.r_[R[j], S[j], N[j], beta[j]] for j in range(len(R))]
    return np.concatenate([np.r_[centre[0], centre[1], max(bg, 1e-6)]] + per)


def _residual_ring(refiner, img, keep, gain, f, peaks):
    """(R, sigma_R) of the strongest ring of the fit's residual radial distribution that is not an
    existing shell (more than 3 widths from each), else the next peak of the image's own; None if none."""
    from sevi.fit.shell_starts import radial_peaks

    ps = refiner.grid.pixel_size

    def far(r_px, w_px):
        return all(abs(r_px - R / ps) > 3 * max(w_px, s / ps) for R, s in zip(f.R, f.sigma_R))

    for p in radial_peaks(img, keep, gain, f.centre, min_sigmas=6.0, model=f.model * gain) + peaks:
        if far(p.r, p.width):
            return p.r * ps, p.width * ps
    return None
