"""Model input representations of accumulated SEVI images (pure torch, CPU or GPU, deterministic).

Input: counts (batch, G_in, G_in) or (G_in, G_in), any integer or float dtype, axis 0 = x,
axis 1 = z, both over [-1, 1] (generator.py's convention). G_in must be a multiple of the
representation's ``grid`` G: the image is first rebinned exactly to G x G (sum of k x k blocks,
k = G_in / G; a histogram at G is exactly the rebinned histogram at G_in). Anything else raises
ValueError.

Then, because every shell's distribution depends on cos(theta) only through even Legendre terms
and on phi not at all, the image is symmetric under x -> -x and z -> -z: the four quadrants are
folded (summed) into one (G/2, G/2) quadrant indexed by (|x|, |z|), which keeps all the
information and quarters the shot noise per pixel. Two representations are built on it:

  "fold":  the folded quadrant, (1, G/2, G/2); pixel (a, b) covers |x| in [a, a+1) * 2/G,
           |z| in [b, b+1) * 2/G.
  "polar": the folded quadrant resampled (bilinear, ``grid_sample``) at polar points
           r_k = (k + 1/2) / n_r (k < n_r, r in (0, 1)) and theta_j = (j + 1/2) / n_theta * pi/2
           (theta from the z axis), times r (the polar Jacobian, so a thin ring gives a line of
           constant weight): (1, n_r, n_theta). A shell becomes a horizontal line whose profile
           along theta is the projected angular distribution.

Scaling: density normalised by the image's own electron total (which is a property of the
measurement's length, not its physics) so pixels average ~1 over the folded quadrant, then
``scale="sqrt"`` (the default) compresses the bright thin rings against the dim projected
interior and makes Poisson noise roughly uniform (Anscombe). An empty image raises ValueError.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F

REPRESENTATIONS = ("fold", "polar")
SCALES = ("linear", "sqrt")


def rebin(counts: torch.Tensor, grid: int) -> torch.Tensor:
    """Exact rebinning (batch, G_in, G_in) -> (batch, grid, grid) by summing k x k blocks."""
    if counts.ndim != 3 or counts.shape[-1] != counts.shape[-2]:
        raise ValueError(f"expected square images (batch, G, G) or (G, G), got shape {tuple(counts.shape)}")
    g_in = counts.shape[-1]
    if g_in % grid:
        raise ValueError(f"an image grid of {g_in} x {g_in} does not rebin exactly to the model's {grid} x {grid} "
                         f"grid; the grid must be a multiple of {grid} (e.g. {grid}, {2 * grid}, {4 * grid})")
    k = g_in // grid
    if k == 1:
        return counts
    return counts.reshape(counts.shape[0], grid, k, grid, k).sum(dim=(2, 4))


def fold_quadrants(img: torch.Tensor) -> torch.Tensor:
    """(batch, G, G) -> (batch, G/2, G/2): the four quadrants summed, index (|x|, |z|)."""
    h = img.shape[-1] // 2
    lo, hi = slice(None, h), slice(h, None)
    return (img[:, hi, hi] + img[:, lo, hi].flip(1) + img[:, hi, lo].flip(2) + img[:, lo, lo].flip(1, 2))


@dataclass(frozen=True)
class Features:
    """Configure once, call many: ``Features("polar", 128)(counts) -> (batch, 1, H, W) float32``."""

    representation: str = "polar"  # "fold" or "polar" (module docstring)
    grid: int = 128  # G: images are rebinned exactly to G x G before folding
    n_r: int = 64  # polar only: radial samples over r in (0, 1)
    n_theta: int = 32  # polar only: angular samples over theta in (0, pi/2)
    scale: str = "sqrt"  # "linear" or "sqrt" of the normalised density

    def __post_init__(self):
        if self.representation not in REPRESENTATIONS:
            raise ValueError(f"representation must be one of {REPRESENTATIONS}, got {self.representation!r}")
        if self.scale not in SCALES:
            raise ValueError(f"scale must be one of {SCALES}, got {self.scale!r}")
        if self.grid < 2 or self.grid % 2:
            raise ValueError(f"grid must be even and >= 2, got {self.grid}")

    @property
    def shape(self) -> tuple[int, int, int]:
        """(C, H, W) of one model input."""
        if self.representation == "fold":
            return (1, self.grid // 2, self.grid // 2)
        return (1, self.n_r, self.n_theta)

    def _polar_grid(self, device) -> torch.Tensor:
        r = (torch.arange(self.n_r, device=device, dtype=torch.float32) + 0.5) / self.n_r
        th = (torch.arange(self.n_theta, device=device, dtype=torch.float32) + 0.5) / self.n_theta * (math.pi / 2)
        x = r[:, None] * torch.sin(th)[None, :]  # (n_r, n_theta), |x| in (0, 1)
        z = r[:, None] * torch.cos(th)[None, :]
        # grid_sample: last axis (W) is the quadrant's axis 1 = |z|, then H = |x|; [0, 1] -> [-1, 1]
        return torch.stack([2 * z - 1, 2 * x - 1], dim=-1)[None]  # (1, n_r, n_theta, 2)

    def __call__(self, counts: torch.Tensor) -> torch.Tensor:
        if counts.ndim == 2:
            counts = counts[None]
        img = rebin(counts, self.grid).to(torch.float32)  # (B, G, G); exact below 2^24 per pixel
        q = fold_quadrants(img)  # (B, G/2, G/2)
        total = q.sum(dim=(1, 2), keepdim=True)
        if bool((total <= 0).any()):
            raise ValueError("an image has no electrons; nothing to infer from")
        q = q * (q.shape[1] * q.shape[2] / total)  # mean pixel 1
        if self.representation == "fold":
            out = q[:, None]
        else:
            grid = self._polar_grid(q.device).expand(q.shape[0], -1, -1, -1)
            out = F.grid_sample(q[:, None], grid, mode="bilinear", padding_mode="zeros", align_corners=False)
            r = (torch.arange(self.n_r, device=q.device, dtype=torch.float32) + 0.5) / self.n_r
            out = out * (2 * r[:, None])  # Jacobian: weight per polar cell, ~1 on average over r
        if self.scale == "sqrt":
            out = out.clamp_min(0).sqrt()
        return out.contiguous()  # (B, 1, H, W)
