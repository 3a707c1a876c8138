"""Training batches: the prior, the renderer and the seeds a batch depends on.

``make_batch(generator, cfg, seed)`` depends only on (cfg, seed) and the device: it draws
``cfg.batch_size`` parameter sets from the generator's prior with ``seed``, renders them at the
representation's grid (a histogram at G is exactly the rebinned histogram at any multiple of G)
and builds the model inputs. The training stream uses ``batch_seed(cfg, step, rank, world_size)``
(``stream_seed``, which the pool's feeds use too), so a resumed run continues the same stream;
the validation set uses seeds no training step can reach.
"""

from __future__ import annotations

import functools

import torch
from torch import Tensor

from sevi.physics.prior import Prior, PriorConfig
from sevi.regressor.model import targets_from_params
from sevi.regressor.train_config import TrainConfig


def prior_config(cfg: TrainConfig) -> PriorConfig:
    """The training prior: the notes' prior with cfg.electrons, narrowed when cfg.refine_answer."""
    base = PriorConfig().with_electrons(*cfg.electrons)
    if cfg.refine_answer:
        from sevi.physics.narrowed_prior import narrow_prior_from_file
        return narrow_prior_from_file(base, cfg.refine_answer, cfg.refine_width)
    return base


def render_grid(cfg: TrainConfig) -> int:
    """The grid training images are rendered at: cfg.grid, or with cfg.spot_blur > 0 the multiple of it
    on which the blur is well sampled (sevi.camera.direct_image.blur_render_grid); the features rebin exactly to cfg.grid."""
    from sevi.camera.direct_image import blur_render_grid
    return blur_render_grid(cfg.grid, cfg.spot_blur)


def make_generator(cfg: TrainConfig, device: str | torch.device = "auto"):
    """The renderer of cfg.render ("itm": SeviGenerator; "poisson": ExpectedRenderer) at render_grid(cfg)."""
    from sevi.physics.expected_renderer import make_renderer
    from sevi.physics.generator import GeneratorConfig
    return make_renderer(cfg.render, GeneratorConfig(grid=render_grid(cfg)), device, prior_config(cfg))


def stream_seed(base: int, step: int, rank: int = 0, world_size: int = 1) -> int:
    """Seed of the batch that ``rank`` trains on at ``step`` of the stream ``base``: distinct across
    steps and ranks, and the same in every feed (in-process or the pool), so a resumed run continues
    the same data. Validation seeds lie at val_seed * 2^32 + 2^31 + i, apart from these."""
    return int(base) * 2**32 + step * world_size + rank


def batch_seed(cfg: TrainConfig, step: int, rank: int = 0, world_size: int = 1) -> int:
    """Seed of the training batch of (step, rank): :func:`stream_seed` of ``cfg.seed``."""
    return stream_seed(cfg.seed, step, rank, world_size)


def make_batch(generator, cfg: TrainConfig, seed: int) -> dict[str, Tensor]:
    """Pure: (cfg, seed) -> {x (B, C, H, W) float32, y (B, T) float32 physical targets,
    beta (B, 2, L) float32, R (B, 2) float32, sigma_R (B, 2) float32}, on the generator's device.

    With cfg.spot_blur > 0 the histograms are rendered at render_grid(cfg) (a multiple of cfg.grid; the
    same electrons, so the rebinned histogram is the one cfg.grid would give), blurred by spot_blur
    (sevi.camera.direct_image.blur_images) and then rebinned by the features: the mean of a background-subtracted
    sum of camera frames (sevi.camera.direct_image.direct_image)."""
    if generator.config.grid != render_grid(cfg):
        raise ValueError(f"generator renders {generator.config.grid} x {generator.config.grid}, this config needs "
                         f"{render_grid(cfg)} (make_generator(cfg) builds the right one)")
    params = generator.prior(cfg.batch_size, seed).params
    images = generator.render(params, seed).images  # (B, G', G') int32
    if cfg.spot_blur > 0:
        from sevi.camera.direct_image import blur_images
        images = blur_images(images, cfg.spot_blur)  # (B, G', G') float32
    dev = images.device
    beta, R, sigma_R = (t.to(dev, torch.float32) for t in (params.beta, params.R, params.sigma_R))
    return {"x": cfg.features(images), "y": targets_from_params(beta, R, sigma_R), "beta": beta, "R": R,
            "sigma_R": sigma_R}


@functools.lru_cache(maxsize=8)
def _target_stats(pc: PriorConfig, n: int, seed: int) -> tuple[Tensor, Tensor]:
    p = Prior(pc)(n, seed).params
    y = targets_from_params(p.beta, p.R, p.sigma_R)  # (n, T) float64
    return y.mean(0).float(), y.std(0).clamp_min(1e-6).float()


def target_stats(cfg: TrainConfig) -> tuple[Tensor, Tensor]:
    """Target mean and std (T,) of the training prior: once, from a fixed seed, never a batch."""
    return _target_stats(prior_config(cfg), cfg.target_stats_draws, 7)
