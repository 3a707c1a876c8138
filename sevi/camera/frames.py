"""Camera frames from electron hits: the course's spot model, batched in torch.

Conventions (fixed for the whole suite):

* Detector coordinates ``x, z`` in detector units, field of view ``[-1, 1]^2``; ``z`` is the
  laser polarisation axis.
* A frame is a ``(G, G)`` ``uint8`` image, ``G = 1024``; axis 0 is ``x``, axis 1 is ``z``.
  Pixel ``i`` covers ``[-1 + i*2/G, -1 + (i+1)*2/G)`` so its centre is ``-1 + (i + 0.5)*2/G``:
  the binning of ``np.histogram2d(x, z, bins=G, range=[[-1, 1], [-1, 1]])``.
  One detector unit is ``G/2`` pixels.

The spot model (docs/camera.md): each detected electron adds

    A * exp(-(dx^2 + dz^2 + 2 rho dx dz) / (2 sigma^2))

with ``A ~ N(100, 10^2)`` clipped at 0, ``sigma ~ N(0.015, 0.001^2)`` detector units (about
7.7 px), ``rho ~ N(0, 0.1^2)`` clipped to ``[-1, 1]``; the intensity is averaged over a 5 x 5
sub-pixel grid; a background ``N(20, 20^2)`` is added per pixel; values are rounded and clipped
to ``0..255``. About 10% of electrons are not detected. Spots add linearly and saturate.

Spots are rendered only in a ``(2h+1, 2h+1)`` pixel window around each electron (``h =
FrameModel.window_half_px``) and scatter-added, so the cost is per electron, not per pixel.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from sevi.runtime.device import pick_device

__all__ = [
    "FrameModel",
    "render_frames",
    "simulate_frames",
    "draw_disc_hits",
    "draw_shell_hits", "draw_prior_hits",
    "to_pixel",
    "to_detector",
]


@dataclass(frozen=True)
class FrameModel:
    """The camera's spot model; every default is the course's generator (docs/camera.md)."""

    grid: int = 1024              # frame side in px; docs/formats.md: FinalImage is 1024 x 1024
    amp_mean: float = 100.0       # spot peak A ~ N(100, 10^2), counts; docs/camera.md
    amp_std: float = 10.0         # docs/camera.md
    sigma_mean: float = 0.015     # spot sigma ~ N(0.015, 0.001^2), detector units; docs/camera.md
    sigma_std: float = 0.001      # docs/camera.md
    rho_std: float = 0.1          # spot correlation rho ~ N(0, 0.1^2), clipped to [-1, 1]; docs/camera.md
    subpixel: int = 5             # intensity averaged on a 5 x 5 sub-pixel grid; docs/camera.md
    background_mean: float = 20.0  # per-pixel background N(20, 20^2), counts; docs/camera.md
    background_std: float = 20.0   # docs/camera.md
    detect_prob: float = 0.9      # "about 10% of electrons are not detected"; docs/camera.md
    # Ours: the spot is cut at 28 px from its centre, 3.6 sigma of a mean spot (7.7 px) and
    # 3 sigma of a +3-sigma-wide one; the cut tail is < 1 count, far under the noise (20) and
    # the rounding. Cost grows as (2h+1)^2 * subpixel^2 per electron.
    window_half_px: int = 28

    def __post_init__(self) -> None:
        if self.grid < 8:
            raise ValueError(f"FrameModel.grid must be >= 8 px, got {self.grid}")
        if not 0.0 <= self.detect_prob <= 1.0:
            raise ValueError(f"FrameModel.detect_prob must be in [0, 1], got {self.detect_prob}")
        if self.subpixel < 1 or self.window_half_px < 1:
            raise ValueError(
                f"FrameModel.subpixel and window_half_px must be >= 1, got "
                f"{self.subpixel}, {self.window_half_px}")
        if self.sigma_mean <= 0 or self.amp_std < 0 or self.sigma_std < 0 or self.rho_std < 0:
            raise ValueError(f"FrameModel: widths must be >= 0 and sigma_mean > 0: {self}")

    @property
    def px_per_unit(self) -> float:
        """Pixels per detector unit, ``G / 2``."""
        return self.grid / 2.0


def to_pixel(coord: torch.Tensor, grid: int) -> torch.Tensor:
    """Detector units -> continuous pixel coordinate, pixel ``i``'s centre at ``i``."""
    return (coord + 1.0) * (grid / 2.0) - 0.5


