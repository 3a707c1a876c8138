"""Rendered lab images with known truth (an offset centre, a crop, masked pixels, a gain map, one to
four shells), shared by the tests and ``tools/compare_lab_images.py``.

An image is a Poisson draw around the exact expected image of ``sevi.physics.grid_image.GridImage`` on
any grid and centre (plus a flat background, times a gain map), with masked pixels set to 0: what a
lab's camera software writes after accumulating events. Truth betas come from the course's prior
(``sevi.physics.prior``), cut to ``n_terms``; radii are placed by hand so that the shells are
separated by several widths.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch

from sevi.physics.grid_image import GridImage, PixelGrid
from sevi.physics.legendre import ValidityCheck
from sevi.physics.prior import Prior, PriorConfig

__all__ = ["LabCase", "render_case", "truth_betas", "disc_mask", "dead_column", "smooth_gain", "cross_check_cases",
           "acceptance_mask", "truth_theta", "information_distance", "pyabel_answer", "cross_check", "acceptance", "figure"]


@dataclass(frozen=True)
class LabCase:
    """One rendered image's truth. R, sigma_R in detector units, centre in pixel indices."""

    shape: tuple[int, int]
    centre: tuple[float, float]
    R: tuple[float, ...]
    sigma_R: tuple[float, ...]
    n_electrons: tuple[float, ...]
    beta: np.ndarray = field(repr=False)  # (k, L)
    pixel_size: float = 2.0 / 256
    background: float = 0.0


def truth_betas(n_shells: int, n_terms: int, seed: int) -> np.ndarray:
    """(k, L) betas drawn from the course's prior, cut to L terms and kept only where the cut density
    is still non-negative (redrawn otherwise)."""
    check = ValidityCheck(n_terms)
    out, s = [], seed
    while len(out) < n_shells:
        b = Prior(PriorConfig())(4, seed=s).params.beta.reshape(-1, 12)[:, :n_terms]
        s += 1
        for row in b:
            if bool(check(row[None])[0]) and len(out) < n_shells:
                out.append(row.numpy())
    return np.stack(out)


def expected(case: LabCase, model: GridImage | None = None) -> np.ndarray:
    """The case's expected counts per pixel before any gain: (nx, nz)."""
    L = case.beta.shape[1]
    gi = model or GridImage(PixelGrid(case.shape, case.pixel_size), L)
    mu = np.full(case.shape, float(case.background))
    for j in range(len(case.R)):
        mu += gi.shell(case.R[j], case.sigma_R[j], case.n_electrons[j], torch.as_tensor(case.beta[j]),
                       case.centre)[0].cpu().numpy()
    return mu


def render_case(case: LabCase, seed: int, mask: np.ndarray | None = None, gain: np.ndarray | None = None,
                model: GridImage | None = None) -> np.ndarray:
    """Poisson counts (int64) around gain x expected, 0 where ``mask`` is True."""
    mu = expected(case, model) * (1.0 if gain is None else gain)
    img = np.random.default_rng(seed).poisson(mu)
    if mask is not None:
        img[mask] = 0
    return img


def disc_mask(shape, centre, radius: float) -> np.ndarray:
    """True inside a disc (a gain hole where the ion beam hit the MCP), pixel units."""
    i, k = np.meshgrid(np.arange(shape[0]), np.arange(shape[1]), indexing="ij")
    return np.hypot(i - centre[0], k - centre[1]) <= radius


def dead_column(shape, index: int, axis: int = 0) -> np.ndarray:
    """True on one dead line of pixels: a column of the camera, ``index`` along ``axis``."""
    m = np.zeros(shape, bool)
    if axis == 0:
        m[index] = True
    else:
        m[:, index] = True
    return m


