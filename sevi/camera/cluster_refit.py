"""The centroider's joint cluster refit (step 8 of the method in :mod:`sevi.camera.centroid`'s
docstring): spots closer than ``cluster_link_bins`` form a cluster, and each cluster is fitted
as a whole, with its spot count chosen again.

Units: bins of the binned frame (``CentroidConfig.bin`` px; bin ``I``'s centre is pixel
``b*I + (b - 1)/2``, axis 0 = x, axis 1 = z), counts of the binned frame. The spot model, the
fit and the drawing of spots are :mod:`sevi.camera.spot_fit`'s.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from sevi.camera.centroid_config import CentroidConfig
from sevi.camera.spot_fit import (
    _fit,
    _gather,
    _Hypothesis,
    _model_and_jac,
    _render,
    _window_offsets,
)

__all__ = ["FrameFitState"]


@dataclass(frozen=True)
class FrameFitState:
    """A batch of binned frames, their spot constants and the spots fitted on them so far: what
    the cluster refit reads and returns. ``B`` frames of ``Gb x Gb`` bins, ``M`` spots.

    binned: (B, Gb, Gb) float32, the background-subtracted bin means (counts); steps 1-2.
    frame: (M,) int64, each spot's frame index in the batch, sorted (ascending).
    u, v: (M,) float64, spot centres in bins of the binned frame along axis 0 (x) and 1 (z).
    amp_width_rho: (M, 3) float32, each spot's peak (counts of the binned frame), width (bins,
        the bin's box average included) and correlation rho.
    multiplicity: (M,) int64, how many spots the fit put in the blob each one came from.
    width: the mean spot width, bins (the prior's mean; ``sqrt(sigma_px^2 + b^2/12) / b``).
    width_sd: the prior sd of the spot width, bins.
    noise: the background noise per bin, counts.
    draw_radius: the half-width (bins) of the patch each spot is drawn on in model images.
    """

    binned: torch.Tensor
    frame: torch.Tensor
    u: torch.Tensor
    v: torch.Tensor
    amp_width_rho: torch.Tensor
    multiplicity: torch.Tensor
    width: float
    width_sd: float
    noise: float
    draw_radius: int


def _clusters(fb: torch.Tensor, U: torch.Tensor, V: torch.Tensor, link: float) -> torch.Tensor:
    """Connected components of spots closer than ``link`` within each frame: a label per spot
    (the smallest member index). ``fb`` sorted."""
    M = U.numel()
    if M == 0:
        return torch.zeros(0, dtype=torch.long, device=U.device)
    B = int(fb.max()) + 1
    counts = torch.bincount(fb, minlength=B)
    first = torch.cumsum(counts, 0) - counts
    rank = torch.arange(M, device=U.device) - first[fb]
    L = int(counts.max())
    pos = torch.full((B, L, 2), 1e9, device=U.device, dtype=U.dtype)
    pos[fb, rank] = torch.stack([U, V], 1)
    adj = ((pos[:, :, None] - pos[:, None]) ** 2).sum(-1) < link * link          # (B, L, L)
    lab = torch.full((B, L), M, device=U.device, dtype=torch.long)
    lab[fb, rank] = torch.arange(M, device=U.device)
    big = torch.full_like(lab, M)
    for _ in range(L):
        new = torch.where(adj, lab[:, None, :], big[:, None, :]).min(2).values
        new = torch.minimum(new, lab)
        if torch.equal(new, lab):
            break
        lab = new
    return lab[fb, rank]


def _refit_clusters(state: FrameFitState, cfg: CentroidConfig, recount: bool = True) -> tuple[FrameFitState, int]:
    """Joint refit of every cluster of ``cluster_min``..``cluster_max`` spots, with the spot count
    chosen again.

    A cluster is a connected group of spots closer than ``cluster_link_bins``. Each is fitted
    as a whole (all its spots' u, v, A, s, rho at once, Levenberg-Marquardt on a
    ``(2 cluster_half + 1)^2``-bin window around its centre, all other spots' models subtracted),
    and then with one spot more (started at the brightest residual) and one fewer (the faintest
    dropped); the count with the least ``chi^2 + prior + cluster_penalty * n`` wins. This sees
    a chain of spots along a ring whole, where the per-candidate fits (at most 3 spots each, in
    overlapping windows) can count one spot twice or not at all. ``recount=False`` keeps every
    cluster's count (only the joint fit). Returns the state with the spots refitted (sorted by
    frame; its frames and constants as given), and the number of spots left as they were because
    their cluster is wider than the window.
    """
    Y, fb, U, V = state.binned, state.frame, state.u, state.v
    par, mult = state.amp_width_rho, state.multiplicity
    s0, ss, noise, Rp = state.width, state.width_sd, state.noise, state.draw_radius
    B, Gb, _ = Y.shape
    dev = Y.device
    h = cfg.cluster_half
    o, du, dv = _window_offsets(h, dev)
    lab = _clusters(fb, U, V, cfg.cluster_link_bins)
    uniq, inv, size = torch.unique(lab, return_inverse=True, return_counts=True)
    pad = h + Rp + 1
    spots = torch.cat([torch.stack([U, V], 1).float(), par], 1)
    model_img = _render(spots, fb, B, Gb, pad, Rp)
    Ypad = F.pad(Y, (h, h, h, h))
    keep = torch.ones(U.numel(), dtype=torch.bool, device=dev)
    new_rows = []
    unfitted = 0
    for n in range(cfg.cluster_min, cfg.cluster_max + 1):
        cl = torch.nonzero(size == n).reshape(-1)                              # clusters of n spots
        if cl.numel() == 0:
            continue
        member = torch.nonzero(torch.isin(inv, cl)).reshape(-1)
        order = torch.argsort(inv[member], stable=True)
        idx = member[order].view(-1, n)                                      # (C, n) spot indices
        cu = U[idx].mean(1).round().long().clamp(0, Gb - 1)
        cv = V[idx].mean(1).round().long().clamp(0, Gb - 1)
        fit_ok = ((U[idx] - cu[:, None]).abs().amax(1) < h - 2) & ((V[idx] - cv[:, None]).abs().amax(1) < h - 2)
        unfitted += int((~fit_ok).sum()) * n
        idx, cu, cv = idx[fit_ok], cu[fit_ok], cv[fit_ok]
        if idx.numel() == 0:
            continue
        cb = fb[idx[:, 0]]
        comps = torch.cat([torch.stack([U[idx] - cu[:, None], V[idx] - cv[:, None]], -1).float(), par[idx]], -1)
        own = _model_and_jac(comps, du, dv, False)[0]
        data = _gather(Ypad, h, cb, cu, cv, o) - _gather(model_img, pad, cb, cu, cv, o) + own
        # The count as found, refitted jointly; then one spot more (started at the largest
        # residual) and one fewer (the faintest dropped), each fitted jointly from there.
        C = idx.shape[0]
        rows_all = torch.arange(C, device=dev)
        hyp_n = _Hypothesis(n, cfg, s0, ss, float(h), dev)
        th_n, cost_n = _fit(hyp_n.clamp(hyp_n.theta(comps)), data, hyp_n, du, dv, noise, cfg.cluster_iterations)
        results = [(th_n, cost_n + cfg.cluster_penalty * n, hyp_n, rows_all)]
        cn = hyp_n.comps(th_n)
        resid = data - _model_and_jac(cn, du, dv, False)[0]
        rmax, j = resid.max(1)
        extra = torch.stack([du[j], dv[j], rmax.clamp_min(cfg.min_amp), torch.full_like(rmax, s0),
                             torch.zeros_like(rmax)], 1)
        sel = torch.ones(C, n, dtype=torch.bool, device=dev)
        sel[rows_all, cn[..., 2].argmin(1)] = False
        others = [(n + 1, torch.cat([cn, extra[:, None]], 1))] if recount else []
        if recount and n > 1:
            others.append((n - 1, cn[sel].view(C, n - 1, 5)))
        for K, start in others:
            hyp = _Hypothesis(K, cfg, s0, ss, float(h), dev)
            th, cost = _fit(hyp.clamp(hyp.theta(start)), data, hyp, du, dv, noise, cfg.cluster_iterations)
            results.append((th, cost + cfg.cluster_penalty * K, hyp, rows_all))
        costs = torch.stack([r[1] for r in results], 1)                       # (C, 1-3)
        best = costs.argmin(1)
        keep[idx.reshape(-1)] = False
        for k, (th, _, hyp, rows) in enumerate(results):
            sel = best[rows] == k                                              # over this fit's rows
            if not bool(sel.any()):
                continue
            cp = hyp.comps(th[sel])                                            # (c, K, 5)
            sel = rows[sel]                                                    # over the clusters
            Kj = cp.shape[1]
            new_rows.append((cb[sel].repeat_interleave(Kj), (cu[sel, None] + cp[..., 0]).reshape(-1).double(),
                             (cv[sel, None] + cp[..., 1]).reshape(-1).double(), cp[..., 2:].reshape(-1, 3),
                             torch.full((sel.numel() * Kj,), Kj, dtype=mult.dtype, device=dev)))
    if new_rows:
        cols = list(zip(*new_rows))
        fb = torch.cat([fb[keep]] + list(cols[0]))
        U = torch.cat([U[keep]] + list(cols[1]))
        V = torch.cat([V[keep]] + list(cols[2]))
        par = torch.cat([par[keep]] + list(cols[3]))
        mult = torch.cat([mult[keep]] + list(cols[4]))
    live = par[:, 0] >= cfg.min_amp
    fb, U, V, par, mult = fb[live], U[live], V[live], par[live], mult[live]
    order = torch.argsort(fb, stable=True)
    return dataclasses.replace(state, frame=fb[order], u=U[order], v=V[order], amp_width_rho=par[order],
                               multiplicity=mult[order]), unfitted