def to_detector(pixel: torch.Tensor, grid: int) -> torch.Tensor:
    """Continuous pixel coordinate (pixel ``i``'s centre at ``i``) -> detector units."""
    return -1.0 + (pixel + 0.5) * (2.0 / grid)


def render_frames(
    x: torch.Tensor,
    z: torch.Tensor,
    frame: torch.Tensor,
    n_frames: int,
    model: FrameModel = FrameModel(),
    *,
    generator: torch.Generator,
    spot_chunk: int = 16,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Render camera frames from electron hits with the course's spot model.

    Args:
        x, z: ``(N,)`` hit positions in detector units (any float dtype).
        frame: ``(N,)`` integer frame index of each hit, in ``[0, n_frames)``.
        n_frames: number of frames ``B`` to make.
        model: the spot model.
        generator: a ``torch.Generator`` on the device to render on; all random draws come from
            it in a fixed order, so a seed gives the same frames on a given device.
        spot_chunk: spots rendered per step; bounds memory to about
            ``spot_chunk * ((2h+1) * subpixel)^2 * 4`` bytes. The frames do not depend on it (all
            draws come first). 16 is ~3x faster than 256 on the CPU (cache-sized steps: 78 against
            228 ms per frame, one thread); a GPU may want more.

    Returns:
        frames: ``(B, G, G)`` ``uint8`` on the generator's device, axis 1 = x, axis 2 = z.
        detected: ``(N,)`` bool, which electrons made a spot. An electron is undetected with
            probability ``1 - detect_prob``, or when its centre is outside ``[-1, 1)^2``.
    """
    device = generator.device
    G, h, S = model.grid, model.window_half_px, model.subpixel
    x = torch.as_tensor(x, device=device).to(torch.float32).reshape(-1)
    z = torch.as_tensor(z, device=device).to(torch.float32).reshape(-1)
    frame = torch.as_tensor(frame, device=device).to(torch.int64).reshape(-1)
    if not (x.shape == z.shape == frame.shape):
        raise ValueError(f"x, z, frame must have one shape, got {x.shape}, {z.shape}, {frame.shape}")
    n = x.shape[0]
    if n and (int(frame.min()) < 0 or int(frame.max()) >= n_frames):
        raise ValueError(f"frame indices must be in [0, {n_frames}), got "
                         f"[{int(frame.min())}, {int(frame.max())}]")

    # Random draws, always in this order and for every electron (detected or not), so the
    # frames are a pure function of (hits, model, seed, device).
    detected = torch.rand(n, generator=generator, device=device) < model.detect_prob
    amp = (model.amp_mean + model.amp_std * torch.randn(n, generator=generator, device=device)).clamp_min(0)
    sigma = model.sigma_mean + model.sigma_std * torch.randn(n, generator=generator, device=device)
    sigma = sigma.clamp_min(1e-6)
    rho = (model.rho_std * torch.randn(n, generator=generator, device=device)).clamp(-1.0, 1.0)
    background = torch.randn((n_frames, G, G), generator=generator, device=device)

    px, pz = to_pixel(x, G), to_pixel(z, G)
    inside = (x >= -1) & (x < 1) & (z >= -1) & (z < 1)
    detected &= inside

    # Accumulator padded by h on each side so every window lands inside it.
    P = G + 2 * h
    acc = torch.zeros(n_frames * P * P, device=device, dtype=torch.float32)
    idx = torch.nonzero(detected).reshape(-1)
    u = torch.arange(-h, h + 1, device=device)                              # (W,) px offsets
    sub = (torch.arange(S, device=device, dtype=torch.float32) + 0.5) / S - 0.5  # (S,) in px
    scale = model.px_per_unit
    for start in range(0, idx.numel(), spot_chunk):
        k = idx[start:start + spot_chunk]                                   # (n,)
        ci, cj = px[k].round().long(), pz[k].round().long()                 # window centre px
        # Sub-pixel sample positions relative to the hit, in px: (n, W, S)
        dx = (ci[:, None, None] + u[None, :, None]) + sub[None, None, :] - px[k][:, None, None]
        dz = (cj[:, None, None] + u[None, :, None]) + sub[None, None, :] - pz[k][:, None, None]
        s_px = (sigma[k] * scale)[:, None, None, None, None]
        r = rho[k][:, None, None, None, None]
        dxe, dze = dx[:, :, :, None, None], dz[:, None, None, :, :]           # (n, W, S, W, S)
        q = (dxe * dxe + dze * dze + 2.0 * r * dxe * dze) / (2.0 * s_px * s_px)
        patch = torch.exp(-q).mean(dim=(2, 4)) * amp[k][:, None, None]      # (n, W, W)
        rows = (ci[:, None] + u[None, :] + h).clamp(0, P - 1)               # (n, W)
        cols = (cj[:, None] + u[None, :] + h).clamp(0, P - 1)
        flat = (frame[k][:, None, None] * P + rows[:, :, None]) * P + cols[:, None, :]
        acc.index_add_(0, flat.reshape(-1), patch.reshape(-1))
    signal = acc.view(n_frames, P, P)[:, h:h + G, h:h + G]
    img = signal + model.background_mean + model.background_std * background
    frames = img.round_().clamp_(0, 255).to(torch.uint8)
    return frames, detected


def simulate_frames(
    x: torch.Tensor,
    z: torch.Tensor,
    frame: torch.Tensor,
    n_frames: int,
    model: FrameModel = FrameModel(),
    *,
    seed: int = 0,
    device: torch.device | str | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """:func:`render_frames` with a fresh generator seeded with ``seed`` on ``device``
    (default: cuda when available, else cpu)."""
    device = torch.device(device) if device is not None else pick_device()
    gen = torch.Generator(device=device)
    gen.manual_seed(int(seed))
    return render_frames(x, z, frame, n_frames, model, generator=gen)


def draw_disc_hits(
    n_frames: int, per_frame: float, *, radius: float = 0.95, generator: torch.Generator,
    poisson: bool = True,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Hits uniform in the disc of ``radius`` (detector units).

    Returns ``(x, z, frame)``, each ``(N,)``: float64 positions and int64 frame indices,
    sorted by frame. ``per_frame`` is the mean count (Poisson) or the exact count.
    """
    device = generator.device
    counts = _counts(n_frames, per_frame, poisson, generator)
    n = int(counts.sum())
    r = radius * torch.sqrt(torch.rand(n, generator=generator, device=device, dtype=torch.float64))
    phi = 2 * math.pi * torch.rand(n, generator=generator, device=device, dtype=torch.float64)
    frame = torch.repeat_interleave(torch.arange(n_frames, device=device), counts)
    return r * torch.cos(phi), r * torch.sin(phi), frame


def draw_shell_hits(
    n_frames: int, per_frame: float, *, radii: tuple[float, float] = (0.45, 0.8),
    sigma_r: float = 0.007, beta2: tuple[float, float] = (1.0, -0.5),
    generator: torch.Generator, poisson: bool = True,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Hits from two Newton spheres projected on the detector (docs/conventions.md).

    Shell j (chosen with equal odds): ``r ~ N(R_j, sigma_r^2)``, ``cos(theta)`` with density
    ``1/2 + beta2_j P2(cos theta)`` (rejection sampling; needs ``-1 <= beta2 <= 2``), ``phi ~ U(0,
    2 pi)``; ``x = r sin(theta) cos(phi)``, ``z = r cos(theta)``. Only ``beta2``: a test load, not
    the full prior. Returns ``(x, z, frame)`` as :func:`draw_disc_hits`.
    """
    device = generator.device
    counts = _counts(n_frames, per_frame, poisson, generator)
    n = int(counts.sum())
    shell = torch.randint(0, 2, (n,), generator=generator, device=device)
    R = torch.tensor(radii, device=device, dtype=torch.float64)[shell]
    b2 = torch.tensor(beta2, device=device, dtype=torch.float64)[shell]
    r = R + sigma_r * torch.randn(n, generator=generator, device=device, dtype=torch.float64)
    # Rejection sampling of cos(theta): envelope 1/2 + max(b2, 0) >= density everywhere.
    c = torch.empty(n, device=device, dtype=torch.float64)
    todo = torch.ones(n, dtype=torch.bool, device=device)
    while bool(todo.any()):
        m = int(todo.sum())
        cand = 2 * torch.rand(m, generator=generator, device=device, dtype=torch.float64) - 1
        dens = 0.5 + b2[todo] * 0.5 * (3 * cand * cand - 1)
        env = 0.5 + b2[todo].clamp_min(0)
        ok = torch.rand(m, generator=generator, device=device, dtype=torch.float64) * env < dens
        where = torch.nonzero(todo).reshape(-1)
        c[where[ok]] = cand[ok]
        todo[where[ok]] = False
    phi = 2 * math.pi * torch.rand(n, generator=generator, device=device, dtype=torch.float64)
    s = torch.sqrt((1 - c * c).clamp_min(0))
    frame = torch.repeat_interleave(torch.arange(n_frames, device=device), counts)
    return r * s * torch.cos(phi), r * c, frame


def draw_prior_hits(
    n_frames: int, per_frame: float, *, generator: torch.Generator, frames_per_draw: int = 10,
    seed: int = 0, poisson: bool = True,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Hits of measurements drawn from the notes' prior (docs/prior.md), the course's test load.

    Every block of ``frames_per_draw`` frames is one measurement: a two-shell parameter set drawn
    from :class:`sevi.physics.prior.Prior` (seed ``seed``; R ~ U(0.3, 0.9), the notes' beta prior), its
    electrons sampled by :class:`sevi.physics.generator.SeviGenerator` (both shells equally likely),
    shuffled and dealt to the block's frames. Returns ``(x, z, frame)`` as :func:`draw_disc_hits`.
    """
    from sevi.physics.generator import GeneratorConfig, SeviGenerator
    from sevi.physics.prior import Prior, ShellParams

    device = generator.device
    counts = _counts(n_frames, per_frame, poisson, generator)
    n_draws = -(-n_frames // frames_per_draw)
    block = torch.arange(n_frames, device=device) // frames_per_draw
    per_draw = torch.zeros(n_draws, dtype=torch.long, device=device).index_add_(0, block, counts).cpu()
    p = Prior()(n_draws, seed).params
    n_el = torch.stack([per_draw // 2, per_draw - per_draw // 2], 1)
    gen = SeviGenerator(GeneratorConfig(), device=device)
    x, z, img, _ = gen.sample_electrons(ShellParams(p.R, p.sigma_R, p.beta, n_el), seed)
    # Shuffle within each measurement (the generator numbers electrons shell after shell).
    key = img.double() + torch.rand(img.numel(), generator=generator, device=device, dtype=torch.float64)
    order = torch.argsort(key)
    frame = torch.repeat_interleave(torch.arange(n_frames, device=device), counts)
    return x[order].double(), z[order].double(), frame


def _counts(n_frames: int, per_frame: float, poisson: bool, generator: torch.Generator) -> torch.Tensor:
    device = generator.device
    if poisson:
        rate = torch.full((n_frames,), float(per_frame), device=device)
        return torch.poisson(rate, generator=generator).long()
    return torch.full((n_frames,), int(round(per_frame)), device=device, dtype=torch.long)
