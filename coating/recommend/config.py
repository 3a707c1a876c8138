"""The recommender's settings: one frozen config, built by ``coating recommend`` from its flags.

Plain data with no heavy imports, so the CLI can show the defaults in ``--help`` without loading
torch. ``coating.recommend`` reads its defaults from here and the closed-loop benchmark
(``coating.recommend.closed_loop``) uses the same values, so the benchmark measures what ships.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

__all__ = ["RecommendConfig", "RecommendConfigError"]


class RecommendConfigError(ValueError):
    """A field out of range: ``field``, the ``value`` given and what is ``expected`` (the CLI
    names its flag instead of the field)."""

    def __init__(self, field: str, value, expected: str):
        self.field, self.value, self.expected = field, value, expected
        super().__init__(f"{field} {value}: expected {expected}")


@dataclass(frozen=True)
class RecommendConfig:
    """How ``coating recommend`` plans a run (docs/coating.md, "Recommendation")."""
    # Robust design: draws of the run's own deposition errors over which the expected dE00^2 is
    # minimised (grey box only; 0 = nominal design). 32 measured in closed loop (BENCHMARKS.md,
    # section 5).
    robust_draws: int = 32
    # Weight of the spectral distance to the standard against dE00^2. Lower values let the robust
    # design trade curve shape for colour consistency; 0.01 against the earlier 0.05 lowered the
    # p90 of next-run dE00 on held-out plants at the same median (BENCHMARKS.md, section 5).
    spectral_weight: float = 0.01
    # Bounds: the cycle's median settings -+ this fraction (a cleaning moves the calibration by a
    # few percent).
    bound_rel: float = 0.15
    # Largest change per run, as a fraction of the median settings (operators move settings by
    # about 1 % a run).
    max_step_rel: float = 0.03
    # Bring the cycle model up to date before planning (False: the registry model as it is).
    fine_tune: bool = True
    # Grey box: fit it again on all the cycle's runs so far (False: filter steps instead).
    refit: bool = True
    # How sure (coating.recommend.uncertainty): draws of the next run's unknowns behind the 90 %
    # interval of its dE00; the scales, in units of the model's walk_sd, of the common tooling
    # step and of each layer's tooling error, the scale of the run's own errors, and the factor
    # on the interval's lower end. Calibrated in closed loop on plants 0-3 (2 cycles x 20 runs x
    # 2 sides each: 320 run-sides) so that 5 % of measured next-run dE00 fall below and 5 %
    # above: the draws' 95 % quantile at these scales left 5.3 % above; their 5 % quantile left
    # 8.1 % below at every scale tried (the model's noise-free offset is itself uncertain), and
    # 0.82 of it leaves 5 % (BENCHMARKS.md, "How sure", with the command).
    interval_draws: int = 256
    interval_tooling_scale: float = 4.0
    interval_layer_scale: float = 0.0
    interval_noise_scale: float = 0.75
    interval_lower_factor: float = 0.82
    # The run's sensor-linked errors in those draws: "cycle" (drawn from the cycle's runs' std
    # values) or "gaussian" (N(0, z_sd^2), as the robust design draws them).
    interval_z: str = "cycle"
    # Fewer runs of the cycle than this behind the model: flagged "few runs" (treat with care).
    care_min_runs: int = 20

    def __post_init__(self):
        if isinstance(self.robust_draws, bool) or not isinstance(self.robust_draws, int) or self.robust_draws < 0:
            raise RecommendConfigError("robust_draws", self.robust_draws,
                                       "0 (nominal design) or a number of draws >= 1")
        if self.interval_z not in ("cycle", "gaussian"):
            raise RecommendConfigError("interval_z", self.interval_z, "'cycle' or 'gaussian'")
        for name in ("interval_draws", "care_min_runs"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < 0:
                raise RecommendConfigError(name, v, "a whole number >= 0")
        for name, hi in (("bound_rel", 1.0), ("max_step_rel", 1.0), ("spectral_weight", math.inf),
                         ("interval_tooling_scale", math.inf), ("interval_layer_scale", math.inf),
                         ("interval_noise_scale", math.inf), ("interval_lower_factor", 1.0 + 1e-12)):
            v = getattr(self, name)
            if not (0.0 <= v < hi):  # also refuses NaN
                raise RecommendConfigError(name, v, "a number >= 0" + (f" and < {hi:g}" if hi < math.inf else ""))
