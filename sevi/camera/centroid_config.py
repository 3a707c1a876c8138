"""The centroider's settings: one frozen ``CentroidConfig`` (a comment per field).

Units: ``*_px`` fields in pixels of the camera frame, ``*_bins`` fields and ``window`` /
``cluster_half`` in bins of ``bin`` x ``bin`` pixels; amplitudes and thresholds in counts. The
method the fields steer is described step by step in the docstring of :mod:`sevi.camera.centroid`
(the front door, which re-exports this class).
"""
from __future__ import annotations

from dataclasses import dataclass

from sevi.camera.frames import FrameModel

__all__ = ["CentroidConfig"]


@dataclass(frozen=True)
class CentroidConfig:
    """Centroider settings. The spot-model fields default to the course's camera
    (docs/camera.md) for a 1024-px frame; the rest are ours."""

    bin: int = 4                  # px per bin side; ours (sevi/camera/centroid.py docstring, step 1)
    sigma_px: float = 7.68        # mean spot sigma, px: 0.015 detector units * 512; docs/camera.md
    sigma_std_px: float = 0.512   # 0.001 * 512; docs/camera.md
    amp: float = 100.0            # mean spot peak, counts; docs/camera.md
    amp_std: float = 10.0         # docs/camera.md
    rho_std: float = 0.1          # docs/camera.md
    noise_px: float = 20.0        # per-pixel background std, counts; docs/camera.md
    smooth_bins: float = 1.0      # detection smoothing sigma, bins; ours
    threshold: float = 35.0       # detection threshold on the smoothed image, counts; ours
    nms_bins: int = 5             # local-maximum neighbourhood, bins (odd); ours
    window: int = 5               # fit window half-width, bins; ours
    rounds: int = 4               # deblend-and-refit rounds; ours
    gate_round: int = 1           # round after which blobs are tested for 2-3 spots; ours
    relaxation: float = 0.6       # fraction of a round's fit step taken (not in the last); ours
    iterations: int = 8           # Levenberg-Marquardt steps of a cold fit; ours
    warm_iterations: int = 4      # ... of a refit from the previous round's result; ours
    gate_sigmas: float = 3.0      # a 1-spot fit this many prior sigmas off gets 2-3 spot fits
    max_split: int = 3            # most spots a candidate's own fit may split into (1-3); ours
    split_penalty: float = 12.0   # cost of one more spot, chi^2 units; ours, tuned on simulations
    multi_amp_std: float = 15.0   # amplitude prior width for 2-3 spot fits (width is fixed there)
    min_amp: float = 40.0         # components fitted fainter than this are dropped, counts; ours
    dedupe_bins: float = 1.0      # spots of two candidates closer than this are one; ours
    cluster_link_bins: float = 5.0  # spots closer than this (bins) are one cluster for the joint refit
    cluster_min: int = 3          # clusters of cluster_min..cluster_max spots are refitted jointly
    cluster_max: int = 12         # (cluster_max < cluster_min: off); pairs are fitted well already
    cluster_half: int = 11        # half-width of a cluster's fit window, bins
    cluster_penalty: float = 12.0  # chi^2 cost of one more spot in a cluster (as split_penalty)
    cluster_passes: int = 1       # joint cluster refits in a row
    cluster_iterations: int = 8   # Levenberg-Marquardt steps of each joint cluster fit
    frame_batch: int = 16         # frames per batch, bounds memory (~100 MB on CPU); ours

    def __post_init__(self) -> None:
        if not 1 <= self.max_split <= 3:
            raise ValueError(f"CentroidConfig: max_split must be 1, 2 or 3, got {self.max_split}")
        if self.bin < 1 or self.window < 2 or self.nms_bins < 3 or self.nms_bins % 2 == 0:
            raise ValueError(f"CentroidConfig: need bin >= 1, window >= 2, odd nms_bins >= 3: {self}")

    @classmethod
    def from_frame_model(cls, model: FrameModel, **overrides) -> "CentroidConfig":
        """Spot-model fields taken from a :class:`FrameModel` (sigma converted to px)."""
        scale = model.grid / 2.0
        fields = dict(sigma_px=model.sigma_mean * scale, sigma_std_px=max(model.sigma_std * scale, 1e-3),
                      amp=model.amp_mean, amp_std=max(model.amp_std, 1e-3),
                      rho_std=max(model.rho_std, 1e-3), noise_px=max(model.background_std, 1.0))
        fields.update(overrides)
        return cls(**fields)
