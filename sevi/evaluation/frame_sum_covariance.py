"""The frame sum's covariance model, checked on rendered frame sums: does each estimator of
``sevi.fit.frame_sum_information`` vary as much as it claims?

Many independent frame sums of one measurement (same theta, different seeds) are rendered by the
camera simulator (``sevi.camera.frame_renderer``) and folded to the fit's pixels. For each estimator
(``wls``: the frame-sum fit's weights; ``gls``: the pixels' modelled covariance C inverted) its
first-order errors ``A (y_k - ybar)`` are taken over the sums, and their variance per parameter is
compared with the variance it claims (``A C A^T``). A ratio of 1 means the covariance model is right
along that estimator's directions; > 1, that it claims less noise than there is. With K sums the
ratio's standard error is about sqrt(2 / (K - 1)). The mean is checked too: ``(ybar - mu)`` along
each estimator, in units of one sum's claimed sd (the model's mean response at the truth).

The default measurement is that of tests/sevi/fit/test_frame_sum_fit.py: a 256-pixel camera whose spot
is the course's in pixels (sigma 0.06 = 7.68 px, sd 0.004), 30 spots per frame, two saturating shells
one spot sigma apart, fitted at 64^2 (4 x 4 camera pixels per fit pixel, as 256^2 fits of the
course's 1024^2 frames). ``CovarianceCheck.course`` is the course's own camera, fitted at 256^2 as
``sevi analyze`` fits it.

The first-order check says nothing of the fit itself (its optimum, anchors, the error bars taken
there). ``fit_grouped_sums`` closes that gap: it adds the sums in groups of G (G x the frames: the
variance shrinks G-fold, the covariance model's ratio does not change), fits each group with the
frame-sum fit from the truth, and returns the z-scores of R and sigma_R against the truth and the
fits' error bars beside the groups' actual spread.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import torch

from sevi.camera.frames import FrameModel

__all__ = ["CovarianceCheck", "compare_estimators", "fit_grouped_sums", "render_sums"]


@dataclasses.dataclass(frozen=True)
class CovarianceCheck:
    """One measurement to render many times (module docstring); radii and widths in detector units."""
    camera: FrameModel = FrameModel(grid=256, sigma_mean=0.06, sigma_std=0.004)
    fit_grid: int = 64
    n_frames: int = 300
    per_frame: float = 30.0  # detected spots per frame
    R: tuple[float, float] = (0.33, 0.39)
    sigma_R: tuple[float, float] = (0.006, 0.007)
    beta_seed: int = 10**9 + 77  # the betas: one draw of the notes' prior (held out from training)
    oversample: int = 1  # the fit's fine hit grid per blur grid (FrameSumRefiner's default: 1)
    chi2_block: int = 2  # folded fit pixels per chi^2 block side (FrameSumRefiner's default at 256^2: 4)

    @classmethod
    def course(cls, **kw) -> CovarianceCheck:
        """The course's camera (1024^2 frames, spot sigma 0.015), fitted as ``sevi analyze`` fits it
        (256^2, chi^2 blocks of 4), at the course's ~77 detected spots per frame."""
        from sevi.fit.direct_fit import REFINE_GRID

        return cls(**{"camera": FrameModel(), "fit_grid": REFINE_GRID, "per_frame": 77.0, "chi2_block": 4,
                      "sigma_R": (0.007, 0.007)} | kw)

    def params(self):
        """The measurement's ShellParams (electrons emitted per shell fixed, as the course renders)."""
        from sevi.physics.prior import Prior, PriorConfig, ShellParams

        beta = Prior(PriorConfig())(1, self.beta_seed).params.beta
        emitted = int(self.per_frame * self.n_frames / 0.9 / 2)
        return ShellParams(torch.tensor([self.R], dtype=torch.float64), torch.tensor([self.sigma_R], dtype=torch.float64),
                           beta, torch.tensor([[emitted, emitted]]))

    def refiner(self, device="cpu"):
        from sevi.fit.count_fit import FitConfig
        from sevi.fit.direct_fit import direct_noise
        from sevi.fit.frame_sum_fit import FrameSumRefiner
        from sevi.physics.prior import PriorConfig

        prior = PriorConfig().with_electrons(int(self.per_frame * self.n_frames / 0.9 / 2))
        return FrameSumRefiner(FitConfig(fit_grid=self.fit_grid), prior, device,
                               direct_noise(self.n_frames, self.fit_grid, self.camera), oversample=self.oversample,
                               chi2_block=self.chi2_block)


