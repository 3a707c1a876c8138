"""What ``sevi fit`` writes beside its answer file: a CSV a spreadsheet opens and a PNG of the fit.

* CSV (``answer_csv``): one row per shell, smaller R first, columns ``shell, R, R_sd, sigma_R,
  sigma_R_sd, n_electrons, n_electrons_sd, beta_2, beta_2_sd, ..., beta_2L, beta_2L_sd``, then the
  image's own values on every row (``x0, x0_sd, z0, z0_sd`` in the image file's pixel indices,
  ``background`` in counts per pixel, ``chi2_dof``): plain comma-separated numbers with a header
  line, no index column, so Excel, LibreOffice and ``pandas.read_csv`` open it as it is.
* PNG (``fit_figure``): the image, the fitted model and the Poisson residuals (image - model) /
  sqrt(model), all shown as the camera file is (z up, x across; docs/conventions.md), masked pixels
  grey, the fitted centre marked; and per shell the angular distribution I(cos theta) = 1/2 +
  sum beta_2i P_2i with its 1-sigma band from the betas' covariance.

Both are written atomically (``sevi.io.atomic``).
"""

from __future__ import annotations

import io

import numpy as np

from sevi.io.atomic import atomic_bytes, atomic_text
from sevi.pipeline.fit_image import ImageFit

__all__ = ["answer_csv", "write_csv", "angular_band", "fit_figure", "write_figure"]


def answer_csv(fit: ImageFit) -> str:
    """The CSV text (module docstring)."""
    L = fit.n_terms
    head = ["shell", "R", "R_sd", "sigma_R", "sigma_R_sd", "n_electrons", "n_electrons_sd"]
    head += [f"beta_{2 * i}{s}" for i in range(1, L + 1) for s in ("", "_sd")]
    head += ["x0", "x0_sd", "z0", "z0_sd", "background", "chi2_dof"]
    lines = [",".join(head)]
    for j in range(fit.n_shells):
        row = [str(j)] + [repr(float(v)) for v in (fit.R[j], fit.R_sd[j], fit.sigma_R[j], fit.sigma_R_sd[j],
                                                   fit.n_electrons[j], fit.n_electrons_sd[j])]
        row += [repr(float(v)) for i in range(L) for v in (fit.beta[j, i], fit.beta_sd[j, i])]
        row += [repr(float(v)) for v in (fit.centre[0], fit.centre_sd[0], fit.centre[1], fit.centre_sd[1],
                                         fit.background, fit.chi2_dof)]
        lines.append(",".join(row))
    return "\n".join(lines) + "\n"


def write_csv(path, fit: ImageFit) -> None:
    atomic_text(path, answer_csv(fit))


def _beta_cov(fit: ImageFit, j: int) -> np.ndarray:
    """The (L, L) covariance of shell j's betas (theta's order: x0, z0, b, then per shell R, sigma_R, N, betas)."""
    first = 3 + j * (3 + fit.n_terms) + 3
    sl = slice(first, first + fit.n_terms)
    return fit.cov[sl, sl]


def angular_band(fit: ImageFit, j: int, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Shell j's I(x) on x = cos(theta) and its 1-sigma (the betas' covariance propagated)."""
    from numpy.polynomial import legendre

    P = np.stack([legendre.legval(x, np.eye(2 * fit.n_terms + 1)[2 * i]) for i in range(1, fit.n_terms + 1)])
    value = 0.5 + fit.beta[j] @ P
    sd = np.sqrt(np.clip(np.einsum("ax,ab,bx->x", P, _beta_cov(fit, j), P), 0, None))
    return value, sd


def fit_figure(fit: ImageFit, title: str = "") -> bytes:
    """The PNG's bytes (module docstring)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 4, figsize=(17, 4.3))
    shown = lambda a: np.ma.masked_where(~fit.keep.T, a.T)  # the file's view: rows = z
    vmax = float(np.percentile(fit.image[fit.keep], 99.7)) or 1.0
    cmap = matplotlib.colormaps["viridis"].with_extremes(bad="0.6")
    for ax, a, name in ((axes[0], fit.image, "image (counts)"), (axes[1], fit.model, "fitted model")):
        im = ax.imshow(shown(a), origin="lower", cmap=cmap, vmin=0, vmax=vmax, interpolation="nearest")
        fig.colorbar(im, ax=ax, shrink=0.8)
        ax.set_title(name)
    res = fit.residuals
    rc = matplotlib.colormaps["RdBu_r"].with_extremes(bad="0.6")
    im = axes[2].imshow(shown(res), origin="lower", cmap=rc, vmin=-4, vmax=4, interpolation="nearest")
    fig.colorbar(im, ax=axes[2], shrink=0.8)
    axes[2].set_title(f"residuals (n - mu)/sqrt(mu), chi2/dof {fit.chi2_dof:.3f}")
    for ax in axes[:3]:
        ax.plot([fit.centre[0]], [fit.centre[1]], "+", color="red", ms=10)
        ax.set_xlabel("x (pixel)")
        ax.set_ylabel("z (pixel, polarisation axis)")
    x = np.linspace(-1, 1, 201)
    for j in range(fit.n_shells):
        v, sd = angular_band(fit, j, x)
        line, = axes[3].plot(x, v, label=f"shell {j}: R {fit.R[j]:.4g}, beta_2 {fit.beta[j, 0]:.3f} "
                                         f"+- {fit.beta_sd[j, 0]:.3f}" if fit.n_terms else f"shell {j}")
        axes[3].fill_between(x, v - sd, v + sd, color=line.get_color(), alpha=0.3)
    axes[3].set_xlabel("cos(theta)")
    axes[3].set_ylabel("I(cos theta), 1-sigma band")
    axes[3].legend(fontsize=7)
    axes[3].set_title("angular distributions")
    c, s = fit.centre, fit.centre_sd
    fig.suptitle(f"{title}  centre ({c[0]:.2f} +- {s[0]:.2f}, {c[1]:.2f} +- {s[1]:.2f}) px, "
                 f"{fit.n_shells} shell(s)", fontsize=10)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, dpi=90, format="png")
    plt.close(fig)
    return buf.getvalue()


def write_figure(path, fit: ImageFit, title: str = "") -> None:
    atomic_bytes(path, fit_figure(fit, title))