def smooth_gain(shape, depth: float = 0.3, seed: int = 0) -> np.ndarray:
    """A flat field: a smooth gain from 1 - depth to 1 + depth/2 (a worn patch and a gradient)."""
    rng = np.random.default_rng(seed)
    i, k = np.meshgrid(np.linspace(-1, 1, shape[0]), np.linspace(-1, 1, shape[1]), indexing="ij")
    a, b = rng.uniform(-0.5, 0.5, 2)
    g = 1 + depth / 2 * (a * i + b * k) - depth * np.exp(-((i - 0.3) ** 2 + (k + 0.2) ** 2) / 0.1)
    return np.clip(g, 0.2, None)


# -- the cross-check against PyAbel and the information limit (tools/compare_lab_images.py) ---------------

def cross_check_cases(n_terms: int = 12, seed: int = 0) -> dict[str, LabCase]:
    """The cross-check's images: 256 x 240 pixels of 2/256 detector units, a flat background of 0.2
    counts per pixel, the centre 11 to 20 pixels off the image's middle, 1, 2 and 3 shells of 1.5e5
    to 3e5 electrons, betas from the course's prior cut to ``n_terms``."""
    ps, mid = 2 / 256, (127.5, 119.5)

    def case(off, R, s, N, k):
        return LabCase((256, 240), (mid[0] + off[0], mid[1] + off[1]), R, s, N, truth_betas(len(R), n_terms, seed + k),
                       ps, 0.2)

    return {"1 shell": case((17.3, -12.6), (0.45,), (0.012,), (3e5,), 0),
            "2 shells": case((-19.4, 8.2), (0.3, 0.55), (0.01, 0.014), (2e5, 3e5), 10),
            "3 shells": case((11.7, 19.1), (0.22, 0.42, 0.62), (0.008, 0.012, 0.015), (1.5e5, 2.5e5, 3e5), 20)}


def acceptance_mask(case: LabCase) -> np.ndarray:
    """A gain hole and a dead column for the acceptance figures: a disc of 12 pixels on the outer
    shell (45 degrees off the polarisation axis) and one dead column through both shells."""
    c, r = case.centre, case.R[-1] / case.pixel_size
    hole = disc_mask(case.shape, (c[0] + r * 0.7071, c[1] + r * 0.7071), 12)
    return hole | dead_column(case.shape, int(round(c[0] - 0.5 * case.R[0] / case.pixel_size)))


def truth_theta(case: LabCase) -> np.ndarray:
    """The case as ``sevi.fit.image_fit`` parameters: x0, z0, background, per shell R, sigma_R, N, betas."""
    return np.concatenate([np.r_[case.centre[0], case.centre[1], case.background]]
                          + [np.r_[case.R[j], case.sigma_R[j], case.n_electrons[j], case.beta[j]]
                             for j in range(len(case.R))])


def information_distance(case: LabCase, keep: np.ndarray | None = None, gain: np.ndarray | None = None,
                         fix_centre: bool = False, seed: int = 0) -> float:
    """The information limit: the expected Distance at the Cramer-Rao bound of the fit's model (the
    centre, the background and every shell's R, sigma_R, N and betas unknown; the centre known with
    ``fix_centre``), masked pixels (``keep`` False) giving no information, the gain applied."""
    from sevi.fit.image_fit import ImageFitConfig, ImageRefiner
    from sevi.physics.information import covariance, expected_distance

    L, k = case.beta.shape[1], len(case.R)
    ref = ImageRefiner(PixelGrid(case.shape, case.pixel_size), ImageFitConfig(n_terms=L))
    keep = np.ones(case.shape, bool) if keep is None else keep
    F = ref.fisher(truth_theta(case), keep, np.ones(case.shape) if gain is None else gain)
    free = np.arange(2 if fix_centre else 0, len(F))
    cov = covariance(F[free][:, free])
    bi = np.array([3 + j * (3 + L) + 3 + i for j in range(k) for i in range(L)]) - free[0]
    return expected_distance(cov[bi][:, bi], seed=seed, n_shells=k)