def render_sums(check: CovarianceCheck, n_sums: int, seed: int = 1000, device="cpu", progress=None):
    """(folded frame sums (K, h h) float64 in electron units, mean detected hits per sum); sum k is
    rendered with seed ``seed + k``."""
    from sevi.camera.direct_image import direct_image
    from sevi.camera.frame_renderer import FrameRenderer, accumulate_frames

    ref, p = check.refiner(device), check.params()
    renderer = FrameRenderer(check.camera, device)
    sums, detected = [], []
    for k in range(n_sums):
        gen = torch.Generator(device=torch.device(device)).manual_seed(seed + k)
        fs = accumulate_frames(renderer, p, check.n_frames, generator=gen, progress=False)
        sums.append(ref.fold(direct_image(fs.frame_sum.astype(np.float64), check.n_frames, check.fit_grid,
                                          check.camera)))
        detected.append(len(fs.x))
        if progress:
            progress(1)
    return torch.stack(sums), float(np.mean(detected))


def compare_estimators(refiner, theta: torch.Tensor, sums: torch.Tensor, gls: bool = True) -> dict:
    """Per estimator ('wls', 'gls'): {'names', 'actual_var', 'claimed_var', 'ratio', 'mean_offset'}
    (lists per parameter, ``sevi.physics.information.parameter_names`` order), plus 'n_sums' and the
    conjugate gradients' 'cg_residual' (module docstring). ``gls=False``: the fit's estimator only (no
    conjugate-gradient solve; 'gls' and 'cg_residual' absent)."""
    from sevi.fit.frame_sum_information import linear_estimators
    from sevi.physics.information import parameter_names

    est = linear_estimators(refiner, theta, gls=gls)
    dev = sums - sums.mean(0)
    out = {"n_sums": int(len(sums))} | ({"cg_residual": est["cg_residual"]} if gls else {})
    for name in ("wls", "gls") if gls else ("wls",):
        A, claimed = est[name]["A"], est[name]["claimed"].diagonal()
        actual = (dev @ A.T).var(0)
        offset = (A @ (sums.mean(0) - est["mu"])) / claimed.sqrt()
        out[name] = {"names": parameter_names(refiner.L), "actual_var": actual.tolist(),
                     "claimed_var": claimed.tolist(), "ratio": (actual / claimed).tolist(),
                     "mean_offset": offset.tolist()}
    return out


