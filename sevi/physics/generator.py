"""Batched inverse-transform sampler and detector-image renderer (torch, CUDA or CPU).

For each shell of each image:
  cos(theta) ~ I(x) = 1/2 + sum_i beta_{2i} P_{2i}(x), drawn by the inverse-transform method;
  r ~ N(R, sigma_R^2) (|r| is taken, so a draw below zero lands on the far side of the origin);
  phi ~ U(0, 2 pi);
  detector position x = r sin(theta) cos(phi), z = r cos(theta)  (z: the polarisation axis).

Images are (batch, G, G) with axis 0 = x and axis 1 = z, both from -1 to +1: pixel (i, k) counts
electrons with -1 + i 2/G <= x < -1 + (i+1) 2/G, the same binning as
``np.histogram2d(x, z, bins=G, range=[[-1, 1], [-1, 1]])`` in the course's files. Electrons that
fall outside the field of view are counted in ``RenderResult.out_of_view`` (never silently lost).

Inverse transform: the CDF of I is exact in closed form (``angular_cdf``); it is tabulated on
``cdf_nodes`` points of x, inverted at ``inverse_nodes`` equally spaced probabilities, and a
uniform u is mapped by linear interpolation in that inverse table: one gather and one lerp per
electron, O(1) whatever the table size. Each u-bin carries exactly 1/inverse_nodes of the
probability; only the placement within a bin is linearised.

Memory: electrons are drawn and histogrammed ``chunk_electrons`` at a time across the whole batch,
so memory is the output images plus a fixed chunk, whatever the electron count. The default chunk
depends on the device (``default_chunk_electrons``): 2^16 electrons on a CPU, where a chunk's
temporaries (a few MB) then stay in cache and are reused from the heap; 2^22 on a GPU, where fewer,
larger kernels pay. On the CPU the 2^22 chunk's temporaries (hundreds of MB) were mapped afresh for
every chunk: 6 images of 1024^2 / 2e6 took 652,439 page faults and 0.99 s of system time with two
threads (5.2 images/s), against 11,232 faults and 0.03 s with 2^16 (14.0 images/s;
``tools/bench_generate.py``, BENCHMARKS.md section 1).

Determinism: one ``torch.Generator`` on the render device, seeded per call, draws the chunks in a
fixed order, and counts are integer additions, so a (parameters, seed, device, chunk size) gives
the same images every time (the chunk size sets how the random stream is cut, so a different chunk
gives other draws from the same distribution).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from sevi.physics.legendre import cdf_basis
from sevi.physics.prior import Prior, PriorConfig, ShellParams
from sevi.runtime.device import pick_device


@dataclass(frozen=True)
class GeneratorConfig:
    """How images are rendered. The parameter prior is a separate ``PriorConfig``."""

    grid: int = 1024  # G: pixels per side over [-1, 1] (course: 1024; 256 and 512 also used)
    cdf_nodes: int = 4097  # x nodes of the exact CDF table per shell
    inverse_nodes: int = 8192  # probability nodes of the inverse-CDF table per shell
    chunk_electrons: int | None = None  # electrons drawn per step across the batch; None: by device
    normalise: bool = False  # False: integer counts; True: float images scaled to a total of 255

    def __post_init__(self):
        if self.grid < 2:
            raise ValueError(f"GeneratorConfig.grid must be >= 2, got {self.grid}")
        if self.cdf_nodes < 3 or self.inverse_nodes < 2:
            raise ValueError("GeneratorConfig.cdf_nodes must be >= 3 and inverse_nodes >= 2")
        if self.chunk_electrons is not None and self.chunk_electrons < 1:
            raise ValueError("GeneratorConfig.chunk_electrons must be positive")


@dataclass(frozen=True)
class RenderResult:
    """images: (batch, G, G) int32 counts, or float32 summing to 255 when normalised.
    out_of_view: (batch,) int64 electrons that missed the [-1, 1]^2 field of view."""

    images: torch.Tensor
    out_of_view: torch.Tensor


CPU_CHUNK_ELECTRONS = 1 << 16  # a chunk's temporaries in cache and in the heap (see the module)
GPU_CHUNK_ELECTRONS = 1 << 22  # fewer, larger kernels


def default_chunk_electrons(device: torch.device) -> int:
    """Electrons per chunk when the config names none: by the render device (see the module)."""
    return CPU_CHUNK_ELECTRONS if torch.device(device).type == "cpu" else GPU_CHUNK_ELECTRONS


def normalise_images(counts: torch.Tensor, total: float = 255.0) -> torch.Tensor:
    """Scale each (G, G) image of a (batch, G, G) stack to sum to ``total`` (course convention)."""
    s = counts.sum(dim=(-2, -1), keepdim=True).clamp_min(1)
    return counts.to(torch.float32) * (total / s.to(torch.float32))


def draw_and_render(renderer, seed: int, n: int) -> tuple[RenderResult, ShellParams]:
    """Draw n parameter sets from ``renderer.prior`` with ``seed`` and render them with the same seed
    (every renderer's ``__call__``: SeviGenerator here, ExpectedRenderer in sevi/physics/expected_renderer.py)."""
    params = renderer.prior(n, seed).params
    return renderer.render(params, seed), params


class SeviGenerator:
    """Configure once, call many.

    ``SeviGenerator(config, device, prior_config)(seed, n)`` draws n parameter sets from the prior
    and renders them; ``render(params, seed)`` renders given parameters.
    """

    def __init__(self, config: GeneratorConfig = GeneratorConfig(), device: str | torch.device = "auto",
                 prior_config: PriorConfig = PriorConfig()):
        self.config = config
        self.device = pick_device(device)
        self.prior = Prior(prior_config, check_device=self.device)
        self._x_nodes = torch.linspace(-1.0, 1.0, config.cdf_nodes, dtype=torch.float64, device=self.device)
        self._u_nodes = torch.linspace(0.0, 1.0, config.inverse_nodes, dtype=torch.float64, device=self.device)
        self._cdf_basis: dict[int, torch.Tensor] = {}  # L -> (K, L) antiderivatives at the x nodes

    def _basis(self, n_terms: int) -> torch.Tensor:
        if n_terms not in self._cdf_basis:
            self._cdf_basis[n_terms] = cdf_basis(self._x_nodes, n_terms)
        return self._cdf_basis[n_terms]

    # -- tables -----------------------------------------------------------------------------
    def inverse_cdf_tables(self, beta: torch.Tensor) -> torch.Tensor:
        """Inverse-CDF tables x(u) at ``inverse_nodes`` equally spaced u: (n_shells, M) float32.

        beta: (n_shells, L). The exact CDF at the x nodes is inverted by linear interpolation.
        """
        beta = beta.to(self.device, torch.float64)
        cdf = 0.5 * (self._x_nodes + 1) + beta @ self._basis(beta.shape[-1]).T  # (S, K), exact CDF
        # Rounding can make the CDF dip by ~1e-16; keep it a monotone map onto [0, 1].
        cdf = torch.cummax(cdf.clamp(0.0, 1.0), dim=-1).values
        cdf[:, 0], cdf[:, -1] = 0.0, 1.0
        u = self._u_nodes.expand(beta.shape[0], -1).contiguous()  # (S, M)
        k = torch.searchsorted(cdf, u, right=True).clamp(1, self.config.cdf_nodes - 1)  # (S, M)
        c0, c1 = cdf.gather(1, k - 1), cdf.gather(1, k)
        x0, x1 = self._x_nodes[k - 1], self._x_nodes[k]
        w = ((u - c0) / (c1 - c0).clamp_min(1e-300)).clamp(0.0, 1.0)
        return (x0 + w * (x1 - x0)).to(torch.float32)

    # -- sampling ---------------------------------------------------------------------------
    def _shell_rows(self, params: ShellParams) -> torch.Tensor:
        """Per shell and inverse-table node: [x_k, x_{k+1} - x_k, R, sigma_R], (S * M, 4) float32.

        One row gather per electron then yields its table segment and its shell's radius law.
        """
        tables = self.inverse_cdf_tables(params.beta.reshape(-1, params.beta.shape[-1]))  # (S, M)
        slope = torch.zeros_like(tables)
        slope[:, :-1] = tables[:, 1:] - tables[:, :-1]
        R = params.R.reshape(-1, 1).to(self.device, torch.float32).expand_as(tables)
        sigma_R = params.sigma_R.reshape(-1, 1).to(self.device, torch.float32).expand_as(tables)
        return torch.stack([tables, slope, R, sigma_R], dim=-1).reshape(-1, 4)

    def _iter_chunks(self, params: ShellParams, seed: int):
        """Yields (x, z, r, shell_index) per chunk of electrons, shell index = 2 * image + shell.

        Electrons are numbered shell after shell; a chunk takes the next ``chunk_electrons``.
        """
        rows = self._shell_rows(params)
        m = self.config.inverse_nodes
        counts = params.n_electrons.reshape(-1).to(self.device)
        if (counts < 0).any():
            raise ValueError("n_electrons must be >= 0")
        ends = torch.cumsum(counts, 0)
        begins = ends - counts
        total = int(ends[-1]) if len(ends) else 0
        shells = torch.arange(len(counts), device=self.device)
        gen = torch.Generator(device=self.device).manual_seed(int(seed))
        step = self.config.chunk_electrons or default_chunk_electrons(self.device)
        for start in range(0, total, step):
            stop = min(start + step, total)
            n = stop - start
            in_chunk = ends.clamp(start, stop) - begins.clamp(start, stop)  # (S,) electrons of each shell here
            shell = torch.repeat_interleave(shells, in_chunk, output_size=n)  # (n,)
            u = torch.rand(2, n, device=self.device, generator=gen)  # cos(theta) quantile, phi / 2 pi
            pos = u[0].mul_(m - 1)
            k = pos.long().clamp_max_(m - 2)
            frac = pos.sub_(k)
            row = rows.index_select(0, shell * m + k)  # (n, 4)
            cos_t = torch.addcmul(row[:, 0], frac, row[:, 1]).clamp_(-1.0, 1.0)
            r = torch.randn(n, device=self.device, generator=gen).mul_(row[:, 3]).add_(row[:, 2]).abs_()
            sin_t = cos_t.square().neg_().add_(1.0).clamp_min_(0.0).sqrt_()
            x = u[1].mul_(2 * math.pi).cos_().mul_(sin_t).mul_(r)
            z = cos_t.mul(r)
            yield x, z, r, shell

    def sample_electrons(self, params: ShellParams, seed: int):
        """All electrons of a small batch as (x, z, image_index, shell_index) tensors on the device.

        The same draws as ``render`` for the same seed. For tests and the frame simulator: memory
        grows with the electron count, so use ``render`` for images.
        """
        xs, zs, img, sh = [], [], [], []
        for x, z, _, shell in self._iter_chunks(params, seed):
            xs.append(x), zs.append(z), img.append(shell // 2), sh.append(shell % 2)
        cat = lambda v, dt: torch.cat(v) if v else torch.zeros(0, dtype=dt, device=self.device)  # noqa: E731
        return cat(xs, torch.float32), cat(zs, torch.float32), cat(img, torch.int64), cat(sh, torch.int64)

    def render(self, params: ShellParams, seed: int) -> RenderResult:
        """Histogram both shells of every parameter set onto a (batch, G, G) image stack."""
        g = self.config.grid
        n = len(params)
        counts = torch.zeros(n * g * g, dtype=torch.int32, device=self.device)
        out_of_view = torch.zeros(n, dtype=torch.int64, device=self.device)
        half = g / 2
        for x, z, r, shell in self._iter_chunks(params, seed):
            # Pixel indices from float64 (exact for a float32 x; float32 arithmetic would round
            # x + 1 across a pixel edge now and then), then integers: a float32 flat index
            # (row * G + column) is inexact past 2^24, i.e. for every grid above 4096.
            ix = x.double().add_(1.0).mul_(half).floor_().long()  # pixel row (x)
            iz = z.double().add_(1.0).mul_(half).floor_().long()  # pixel column (z)
            img = shell >> 1
            # |x|, |z| <= r: with every r safely below 1 no electron can leave the field of view.
            if float(r.max()) >= 0.999:
                inside = (ix >= 0) & (ix < g) & (iz >= 0) & (iz < g)
                out_of_view += torch.bincount(img[~inside], minlength=n)
                ix, iz, img = ix[inside], iz[inside], img[inside]
            flat = ix.mul_(g).add_(iz).add_(img * (g * g))
            counts.index_add_(0, flat, torch.ones_like(flat, dtype=torch.int32))
        images = counts.view(n, g, g)
        if self.config.normalise:
            images = normalise_images(images)
        return RenderResult(images, out_of_view)

    __call__ = draw_and_render