def pyabel_answer(image: np.ndarray, R_px, sig_px, n_terms: int, keep: np.ndarray | None = None,
                  method: str = "convolution") -> dict:
    """PyAbel as a VMI physicist runs it: ``abel.tools.center.find_origin`` (``method``), then
    ``abel.tools.center.set_center`` and ``abel.rbasex.rbasex_transform`` (order 2 L, masked and
    padded pixels given weight 0) and a Legendre
    projection of its radial harmonics over each shell's window R +- 3 sigma_R, taken from the
    TRUTH (``R_px``, ``sig_px`` in pixels): an oracle that favours PyAbel. Returns the betas (k, L)
    in the course's convention, the centre (x0, z0) in our pixel indices, and the seconds (wall, CPU)."""
    import time
    import warnings

    import abel.rbasex
    import abel.tools.center
    from scipy.linalg import LinAlgWarning

    warnings.filterwarnings("ignore", category=LinAlgWarning)  # rBasex's weights at r ~ 0, order 2 L
    w0, c0 = time.perf_counter(), time.process_time()
    IM = np.asarray(image, np.float64).T  # PyAbel's rows are z
    row, col = abel.tools.center.find_origin(IM, method=method)
    # rBasex takes a whole-pixel origin: the image is moved so that the origin found lies on the middle
    # pixel (a cubic-spline shift, PyAbel's own centring), padded with zeros that its weights leave out
    W = np.ones(IM.shape) if keep is None else np.asarray(keep, np.float64).T
    IMc = abel.tools.center.set_center(IM, (row, col), crop="maintain_data")
    Wc = abel.tools.center.set_center(W, (row, col), crop="maintain_data", order=1) > 0.5
    _, distr = abel.rbasex.rbasex_transform(IMc, origin="center", rmax="MAX", order=2 * n_terms,
                                            weights=Wc.astype(np.float64), out=None)
    harm, r = distr.harmonics(), distr.r
    beta = np.zeros((len(R_px), n_terms))
    for j, (R, s) in enumerate(zip(R_px, sig_px)):
        w = (r >= R - 3 * s) & (r <= R + 3 * s)
        h = harm[:, w].sum(1)
        m = min(n_terms, len(h) - 1)
        beta[j, :m] = 0.5 * h[1:m + 1] / h[0]
    return {"beta": beta, "centre": np.array([col, row], float), "wall_s": time.perf_counter() - w0,
            "cpu_s": time.process_time() - c0}


def _d(beta, truth) -> float:
    from sevi.physics.metric import distance

    return float(distance(torch.as_tensor(np.asarray(beta, np.float64)), torch.as_tensor(truth)))


def cross_check(case: LabCase, seed: int, fit_kw: dict | None = None) -> dict:
    """One rendered image through our fit (shells and centre found, ``sevi fit``'s defaults), PyAbel
    (``pyabel_answer``) and the information limit: Distance, centre error, wall and CPU seconds."""
    import time

    from sevi.pipeline.fit_image import fit_image

    L = case.beta.shape[1]
    img = render_case(case, seed)
    w0, c0 = time.perf_counter(), time.process_time()
    f = fit_image(img, n_terms=L, pixel_size=case.pixel_size, **(fit_kw or {}))
    ours = {"wall_s": time.perf_counter() - w0, "cpu_s": time.process_time() - c0, "n_shells": f.n_shells,
            "centre_error_px": (f.centre - case.centre).tolist(), "centre_sd_px": f.centre_sd.tolist(),
            "distance": _d(f.beta, case.beta) if f.n_shells == len(case.R) else float("nan"),
            "chi2_dof": f.chi2_dof}
    import abel.rbasex

    windows = (np.array(case.R) / case.pixel_size, np.array(case.sigma_R) / case.pixel_size, L)
    abel.rbasex.cache_cleanup()  # cold: rBasex computes its basis for this image's size and order
    cold = pyabel_answer(img, *windows)
    ab = pyabel_answer(img, *windows)  # warm: the basis kept in memory, as for the next image of a series
    pyabel = {"wall_s": cold["wall_s"], "cpu_s": cold["cpu_s"], "warm_wall_s": ab["wall_s"], "warm_cpu_s": ab["cpu_s"],
              "centre_error_px": (ab["centre"] - case.centre).tolist(), "distance": _d(ab["beta"], case.beta)}
    return {"ours": ours, "pyabel": pyabel, "floor": information_distance(case, seed=seed)}


