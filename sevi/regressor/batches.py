"""Training batches: the prior, the renderer and the seeds a batch depends on.

``make_batch(generator, data, seed)`` depends only on (data, seed) and the device, where ``data`` is
the run's ``DataConfig`` (``TrainConfig.data``, exactly what the generator pool receives): it draws
``data.batch_size`` parameter sets from the generator's prior with ``seed``, renders them at the
representation's grid (a histogram at G is exactly the rebinned histogram at any multiple of G)
and builds the model inputs. The training stream uses ``batch_seed(cfg, step, rank, world_size)``
(``stream_seed``, which the pool's feeds use too), so a resumed run continues the same stream;
the validation set uses seeds no training step can reach.
"""

from __future__ import annotations

import functools
import time

import torch
from torch import Tensor

from sevi.physics.prior import Prior, PriorConfig
from sevi.regressor.model import targets_from_params
from sevi.regressor.train_config import DataConfig, TrainConfig


def prior_config(cfg: TrainConfig | DataConfig) -> PriorConfig:
    """The training prior of a run (its DataConfig's: the notes' prior with the run's electrons, or
    the narrowed prior resolve_config read from refine_answer)."""
    data = cfg.data if isinstance(cfg, TrainConfig) else cfg
    return data.prior_config()


def render_grid(data: DataConfig) -> int:
    """The grid training images are rendered at: data.grid, or with data.spot_blur > 0 the multiple of it
    on which the blur is well sampled (sevi.camera.direct_image.blur_render_grid); the features rebin exactly to data.grid."""
    from sevi.camera.direct_image import blur_render_grid
    return blur_render_grid(data.grid, data.spot_blur)


def make_generator(data: DataConfig, device: str | torch.device = "auto"):
    """The renderer of data.render ("itm": SeviGenerator; "poisson": ExpectedRenderer) at render_grid(data)."""
    from sevi.physics.expected_renderer import make_renderer
    from sevi.physics.generator import GeneratorConfig
    return make_renderer(data.render, GeneratorConfig(grid=render_grid(data)), device, data.prior_config())


def stream_seed(base: int, step: int, rank: int = 0, world_size: int = 1) -> int:
    """Seed of the batch that ``rank`` trains on at ``step`` of the stream ``base``: distinct across
    steps and ranks, and the same in every feed (in-process or the pool), so a resumed run continues
    the same data. Validation seeds lie at val_seed * 2^32 + 2^31 + i, apart from these."""
    return int(base) * 2**32 + step * world_size + rank


def chain_seed(stream: dict, seed: int | None) -> dict:
    """The record of the batches a model's weights have seen, one batch further: ``{"batches": n,
    "sha256": h}`` with h = SHA-256 of the previous h and the seed, so two runs whose records are
    equal trained on the same batch seeds in the same order (a resumed run carries its
    checkpoint's record on). A batch without its seed makes the digest unknown (None)."""
    import hashlib

    h = stream.get("sha256", "")
    if h is not None and seed is not None:
        h = hashlib.sha256(f"{h}:{int(seed)}".encode()).hexdigest()
    else:
        h = None
    return {"batches": int(stream.get("batches", 0)) + 1, "sha256": h}


def batch_seed(cfg: TrainConfig, step: int, rank: int = 0, world_size: int = 1) -> int:
    """Seed of the training batch of (step, rank): :func:`stream_seed` of ``cfg.seed``."""
    return stream_seed(cfg.seed, step, rank, world_size)


def make_batch(generator, data: DataConfig, seed: int) -> dict[str, Tensor]:
    """Pure: (data, seed) -> {x (B, C, H, W) float32, y (B, T) float32 physical targets,
    beta (B, 2, L) float32, R (B, 2) float32, sigma_R (B, 2) float32}, on the generator's device.

    With data.spot_blur > 0 the histograms are rendered at render_grid(data) (a multiple of data.grid; the
    same electrons, so the rebinned histogram is the one data.grid would give), blurred by spot_blur
    (sevi.camera.direct_image.blur_images) and then rebinned by the features: the mean of a background-subtracted
    sum of camera frames (sevi.camera.direct_image.direct_image)."""
    if generator.config.grid != render_grid(data):
        raise ValueError(f"generator renders {generator.config.grid} x {generator.config.grid}, this config needs "
                         f"{render_grid(data)} (make_generator(data) builds the right one)")
    params = generator.prior(data.batch_size, seed).params
    images = generator.render(params, seed).images  # (B, G', G') int32
    if data.spot_blur > 0:
        from sevi.camera.direct_image import blur_images
        images = blur_images(images, data.spot_blur)  # (B, G', G') float32
    dev = images.device
    beta, R, sigma_R = (t.to(dev, torch.float32) for t in (params.beta, params.R, params.sigma_R))
    return {"x": data.features(images), "y": targets_from_params(beta, R, sigma_R), "beta": beta, "R": R,
            "sigma_R": sigma_R}


@functools.lru_cache(maxsize=8)
def _target_stats(pc: PriorConfig, n: int, seed: int) -> tuple[Tensor, Tensor]:
    p = Prior(pc)(n, seed).params
    y = targets_from_params(p.beta, p.R, p.sigma_R)  # (n, T) float64
    return y.mean(0).float(), y.std(0).clamp_min(1e-6).float()


def target_stats(cfg: TrainConfig) -> tuple[Tensor, Tensor]:
    """Target mean and std (T,) of the training prior: once, from a fixed seed, never a batch."""
    return _target_stats(cfg.data.prior_config(), cfg.target_stats_draws, 7)


class StreamBatches:
    """The training stream of one rank, generated in this process: ``feed(step)`` is the batch of
    ``stream_seed(base_seed, step, rank, world)``, the same batch the generator pool serves for that
    seed (``ray_jobs/pool.py``, recipe ``sevi-images``), so the two feeds are interchangeable."""

    def __init__(self, data: DataConfig, device, base_seed: int, rank: int = 0, world: int = 1):
        self.data, self.generator = data, make_generator(data, device)
        self.base_seed, self.rank, self.world = base_seed, rank, world
        self.wait_s = 0.0  # time spent generating (the consumer waits for all of it here)

    def __call__(self, step: int) -> dict:
        t0 = time.perf_counter()
        seed = stream_seed(self.base_seed, step, self.rank, self.world)
        out = make_batch(self.generator, self.data, seed)
        self.wait_s += time.perf_counter() - t0
        return {**out, "seed": seed}  # the loop records which batches the weights have seen
