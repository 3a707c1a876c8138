"""Two-shell SEVI parameter sets and the prior they are drawn from.

The default prior is the one the course notes used for synthetic training data
(docs/prior.md): per shell, beta_{2i} (i = 1..12) from normals
truncated to the given limits, R ~ U(0.3, 0.9), sigma_R ~ U(0.005, 0.009) (detector units, the
field of view is [-1, 1]) and 1.8 to 2.5 million electrons per shell.

Draws whose angular density goes negative somewhere on [-1, 1] are not distributions: they are
rejected and drawn again (``ValidityCheck``), and the rejection rate is returned so that it can be
measured (README, BENCHMARKS.md). Shells are sorted by radius, smaller first, as in the course's
Answer files.

Parameters are drawn on the CPU in float64 from a seeded ``torch.Generator``, so a seed gives the
same parameter sets whatever device later renders them.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import torch

from sevi.physics.legendre import ValidityCheck

N_SHELLS = 2


@dataclass(frozen=True)
class PriorConfig:
    """Ranges and shapes of the parameter prior. Tuples hold one entry per beta_{2i}, i = 1..L."""

    # Truncation limits of each beta_{2i} (course notes).
    beta_low: tuple[float, ...] = (0.35, 0.43, 0.25, 0.118, 0.045, 0.012, 0.0026, 0.0004, 7e-5, 5.6e-6, 1.2e-7, 2e-9)
    beta_high: tuple[float, ...] = (1.0, 1.434, 1.24, 0.9, 0.6, 0.36, 0.2, 0.1, 0.045, 0.019, 0.0067, 0.0023)
    # Means and sigmas of the normals before truncation (course notes).
    beta_mean: tuple[float, ...] = (1.0, 0.85, 0.55, 0.25, 0.1, 0.04, 0.015, 0.002, 0.004, 0.0, 0.0, 0.0)
    beta_sigma: tuple[float, ...] = (0.65, 0.5, 0.5, 0.5, 0.5, 0.3, 0.2, 0.1, 0.05, 0.02, 0.01, 0.01)
    # Shell radius and its spread, uniform (detector units).
    radius_range: tuple[float, float] = (0.3, 0.9)
    sigma_r_range: tuple[float, float] = (0.005, 0.009)
    # Electrons per shell, uniform integers in [low, high] (course notes: 1.8 to 2.5 million).
    electrons_range: tuple[int, int] = (1_800_000, 2_500_000)
    # Smallest allowed |R1 - R2|; 0 keeps the notes' prior (nearly equal radii are allowed and
    # are the hardest case). Pairs closer than this are redrawn.
    min_separation: float = 0.0
    # Give up after this many rounds of redrawing rejected sets (a prior that almost never gives a
    # valid density is a configuration error, not something to loop on forever).
    max_rounds: int = 1000

    def __post_init__(self):
        n = len(self.beta_low)
        for name in ("beta_high", "beta_mean", "beta_sigma"):
            if len(getattr(self, name)) != n:
                raise ValueError(f"PriorConfig.{name} has {len(getattr(self, name))} entries, beta_low has {n}")
        if any(lo >= hi for lo, hi in zip(self.beta_low, self.beta_high)):
            raise ValueError("PriorConfig: every beta_low must be below its beta_high")
        if any(s <= 0 for s in self.beta_sigma):
            raise ValueError("PriorConfig.beta_sigma must be positive")
        lo, hi = self.radius_range
        if not 0 < lo <= hi:
            raise ValueError(f"PriorConfig.radius_range must satisfy 0 < low <= high, got {self.radius_range}")
        if not 0 < self.sigma_r_range[0] <= self.sigma_r_range[1]:
            raise ValueError(f"PriorConfig.sigma_r_range must be positive and ordered, got {self.sigma_r_range}")
        if not 0 < self.electrons_range[0] <= self.electrons_range[1]:
            raise ValueError(f"PriorConfig.electrons_range must be positive and ordered, got {self.electrons_range}")
        if self.min_separation > hi - lo:
            raise ValueError("PriorConfig.min_separation is larger than the radius range allows")

    @property
    def n_terms(self) -> int:
        """L, the number of even Legendre coefficients per shell."""
        return len(self.beta_low)

    def with_electrons(self, low: int, high: int | None = None) -> "PriorConfig":
        """The same prior with another electron count per shell (``high`` defaults to ``low``)."""
        return dataclasses.replace(self, electrons_range=(int(low), int(high if high is not None else low)))


@dataclass(frozen=True)
class ShellParams:
    """A batch of two-shell parameter sets, shells sorted by radius (smaller first).

    R, sigma_R: (n, 2) float64, detector units. beta: (n, 2, L) float64, beta_2 first.
    n_electrons: (n, 2) int64, electrons emitted per shell (before any detector losses).
    """

    R: torch.Tensor
    sigma_R: torch.Tensor
    beta: torch.Tensor
    n_electrons: torch.Tensor

    def __post_init__(self):
        n = self.R.shape[0]
        shapes = {"R": (n, N_SHELLS), "sigma_R": (n, N_SHELLS), "n_electrons": (n, N_SHELLS)}
        for name, shape in shapes.items():
            if tuple(getattr(self, name).shape) != shape:
                raise ValueError(f"ShellParams.{name} must have shape {shape}, got {tuple(getattr(self, name).shape)}")
        if self.beta.ndim != 3 or self.beta.shape[:2] != (n, N_SHELLS):
            raise ValueError(f"ShellParams.beta must have shape ({n}, 2, L), got {tuple(self.beta.shape)}")

    def __len__(self) -> int:
        return self.R.shape[0]

    def __getitem__(self, index) -> "ShellParams":
        if isinstance(index, int):
            index = slice(index, index + 1)
        return ShellParams(self.R[index], self.sigma_R[index], self.beta[index], self.n_electrons[index])

    @staticmethod
    def concat(parts: list["ShellParams"]) -> "ShellParams":
        return ShellParams(*(torch.cat([getattr(p, f.name) for p in parts]) for f in dataclasses.fields(ShellParams)))

    def sorted_by_radius(self) -> "ShellParams":
        order = self.R.argsort(dim=1)
        take = lambda t: t.gather(1, order)  # noqa: E731
        return ShellParams(take(self.R), take(self.sigma_R),
                           self.beta.gather(1, order[..., None].expand_as(self.beta)), take(self.n_electrons))


def _truncated_normal(mean, sigma, low, high, shape, gen) -> torch.Tensor:
    """Inverse-CDF draw from N(mean, sigma^2) truncated to [low, high]; float64, per last axis."""
    a = torch.special.ndtr((low - mean) / sigma)
    b = torch.special.ndtr((high - mean) / sigma)
    u = a + (b - a) * torch.rand(shape, dtype=torch.float64, generator=gen)
    return (mean + sigma * torch.special.ndtri(u)).clamp(low, high)


def _uniform(lo: float, hi: float, shape, gen) -> torch.Tensor:
    return lo + (hi - lo) * torch.rand(shape, dtype=torch.float64, generator=gen)


@dataclass(frozen=True)
class PriorDraw:
    """What ``sample_prior`` returns: the parameters and how many candidate shells it rejected."""

    params: ShellParams
    candidates: int  # shells drawn in all
    rejected_density: int  # shells rejected because I(x) < 0 somewhere
    rejected_separation: int  # pairs (counted as 2 shells) redrawn for |R1 - R2| < min_separation

    @property
    def rejection_rate(self) -> float:
        """Fraction of drawn shells whose beta set was not a valid density."""
        return self.rejected_density / max(self.candidates, 1)


class Prior:
    """Configure once (validity tables), call many: ``Prior(config)(n, seed)``."""

    def __init__(self, config: PriorConfig = PriorConfig(), check_device: torch.device | str = "cpu"):
        # Draws are made on the CPU (device-independent parameters); only the validity check, a
        # (sets x 8193) float64 evaluation, runs on ``check_device`` (a GPU does it ~100x faster).
        self.config = config
        self.check = ValidityCheck(config.n_terms, device=check_device)
        c = config
        self._t = {k: torch.tensor(getattr(c, k), dtype=torch.float64)
                   for k in ("beta_low", "beta_high", "beta_mean", "beta_sigma")}

    def _draw_betas(self, n: int, gen: torch.Generator) -> tuple[torch.Tensor, int, int]:
        """n valid beta sets (n, L), and the counts of candidates drawn and rejected."""
        t = self._t
        out, drawn, rejected = [], 0, 0
        need = n
        for _ in range(self.config.max_rounds):
            if need == 0:
                break
            beta = _truncated_normal(t["beta_mean"], t["beta_sigma"], t["beta_low"], t["beta_high"],
                                     (need, self.config.n_terms), gen)
            ok = self.check(beta).cpu()
            drawn += need
            rejected += int((~ok).sum())
            out.append(beta[ok])
            need -= int(ok.sum())
        else:
            if need:
                raise RuntimeError(f"prior gave no valid angular density in {self.config.max_rounds} rounds; "
                                   f"check beta_low/beta_high/beta_mean/beta_sigma")
        return torch.cat(out), drawn, rejected

    def __call__(self, n: int, seed: int) -> PriorDraw:
        """Draw n two-shell sets, deterministic for a seed (CPU float64 generator)."""
        if n < 0:
            raise ValueError(f"n must be >= 0, got {n}")
        c = self.config
        gen = torch.Generator().manual_seed(int(seed))
        R = _uniform(*c.radius_range, (n, N_SHELLS), gen)
        sep_redraws = 0
        if c.min_separation > 0:
            for _ in range(c.max_rounds):
                bad = (R[:, 0] - R[:, 1]).abs() < c.min_separation
                if not bad.any():
                    break
                sep_redraws += int(bad.sum())
                R[bad] = _uniform(*c.radius_range, (int(bad.sum()), N_SHELLS), gen)
            else:
                raise RuntimeError("could not draw radii with the requested min_separation")
        sigma_R = _uniform(*c.sigma_r_range, (n, N_SHELLS), gen)
        lo, hi = c.electrons_range
        n_el = torch.randint(lo, hi + 1, (n, N_SHELLS), generator=gen, dtype=torch.int64)
        beta, drawn, rejected = self._draw_betas(n * N_SHELLS, gen)
        params = ShellParams(R, sigma_R, beta.reshape(n, N_SHELLS, c.n_terms), n_el).sorted_by_radius()
        return PriorDraw(params, drawn, rejected, 2 * sep_redraws)

    def mean_beta(self) -> torch.Tensor:
        """Mean of each truncated normal (L,): the 'predict the prior mean' baseline."""
        t = self._t
        a = (t["beta_low"] - t["beta_mean"]) / t["beta_sigma"]
        b = (t["beta_high"] - t["beta_mean"]) / t["beta_sigma"]
        pdf = lambda v: torch.exp(-0.5 * v**2) / (2 * torch.pi) ** 0.5  # noqa: E731
        z = torch.special.ndtr(b) - torch.special.ndtr(a)
        return t["beta_mean"] + t["beta_sigma"] * (pdf(a) - pdf(b)) / z
