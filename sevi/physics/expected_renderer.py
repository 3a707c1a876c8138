"""Detector images drawn from the exact expected image: a cost set by the pixels, not the electrons.

The histogram of N independent electrons is a multinomial draw over pixels (plus "out of view")
whose probabilities are the expected image divided by N (``sevi.physics.forward``). Drawing each pixel
from a Poisson law of mean mu instead is the same distribution except that the total is Poisson(N)
instead of exactly N: at the course's 1.8-2.5e6 electrons per shell the total's relative spread is
7e-4, far inside the prior's own spread of N. Sums of independent Poisson counts are Poisson, so a
draw at grid G is exactly the rebinned draw at any multiple of G: a renderer may work at the
resolution the model reads. Backends (``RENDER_BACKENDS``):

  "itm":      ``sevi.physics.generator.SeviGenerator``, inverse-transform sampling of every electron (the
              reference; the default everywhere);
  "poisson":  int32 counts, Poisson per pixel around the expected image (this module);
  "expected": the expected image itself, float32, no noise (for fits and checks).

The interface is the generator's: ``render(params, seed) -> RenderResult``, ``__call__(seed, n)``,
``.config``, ``.prior`` and ``.device``, so training and the pool's recipes take either.
"""

from __future__ import annotations

import torch

from sevi.physics.forward import ExpectedImage, ForwardConfig
from sevi.physics.generator import (
    GeneratorConfig,
    RenderResult,
    SeviGenerator,
    draw_and_render,
    normalise_images,
)
from sevi.physics.prior import Prior, PriorConfig, ShellParams
from sevi.runtime.device import pick_device

RENDER_BACKENDS = ("itm", "poisson", "expected")


def RENDER_ACCURACY(grid: int, n_terms: int) -> ForwardConfig:
    """The forward model's settings for rendering: coarser than the defaults (about 1e-3 of the
    brightest pixel against < 1e-4; tests/sevi/physics/test_expected_renderer.py measures it) for 3x the
    speed, far inside the Poisson noise of any pixel that holds more than a few counts."""
    return ForwardConfig(grid=grid, n_terms=n_terms, subpixel_per_sigma=1.5, table_step_sigmas=1 / 16,
                         panel_nodes=4, hermite_nodes=16)


class ExpectedRenderer:
    """Configure once, call many: ``ExpectedRenderer(config, device, prior_config, "poisson")(seed, n)``."""

    def __init__(self, config: GeneratorConfig = GeneratorConfig(), device: str | torch.device = "auto",
                 prior_config: PriorConfig = PriorConfig(), mode: str = "poisson"):
        if mode not in ("poisson", "expected"):
            raise ValueError(f"ExpectedRenderer mode must be 'poisson' or 'expected', got {mode!r}")
        if config.grid % 2:
            raise ValueError(f"the expected-image renderer needs an even grid, got {config.grid}")
        self.config = config
        self.mode = mode
        self.device = pick_device(device)
        self.prior = Prior(prior_config, check_device=self.device)
        self.model = ExpectedImage(RENDER_ACCURACY(config.grid, prior_config.n_terms), self.device)

    def render(self, params: ShellParams, seed: int) -> RenderResult:
        """(batch, G, G) int32 Poisson counts (or float32 expected counts) and out_of_view (batch,) int64:
        a Poisson draw (or the rounded mean) of the electrons that miss the field."""
        mu = self.model(params, check=False)  # (B, G, G) float64; prior draws are valid by construction
        lost = (params.n_electrons.sum(1).to(self.device, torch.float64) - mu.sum(dim=(1, 2))).clamp_min(0)
        if self.mode == "expected":
            images, out = mu.to(torch.float32), lost.round().to(torch.int64)
        else:
            gen = torch.Generator(device=self.device).manual_seed(int(seed))
            images = torch.poisson(mu, generator=gen).to(torch.int32)
            out = torch.poisson(lost, generator=gen).to(torch.int64)
        if self.config.normalise:
            images = normalise_images(images)
        return RenderResult(images, out)

    __call__ = draw_and_render


def make_renderer(backend: str, config: GeneratorConfig = GeneratorConfig(), device: str | torch.device = "auto",
                  prior_config: PriorConfig = PriorConfig()):
    """The renderer of a backend name (module docstring); ``itm`` is the reference generator."""
    if backend == "itm":
        return SeviGenerator(config, device, prior_config)
    if backend in ("poisson", "expected"):
        return ExpectedRenderer(config, device, prior_config, backend)
    raise ValueError(f"render backend must be one of {RENDER_BACKENDS}, got {backend!r}")