def fit_grouped_sums(check: CovarianceCheck, sums: torch.Tensor, group: int, device="cpu", progress=None,
                     gls_step: bool = False) -> dict:
    """The frame-sum fit (``FrameSumRefiner``, started at the truth) on the folded ``sums`` (K, h h)
    added in consecutive groups of ``group`` (K // group fits of ``group * check.n_frames`` frames;
    a remainder is left out). Returns per fit and shell the answer and error bar of R and sigma_R
    and their z-scores against the truth, chi^2/dof, and the summary: z rms of R and sigma_R, and per
    shell the fits' actual sd of R beside their mean error bar.

    ``gls_step``: also one generalised-least-squares Newton step from each fit's optimum, with the
    fit's own Gaussian prior: ``theta_gls = theta_hat + (J C^-1 J^T + P)^-1 (J C^-1 (n - mu) -
    P (theta_hat - m))`` (``sevi.fit.frame_sum_information``: C the modelled covariance at the
    optimum), with its claimed sd (the diagonal of that inverse); the summary then gives, per
    parameter, both estimators' actual sd over the fits and their mean claimed sd, and the GLS
    z-scores' rms (``gls``; N left out: the course's fixed electron count)."""
    n_groups = len(sums) // group
    if n_groups < 2:
        raise ValueError(f"{len(sums)} sums in groups of {group}: fewer than 2 fits; use fewer per group or more sums")
    grouped = dataclasses.replace(check, n_frames=check.n_frames * group)
    ref, p = grouped.refiner(device), check.params()
    R, s, beta = p.R[0].numpy(), p.sigma_R[0].numpy(), p.beta[0].numpy()
    fits = []
    for n in sums[: n_groups * group].reshape(n_groups, group, -1).sum(1):
        r = ref.fit_folded(n, R, s, beta, np.full(2, 0.005))
        fits.append({"R": r.R.tolist(), "R_sd": r.R_sd.tolist(), "z_R": ((r.R - R) / r.R_sd).tolist(),
                     "sigma_R": r.sigma_R.tolist(), "sigma_R_sd": r.sigma_R_sd.tolist(),
                     "z_sigma_R": ((r.sigma_R - s) / r.sigma_R_sd).tolist(), "chi2_dof": float(r.chi2_dof)})
        if gls_step:
            fits[-1].update(_gls_step(ref, r, n))
        if progress:
            progress(1)
    zr, zs = np.array([f["z_R"] for f in fits]), np.array([f["z_sigma_R"] for f in fits])
    extra = {"gls": _gls_summary(fits, p, ref.L)} if gls_step else {}
    return extra | {"group": group, "frames_per_fit": grouped.n_frames, "fits": fits,
            "z_rms_R": float(np.sqrt((zr ** 2).mean())), "z_rms_sigma_R": float(np.sqrt((zs ** 2).mean())),
            "R_actual_sd": np.array([f["R"] for f in fits]).std(0, ddof=1).tolist(),
            "R_claimed_sd": np.array([f["R_sd"] for f in fits]).mean(0).tolist()}


def _gls_step(refiner, fit, n: torch.Tensor) -> dict:
    """One GLS step from ``fit``'s optimum on the folded sum ``n`` (``fit_grouped_sums``): both
    estimators' parameter vectors and claimed sds."""
    from sevi.fit.frame_sum_information import gls_gradient_and_curvature, truth_theta
    from sevi.physics.information import covariance

    theta = truth_theta(fit.R, fit.sigma_R, fit.n_electrons, fit.beta[:, :refiner.L]).to(refiner.device)
    refiner._set_anchor(theta)
    mu, J = refiner._model(theta, True)
    g, H, _, _ = gls_gradient_and_curvature(refiner, theta, mu, J, n)  # with the fit's own Gaussian prior
    cov = covariance(H)
    step = -(cov @ g)
    return {"wls_theta": theta.tolist(), "wls_sd": np.sqrt(np.diag(fit.cov)).tolist(),
            "gls_theta": (theta + step).tolist(), "gls_sd": cov.diagonal().sqrt().tolist()}


def _gls_summary(fits: list[dict], params, L: int) -> dict:
    """Per parameter over ``fits`` (with ``_gls_step``'s keys): each estimator's actual sd and mean
    claimed sd, the GLS z rms against the truth; and the z rms of R and sigma_R under GLS."""
    from sevi.fit.frame_sum_information import truth_theta
    from sevi.physics.information import parameter_names

    truth = truth_theta(params.R[0], params.sigma_R[0], [0.0, 0.0], params.beta[0, :, :L]).numpy()
    names = parameter_names(L)
    out = {"names": names}
    for e in ("wls", "gls"):
        th, sd = np.array([f[f"{e}_theta"] for f in fits]), np.array([f[f"{e}_sd"] for f in fits])
        z_rms = np.sqrt((((th - truth) / sd) ** 2).mean(0))
        out[e] = {"actual_sd": th.std(0, ddof=1).tolist(), "claimed_sd": sd.mean(0).tolist(),
                  "z_rms": [None if nm.startswith("N[") else float(v) for nm, v in zip(names, z_rms)]}
    pick = lambda what: [i for i, nm in enumerate(names) if nm.split("[")[0] == what]  # noqa: E731
    z = np.array([np.nan if v is None else v for v in out["gls"]["z_rms"]])
    out["z_rms_R"], out["z_rms_sigma_R"] = float(np.sqrt((z[pick("R")] ** 2).mean())), \
        float(np.sqrt((z[pick("sigma_R")] ** 2).mean()))
    return out
