"""Centroiding: camera frames -> electron positions, batched in torch (GPU or CPU).

Conventions as in :mod:`sevi.camera.frames`: a frame is ``(G, G)`` uint8, axis 0 = x, axis 1 = z,
pixel ``i``'s centre at ``x = -1 + (i + 0.5) * 2/G``; positions come back in detector units.

Method (all steps batched over frames and spots, no Python loop over spots):

1. **Bin** each frame ``b x b`` (default 4 x 4 -> 256 x 256). Spots have sigma ~ 7.7 px, so a
   4-px bin keeps nearly all the position information (the Fisher information of a bin-sampled
   Gaussian with sigma/bin = 1.9 is within a few % of the unbinned one) and cuts the work 16x.
2. **Background**: the per-frame median of the binned frame is subtracted (spots cover < 10% of a
   frame, so the median is the background, ~21.7 counts after the camera clips its N(20, 20^2)
   noise at 0).
3. **Detect**: smooth the binned frame with a Gaussian of ``smooth_bins`` (1 bin); candidates are
   local maxima over a 5 x 5-bin neighbourhood (max-pooling) above ``threshold`` (35 counts,
   background-subtracted).
   A single spot peaks at ~100 counts; the smoothed background noise is ~1.4 counts (20 / 4 per
   bin, / sqrt(4 pi) by the smoothing), so the threshold is ~25 noise sigmas above it and ~5
   amplitude sigmas under the mean spot's smoothed peak (~80).
4. **Fit** each candidate on an ``(2w+1)^2``-bin window (w = 5 bins, +-2.6 spot sigmas) of the
   unsmoothed binned frame by Levenberg-Marquardt (batched), with the camera's own spot shape
   ``A exp(-(du^2 + dv^2 + 2 rho du dv) / (2 s^2))`` and Gaussian priors from the spot model
   (``A ~ N(amp, amp_std^2)``, ``s ~ N(sigma, sigma_std^2)``, ``rho ~ N(0, rho_std^2)``); the
   noise is ``noise_px / b`` per bin. The fit starts at the smoothed peak (3-point parabola of
   log intensity for the sub-bin offset).
5. **Deblend** (``rounds`` = 4): every round renders all current spots into a model image and
   refits each candidate on its window minus its neighbours' models (block Jacobi on the joint
   fit of the frame); a round moves ``relaxation`` (0.6) of the way, because full Jacobi steps
   overshoot between close neighbours, except the last.
6. **Count** (after round ``gate_round``): a candidate whose one-spot fit is off by more than
   ``gate_sigmas`` (3) prior sigmas in A, s or rho, or whose chi^2 is 3 sigmas over the window
   size, is also fitted as two and as three spots (each with its own u, v, A, s, rho; started
   along the principal axis of the window's second moments). The hypothesis with the least
   ``chi^2 + prior + split_penalty * (K - 1)`` wins: a MAP choice that uses the integrated
   intensity (through the amplitude prior: a merged pair fitted as one spot needs A ~ 150-200,
   far out in N(100, 10^2)), the peak height and the shape (a flat-topped or elongated blob fits
   two spots better than one ellipse) together.
7. Spots fitted under ``min_amp`` (40 counts) are dropped (noise, or a duplicate candidate), and
   of two spots from different candidates closer than ``dedupe_bins`` the fainter is dropped.

8. **Refit clusters** (``cluster_min``-``cluster_max`` spots, 3-12): spots closer than
   ``cluster_link_bins`` (5 bins, 2.6 spot sigmas) form a cluster; each cluster is fitted as a
   whole on a ``(2 cluster_half + 1)^2``-bin window (all its spots at once, the other spots'
   models subtracted), then with one spot more (started at the largest residual) and one fewer
   (the faintest dropped); the least ``chi^2 + prior + cluster_penalty * n`` wins. A chain of
   spots along a crowded ring is seen whole here, where the per-candidate fits of step 6 (at most
   3 spots each, in overlapping windows) can count a spot twice or not at all. Pairs are left to
   step 6, which already reaches the Cramer-Rao bound on them (BENCHMARKS.md). ``cluster_max = 0``
   turns this off (``sevi frames --fast``: ~25 % faster, ~3 points less recall when crowded).

Where the code lives: the settings in ``sevi/camera/centroid_config.py``; steps 1-3 (binning,
background, smoothing, candidates) in ``sevi/camera/spot_detection.py``; the spot model, the
hypotheses and the batched Levenberg-Marquardt fit of steps 4-6 in ``sevi/camera/spot_fit.py``; step 8
in ``sevi/camera/cluster_refit.py``. This module runs the steps in order (``_centroid_batch``), holds
the output type and the public functions, and re-exports the rest.

The noise floor: with the camera's N(20, 20^2) background, a 100-count spot of sigma 7.7 px
cannot be located better than ~0.16 px per axis (Cramer-Rao bound, ~0.23 px in 2D); the fit
reaches it. Saturated pixels (255) are fitted as if they were not clipped (only where three or
more spots pile up).
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from sevi.camera.centroid_config import CentroidConfig
from sevi.camera.cluster_refit import FrameFitState, _refit_clusters
from sevi.camera.frames import to_detector
from sevi.camera.spot_detection import _detect, _frame_setup
from sevi.camera.spot_fit import (
    _fit,
    _gather,
    _Hypothesis,
    _model_and_jac,
    _moments_init,
    _peak_start,
    _render,
    _window_offsets,
)

__all__ = ["Centroids", "centroid_frames", "refine_positions", "map_cost"]


@dataclass(frozen=True)
class Centroids:
    """Found electrons, one row each; all tensors ``(N,)`` on the frames' device.

    frame: int64 index of the frame in the batch given to :func:`centroid_frames`.
    x, z: float64 positions, detector units.
    multiplicity: int64, how many electrons the fit put in the blob this one came from.
    amplitude: float32 fitted peak, counts (of the binned frame).
    width: float32 fitted spot sigma in bins of ``CentroidConfig.bin`` px, the bin's box average
        included (``sqrt(sigma_px^2 + bin^2 / 12) / bin`` for a spot of ``sigma_px``).
    rho: float32 fitted correlation of the spot's ellipse.
    """

    frame: torch.Tensor
    x: torch.Tensor
    z: torch.Tensor
    multiplicity: torch.Tensor
    amplitude: torch.Tensor
    width: torch.Tensor
    rho: torch.Tensor

    def __len__(self) -> int:
        return int(self.frame.numel())


def centroid_frames(frames: torch.Tensor, config: CentroidConfig = CentroidConfig()) -> Centroids:
    """Find the electrons in camera frames.

    Args:
        frames: ``(B, G, G)`` uint8 (any device; work happens there), axis 1 = x, axis 2 = z.
            Also accepts a float tensor of counts.
        config: see :class:`CentroidConfig` and the module docstring for the method.

    Returns:
        :class:`Centroids`, rows sorted by frame index (``0..B-1`` within ``frames``).
    """
    if frames.ndim != 3 or frames.shape[1] != frames.shape[2]:
        raise ValueError(f"frames must be (B, G, G), got {tuple(frames.shape)}")
    out = []
    with torch.no_grad():
        for start in range(0, frames.shape[0], config.frame_batch):
            f, x, z, m, par = _centroid_batch(frames[start:start + config.frame_batch].contiguous(), config)
            out.append((f + start, x, z, m, par[:, 0], par[:, 1], par[:, 2]))
    return _concat(out, frames.device)


def _concat(parts, device) -> Centroids:
    if not parts:
        e = torch.zeros(0, device=device)
        return Centroids(e.long(), e.double(), e.double(), e.long(), e, e, e)
    return Centroids(*(torch.cat(col) for col in zip(*parts)))


def _centroid_batch(frames: torch.Tensor, cfg: CentroidConfig):
    """Steps 1-8 on one batch of frames (B, G, G): the spots' frame index (M,) int64, x, z (M,)
    float64 detector units, multiplicity (M,) int64 and (amplitude, width, rho) (M, 3) float32."""
    B, G, _ = frames.shape
    b = cfg.bin
    dev = frames.device
    Y, s0, ss, noise, Rp = _frame_setup(frames, cfg)                     # (B, Gb, Gb)
    Gb = Y.shape[1]
    Ys, bidx, ci, cj = _detect(Y, cfg)                                   # (N,) each
    N = bidx.numel()
    if N == 0:
        e = torch.zeros(0, device=dev)
        return bidx, e.double(), e.double(), bidx, e.new_zeros(0, 3)

    w = cfg.window
    o, du, dv = _window_offsets(w, dev)                                  # du, dv (W2,)
    W2 = du.numel()
    raw = _gather(F.pad(Y, (w, w, w, w)), w, bidx, ci, cj, o)            # (N, W2)
    hyps = [_Hypothesis(K, cfg, s0, ss, float(w), dev) for K in (1, 2, 3)]
    kw = dict(du=du, dv=dv, noise=noise)

    # Start: one spot per candidate at the smoothed peak.
    c1 = _peak_start(Ys, bidx, ci, cj, s0, cfg.smooth_bins)              # (N, 1, 5)
    th = [hyps[0].theta(c1), None, None]
    comps = torch.cat([c1, torch.zeros(N, 2, 5, device=dev)], 1)         # (N, 3, 5)
    nK = torch.ones(N, dtype=torch.long, device=dev)
    idx = torch.zeros(0, dtype=torch.long, device=dev)
    pad = w + Rp + 1
    slot = torch.arange(3, device=dev)
    omega = cfg.relaxation
    for rnd in range(cfg.rounds):
        last = rnd == cfg.rounds - 1
        alive = slot[None, :] < nK[:, None]                              # (N, 3)
        n_a, k_a = torch.nonzero(alive, as_tuple=True)
        ca = comps[n_a, k_a]                                             # (M, 5) live spots
        ca = torch.cat([ca[:, :2] + torch.stack([ci[n_a], cj[n_a]], 1), ca[:, 2:]], 1)
        model_img = _render(ca, bidx[n_a], B, Gb, pad, Rp)
        own, _ = _model_and_jac(comps[:, :1], du, dv, False)             # (N, W2)
        if idx.numel():
            multi = comps[idx, 1:].clone()
            multi[..., 2] *= alive[idx, 1:]
            multi[..., 3] = multi[..., 3].clamp_min(1e-3)                # dead slots have s = 0
            own[idx] += _model_and_jac(multi, du, dv, False)[0]
        data = raw - _gather(model_img, pad, bidx, ci, cj, o) + own      # deblended windows
        # Each round fits every candidate with its neighbours' current models subtracted: block
        # Jacobi on the joint fit of the frame. A full Jacobi step overshoots by about half between
        # close neighbours, so every round but the last moves only omega of the way.
        fit1, cost1 = _fit(th[0], data, hyps[0], iters=cfg.iterations if rnd == 0 else cfg.warm_iterations, **kw)
        th[0] = fit1 if last else th[0] + omega * (fit1 - th[0])
        if rnd == cfg.gate_round:
            # Only blobs that one spot explains badly get the 2- and 3-spot fits: too bright, too
            # wide, too elongated, or a chi^2 too high for noise (K = 1 costs ~W2 on a lone spot).
            g = cfg.gate_sigmas
            sus = ((fit1[:, 2] > cfg.amp + g * cfg.amp_std) | (fit1[:, 3] > s0 + g * ss)
                   | (fit1[:, 4].abs() > g * cfg.rho_std) | (cost1 > W2 + g * math.sqrt(2.0 * W2)))
            idx = torch.nonzero(sus).reshape(-1)
            for K in range(2, cfg.max_split + 1):
                init = _moments_init(data[idx], du, dv, K, s0, noise, float(w))
                th[K - 1] = hyps[K - 1].clamp(hyps[K - 1].theta(init))
        if rnd < cfg.gate_round:
            comps = torch.cat([hyps[0].comps(th[0]), torch.zeros(N, 2, 5, device=dev)], 1)
            continue
        costs = [cost1[idx]]
        for K in range(2, cfg.max_split + 1):
            fitK, ck = _fit(th[K - 1], data[idx], hyps[K - 1],
                            iters=cfg.iterations if rnd == cfg.gate_round else cfg.warm_iterations, **kw)
            th[K - 1] = fitK if (last or rnd == cfg.gate_round) else th[K - 1] + omega * (fitK - th[K - 1])
            costs.append(ck + cfg.split_penalty * (K - 1))
        nK = torch.ones(N, dtype=torch.long, device=dev)
        nK[idx] = torch.stack(costs, 1).argmin(1) + 1
        comps = torch.cat([hyps[0].comps(th[0]), torch.zeros(N, 2, 5, device=dev)], 1)
        for K in range(2, cfg.max_split + 1):
            sel = nK[idx] == K
            comps[idx[sel], :K] = hyps[K - 1].comps(th[K - 1][sel])

    keep = (slot[None, :] < nK[:, None]) & (comps[..., 2] >= cfg.min_amp)  # (N, 3)
    n_idx, k_idx = torch.nonzero(keep, as_tuple=True)
    c = comps[n_idx, k_idx]                                              # (M, 5)
    U = ci[n_idx].double() + c[:, 0].double()                            # bins
    V = cj[n_idx].double() + c[:, 1].double()
    fb, amp = bidx[n_idx], c[:, 2]
    # Two candidates that ended on one spot (a deblending tie): keep the brighter. Compared
    # within frames only, on a (B, L, L) padded block (L = most spots in a frame).
    M = U.numel()
    counts = torch.bincount(fb, minlength=B)
    first = torch.cumsum(counts, 0) - counts
    rank = torch.arange(M, device=dev) - first[fb]                       # fb is sorted
    L = int(counts.max())
    pos = torch.full((B, L, 2), 1e6, device=dev, dtype=U.dtype)
    pos[fb, rank] = torch.stack([U, V], 1)
    key = torch.full((B, L), -1.0, device=dev)
    key[fb, rank] = amp + 1e-4 * rank.float() / L                        # ties broken by order
    cand = torch.full((B, L), -1, device=dev, dtype=torch.long)
    cand[fb, rank] = n_idx
    d2 = ((pos[:, :, None] - pos[:, None]) ** 2).sum(-1)                 # (B, L, L)
    clash = (d2 < cfg.dedupe_bins ** 2) & (cand[:, :, None] != cand[:, None, :])
    weaker = (clash & (key[:, None, :] > key[:, :, None])).any(2)        # (B, L)
    ok = ~weaker[fb, rank]
    U, V, fb, amp, n_idx, c = U[ok], V[ok], fb[ok], amp[ok], n_idx[ok], c[ok]
    mult = keep.sum(1)[n_idx]
    par = c[:, 2:].clone()
    if cfg.cluster_max >= cfg.cluster_min:
        state = FrameFitState(Y, fb, U, V, par, mult, s0, ss, noise, Rp)
        for _ in range(cfg.cluster_passes):
            state, _ = _refit_clusters(state, cfg)
        fb, U, V, par, mult = state.frame, state.u, state.v, state.amp_width_rho, state.multiplicity
    return fb, _from_bins(U, G, b), _from_bins(V, G, b), mult, par


def _to_bins(x: torch.Tensor, G: int, b: int) -> torch.Tensor:
    """Detector units -> bin coordinates (the inverse of ``_from_bins``)."""
    return ((x.double() + 1) * G / 2 - 0.5 - (b - 1) / 2.0) / b


def _from_bins(U: torch.Tensor, G: int, b: int) -> torch.Tensor:
    """Bin coordinates -> detector units. Bin I spans pixels b*I .. b*I + b - 1, so its centre
    is pixel b*I + (b - 1)/2."""
    return to_detector(b * U + (b - 1) / 2.0, G)


def refine_positions(frames: torch.Tensor, frame: torch.Tensor, x: torch.Tensor, z: torch.Tensor,
                     config: CentroidConfig = CentroidConfig(), recount: bool = False) -> tuple[Centroids, int]:
    """Fit spots started at given positions: every cluster of them (spots closer than
    ``cluster_link_bins``) jointly, as step 8 of the method, single spots included.

    ``frame`` (N,) indexes ``frames`` (sorted); ``x``, ``z`` (N,) detector units. With
    ``recount=False`` the count is kept, so started at the true positions this is the MAP fit
    nearest the truth (a diagnostic, ``tools/bench_frames.py --oracle``); with ``recount`` one
    spot more and one fewer are tried per cluster. Clusters wider than ``2 cluster_half - 4``
    bins are left as given. Returns the fitted spots and how many were left as given.
    """
    cfg = config
    G = frames.shape[1]
    out, unfitted = [], 0
    with torch.no_grad():
        for start in range(0, frames.shape[0], cfg.frame_batch):
            stop = min(frames.shape[0], start + cfg.frame_batch)
            Y, s0, ss, noise, Rp = _frame_setup(frames[start:stop].contiguous(), cfg)
            sel = (frame >= start) & (frame < stop)
            fb = (frame[sel] - start).long()
            U, V = _to_bins(x[sel], G, cfg.bin), _to_bins(z[sel], G, cfg.bin)
            par = torch.tensor([cfg.amp, s0, 0.0], device=Y.device).repeat(U.numel(), 1)
            mult = torch.ones_like(fb)
            one = CentroidConfig(**{**cfg.__dict__, "cluster_min": 1, "cluster_max": max(1, U.numel())})
            fit, n_un = _refit_clusters(FrameFitState(Y, fb, U, V, par, mult, s0, ss, noise, Rp), one, recount)
            unfitted += n_un
            par = fit.amp_width_rho
            out.append((fit.frame + start, _from_bins(fit.u, G, cfg.bin), _from_bins(fit.v, G, cfg.bin),
                        fit.multiplicity, par[:, 0], par[:, 1], par[:, 2]))
    return _concat(out, frames.device), unfitted


def map_cost(frames: torch.Tensor, found: Centroids, config: CentroidConfig = CentroidConfig()) -> torch.Tensor:
    """The fit's objective for whole frames, ``(B,)``: chi^2 of the binned frame against all
    spots of ``found`` rendered together, plus the spot-model priors on amplitude (the blends'
    ``multi_amp_std``), width and rho, plus ``cluster_penalty`` per spot. Lower is a better
    explanation of the frame; comparing two sets of spots on the same frames tells whether the
    fit's objective can tell them apart."""
    cfg = config
    G = frames.shape[1]
    costs = []
    with torch.no_grad():
        for start in range(0, frames.shape[0], cfg.frame_batch):
            stop = min(frames.shape[0], start + cfg.frame_batch)
            Y, s0, ss, noise, Rp = _frame_setup(frames[start:stop].contiguous(), cfg)
            B, Gb = Y.shape[0], Y.shape[1]
            sel = (found.frame >= start) & (found.frame < stop)
            fb = found.frame[sel] - start
            spots = torch.stack([_to_bins(found.x[sel], G, cfg.bin).float(), _to_bins(found.z[sel], G, cfg.bin).float(),
                                 found.amplitude[sel], found.width[sel], found.rho[sel]], 1)
            pad = Rp + 2
            img = _render(spots, fb, B, Gb, pad, Rp)[:, pad:-pad, pad:-pad]
            chi2 = (((Y - img) / noise) ** 2).sum((1, 2))
            prior = (((spots[:, 2] - cfg.amp) / cfg.multi_amp_std) ** 2 + ((spots[:, 3] - s0) / ss) ** 2
                     + (spots[:, 4] / cfg.rho_std) ** 2 + cfg.cluster_penalty)
            costs.append(chi2 + torch.bincount(fb, weights=prior, minlength=B))
    return torch.cat(costs) if costs else torch.zeros(0, device=frames.device)