def acceptance(case: LabCase, seeds, mask: np.ndarray) -> dict:
    """The two acceptance figures on repeated draws of one case (shells given, so that every fit
    answers the same shells):

    * the centre fitted against the centre known: the centre's z-scores (error / its error bar; their
      rms is the bar's calibration) and the Distance of each, per draw;
    * ``mask`` (a gain hole and a dead column) against the unmasked image of the same draw (the
      masked pixels' counts removed): the Distance of each, per draw.

    Also the information limit of each: the expected Distance at the Cramer-Rao bound."""
    from sevi.pipeline.fit_image import fit_image

    L, k = case.beta.shape[1], len(case.R)
    kw = dict(shells=k, n_terms=L, pixel_size=case.pixel_size)
    rows = []
    for s in seeds:
        img = render_case(case, s)
        free = fit_image(img, **kw)
        known = fit_image(img, centre=case.centre, **kw)
        masked = fit_image(np.where(mask, 0, img), mask=mask, **kw)
        rows.append({"seed": int(s), "centre_z": ((free.centre - case.centre) / free.centre_sd).tolist(),
                     "centre_error_px": (free.centre - case.centre).tolist(),
                     "masked_centre_z": ((masked.centre - case.centre) / masked.centre_sd).tolist(),
                     "d_free": _d(free.beta, case.beta), "d_known": _d(known.beta, case.beta),
                     "d_masked": _d(masked.beta, case.beta)})
    keep = ~mask
    return {"draws": rows,
            "floor_free": information_distance(case), "floor_known": information_distance(case, fix_centre=True),
            "floor_masked": information_distance(case, keep=keep)}


def figure(result: dict) -> bytes:
    """The PNG of ``tools/compare_lab_images.py``: Distance per image (ours, PyAbel, the floor) and
    CPU time (the work, whatever else the machine runs); the acceptance draws (fitted against known centre, masked against unmasked)."""
    import io

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(1, 4, figsize=(17, 4))
    rows = result["cross_check"]
    names = [f"{r['case']} #{r['seed']}" for r in rows]
    x = np.arange(len(rows))
    for k, (key, label) in enumerate((("ours", "ours (sevi fit)"), ("pyabel", "PyAbel convolution + rBasex"))):
        ax[0].bar(x + (k - 1) * 0.27, [r[key]["distance"] for r in rows], 0.27, label=label)
        ax[1].bar(x + (k - 0.5) * 0.4, [r[key]["cpu_s"] for r in rows], 0.4, label=label)
    ax[0].bar(x + 0.27, [r["floor"] for r in rows], 0.27, label="information limit (CRB)")
    ax[0].set_yscale("log")
    ax[1].set_yscale("log")
    for a, t in ((ax[0], "Distance"), (ax[1], "CPU seconds, 1 thread (PyAbel: basis computed)")):
        a.set_xticks(x, names, rotation=30, fontsize=7)
        a.set_title(t)
        a.legend(fontsize=7)
    acc = result.get("acceptance")
    if acc:
        d = acc["draws"]
        for a, key, t in ((ax[2], "d_free", "centre fitted"), (ax[3], "d_masked", "disc + dead column masked")):
            ref = "d_known" if key == "d_free" else "d_free"
            a.plot([r[ref] for r in d], [r[key] for r in d], "o")
            lim = max(max(r[ref] for r in d), max(r[key] for r in d)) * 1.1
            a.plot([0, lim], [0, lim], "k:")
            a.set_xlabel("Distance, " + ("centre known" if key == "d_free" else "unmasked (centre fitted)"))
            a.set_ylabel("Distance, " + t)
            a.set_title(f"{t}: mean ratio {np.mean([r[key] for r in d]) / np.mean([r[ref] for r in d]):.3f}")
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, dpi=90, format="png")
    plt.close(fig)
    return buf.getvalue()
