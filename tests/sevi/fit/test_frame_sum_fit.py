"""sevi.fit.frame_sum_fit: a frame sum rendered by the camera simulator, both shells on small radii so
that the camera saturates, fitted with the camera's exact response: chi^2/dof at the truth within 5
sigma of 1, the answer within its error bars; the linear model of sevi.fit.direct_fit misfits the
same frames.

A 256-pixel camera whose spot is the course's in pixels (sigma 0.06 detector units = 7.68 px) and
30 spots per frame: the course's crowding on a ring of a quarter of the pixels, at 1/16 of the cost.
"""
import math

import numpy as np
import pytest
import torch

from sevi.camera.direct_image import direct_image
from sevi.camera.frame_renderer import FrameRenderer, accumulate_frames
from sevi.camera.frames import FrameModel
from sevi.fit.count_fit import FitConfig
from sevi.fit.direct_fit import DirectRefiner, direct_noise
from sevi.fit.frame_sum_fit import FrameSumRefiner
from sevi.physics.prior import Prior, PriorConfig, ShellParams

SMALL = FrameModel(grid=256, sigma_mean=0.06, sigma_std=0.004)
FIT_GRID = 64  # 4 x 4 camera pixels per fit pixel, as 256^2 fits of the course's 1024^2 frames


@pytest.fixture(scope="module")
def saturated():
    n_frames, per_frame = 1500, 30.0
    truth = Prior(PriorConfig())(1, 10**9 + 77).params
    emitted = int(per_frame * n_frames / 0.9 / 2)
    p = ShellParams(torch.tensor([[0.33, 0.39]], dtype=torch.float64), torch.tensor([[0.006, 0.007]], dtype=torch.float64),
                    truth.beta, torch.tensor([[emitted, emitted]]))
    gen = torch.Generator().manual_seed(3)
    fs = accumulate_frames(FrameRenderer(SMALL, "cpu"), p, n_frames, generator=gen, progress=False)
    image = direct_image(fs.frame_sum.astype(np.float64), n_frames, FIT_GRID, SMALL)
    detected = len(fs.x)
    return p, image, n_frames, detected, fs


def _prior():
    return PriorConfig().with_electrons(int(30 * 1500 / 0.9 / 2))


def test_the_rings_saturate(saturated):
    _, _, n_frames, _, fs = saturated
    assert fs.frame_sum.max() / n_frames > 180, "the test must reach the camera's saturation"


def test_chi2_at_the_truth_and_the_answer_with_the_cameras_response(saturated):
    p, image, n_frames, detected, _ = saturated
    noise = direct_noise(n_frames, FIT_GRID, SMALL)
    # blocks of 2 x 2 fit pixels for chi^2 (its 16 x 16 folded pixels hold few 4 x 4 blocks)
    ref = FrameSumRefiner(FitConfig(fit_grid=FIT_GRID), _prior(), "cpu", noise, chi2_block=2)
    share = detected / p.n_electrons.sum()  # detected per emitted: the fit's N is detected electrons
    theta = torch.tensor(np.concatenate([np.r_[p.R[0, j], p.sigma_R[0, j], float(p.n_electrons[0, j]) * share,
                                                p.beta[0, j]] for j in range(2)]), dtype=torch.float64)
    ref._set_anchor(theta)
    mu, _ = ref._model(theta, False)
    chi2, blocks = ref.chi2(mu, ref.fold(image))  # blocks of pixels: the spots' correlations inside them
    sd = ref.chi2_sd(mu) / blocks
    assert abs(chi2 / blocks - 1) < 5 * sd, f"chi2/dof at the truth {chi2 / blocks:.3f} over {blocks} blocks (sd {sd:.3f})"
    res = ref(image, p.R[0].numpy() + 0.003, p.sigma_R[0].numpy(), p.beta[0].numpy() + 0.03, np.full(2, 0.01))
    assert res.converged and res.chi2_dof < 1 + 5 * sd, res.chi2_dof
    z_R = (res.R - p.R[0].numpy()) / res.R_sd
    z_b = (res.beta[:, :3] - p.beta[0, :, :3].numpy()) / res.beta_sd[:, :3]
    assert np.all(np.abs(z_R) < 4) and np.all(np.abs(z_b) < 4), (z_R, z_b)
    assert ref.exact_evaluations <= 1 + ref.max_anchors, "the exact model is evaluated a few times, not per step"


def test_the_linear_model_misfits_the_saturated_frames(saturated):
    p, image, n_frames, _, _ = saturated
    linear = DirectRefiner(FitConfig(fit_grid=FIT_GRID), _prior(), "cpu",
                           direct_noise(n_frames, FIT_GRID, SMALL, response=False))
    res = linear(image, p.R[0].numpy(), p.sigma_R[0].numpy(), p.beta[0].numpy(), np.full(2, 0.01))
    assert res.chi2_dof > 3, f"the linear model should not describe saturated frames (chi2/dof {res.chi2_dof:.2f})"
