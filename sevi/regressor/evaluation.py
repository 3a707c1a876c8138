"""Training loss, the validation set, evaluation, calibration of the error bars, and figures."""

from __future__ import annotations

import math

import torch
from torch import Tensor

from sevi.physics.metric import distance
from sevi.regressor.batches import make_batch, make_generator
from sevi.regressor.model import ResNetRegressor, targets_from_params
from sevi.physics.metric import SEPARATION
from sevi.regressor.train_config import TrainConfig


def loss_fn(model: ResNetRegressor, out: Tensor, y: Tensor, cfg: TrainConfig) -> tuple[Tensor, dict[str, float]]:
    """The notes' loss (the metric without the square root) on betas in physical units, plus a
    normalised MSE on R and sigma_R, plus the Gaussian NLL of the log-variance head on the
    *detached* mean (so the error bars never pull the mean away from the Distance objective)."""
    T, L = model.n_targets, model.n_terms
    mu, logvar = out[:, :T], out[:, T:].clamp(-20, 10)
    yn = (y - model.target_mean) / model.target_std  # (B, T)
    w = 2.0 / (4 * torch.arange(1, L + 1, device=y.device, dtype=y.dtype) + 1)  # metric weights 2/(4i+1)
    wb = (w.repeat(2) * model.target_std[:2 * L] ** 2)  # in normalised units
    beta_loss = ((mu[:, :2 * L] - yn[:, :2 * L]) ** 2 * wb).sum(1).mean()
    radius_loss = ((mu[:, 2 * L:] - yn[:, 2 * L:]) ** 2).mean()
    nll = 0.5 * (logvar + (yn - mu.detach()) ** 2 * torch.exp(-logvar)).mean()
    loss = beta_loss + cfg.radius_loss_weight * radius_loss + cfg.nll_weight * nll
    return loss, {"beta_sq_distance": beta_loss.item(), "radius_mse": radius_loss.item(), "nll": nll.item()}


def make_validation_set(cfg: TrainConfig, device) -> dict[str, Tensor]:
    gen = make_generator(cfg.data, device)
    parts = [make_batch(gen, cfg.data, cfg.val_seed * 2**32 + 2**31 + i)
             for i in range(math.ceil(cfg.val_images / cfg.data.batch_size))]
    return {k: torch.cat([p[k] for p in parts])[:cfg.val_images] for k in parts[0]}


@torch.no_grad()
def predict(model: ResNetRegressor, x: Tensor, batch_size: int = 64) -> dict[str, Tensor]:
    """Decoded predictions (model.decode's keys) for inputs x (N, C, H, W), in eval mode."""
    was = model.training
    model.eval()
    outs = [model(x[i:i + batch_size]) for i in range(0, len(x), batch_size)]
    model.train(was)
    return model.decode(torch.cat(outs))


def evaluate(model: ResNetRegressor, val: dict[str, Tensor]) -> tuple[dict[str, float], dict[str, Tensor]]:
    """Validation Distance (all / separated / overlapping shells), per-coefficient RMS errors,
    R error and the 1-sigma coverage of the error bars. Returns (metrics, predictions)."""
    p = predict(model, val["x"])
    d = distance(p["beta"].double(), val["beta"].double())  # (N,)
    sep = (val["R"][:, 1] - val["R"][:, 0]).abs() >= SEPARATION
    m = {"val/distance": d.mean().item(),
         "val/distance_separated": d[sep].mean().item() if sep.any() else float("nan"),
         "val/distance_overlapping": d[~sep].mean().item() if (~sep).any() else float("nan"),
         "val/R_rmse": (p["R"] - val["R"]).pow(2).mean().sqrt().item(),
         "val/coverage_1sigma_beta": ((p["beta"] - val["beta"]).abs() <= p["beta_sd"]).float().mean().item(),
         "val/coverage_1sigma_R": ((p["R"] - val["R"]).abs() <= p["R_sd"]).float().mean().item()}
    rms = (p["beta"] - val["beta"]).pow(2).mean(0).sqrt()  # (2, L)
    for j in range(2):
        for i in range(rms.shape[1]):
            m[f"val_coef/beta{2 * i + 2}_shell{j}"] = rms[j, i].item()
    return m, p


@torch.no_grad()
def calibrate_uncertainties(model: ResNetRegressor, val: dict[str, Tensor]) -> Tensor:
    """Set model.sd_scale so that each target's z-scores on the validation set have unit RMS
    (temperature scaling of the heteroscedastic head); returns the scale (T,)."""
    model.sd_scale.fill_(1.0)
    p = predict(model, val["x"])
    mu = targets_from_params(p["beta"], p["R"], p["sigma_R"])
    sd = targets_from_params(p["beta_sd"], p["R_sd"], p["sigma_R_sd"])
    scale = ((val["y"] - mu) / sd).pow(2).mean(0).sqrt()  # (T,)
    model.sd_scale.copy_(scale)
    return scale


def angular_figure(pred_beta: Tensor, true_beta: Tensor, n: int = 4):
    """Matplotlib figure: predicted vs true I(cos theta) of both shells for the first n images."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from sevi.physics.legendre import angular_density
    c = torch.linspace(-1, 1, 201, dtype=torch.float64)
    n = min(n, len(true_beta))
    fig, axes = plt.subplots(1, n, figsize=(3 * n, 2.6), squeeze=False)
    for k, ax in enumerate(axes[0]):
        for j, col in ((0, "C0"), (1, "C3")):
            ax.plot(c, angular_density(c, true_beta[k, j].double().cpu()), col, label=f"true {j}")
            ax.plot(c, angular_density(c, pred_beta[k, j].double().cpu()), col + "--", label=f"pred {j}")
        ax.set_xlabel("cos theta")
    axes[0][0].legend(fontsize=7)
    fig.tight_layout()
    return fig
