"""Centroiding: camera frames -> electron positions, batched in torch (GPU or CPU).

Conventions as in :mod:`sevi.frames`: a frame is ``(G, G)`` uint8, axis 0 = x, axis 1 = z,
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

from sevi.frames import FrameModel, to_detector

__all__ = ["CentroidConfig", "Centroids", "centroid_frames", "bin_frames", "refine_positions", "map_cost"]


@dataclass(frozen=True)
class CentroidConfig:
    """Centroider settings. The spot-model fields default to the course's camera
    (docs/camera.md) for a 1024-px frame; the rest are ours."""

    bin: int = 4                  # px per bin side; ours (see module docstring, step 1)
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


def bin_frames(frames: torch.Tensor, b: int) -> torch.Tensor:
    """``(B, G, G)`` uint8 -> ``(B, G/b, G/b)`` float32 bin means."""
    B, G, G2 = frames.shape
    if G % b or G2 % b:
        raise ValueError(f"frame shape {(G, G2)} is not divisible by the bin {b}")
    if b == 4 and frames.dtype == torch.uint8 and G2 % 16 == 0 and frames.is_contiguous():
        # SWAR: four uint8 pixels as one int32, pairs of bytes summed in 16-bit lanes; 3x faster
        # than avg_pool2d on the CPU because the frame is never expanded to float32.
        v = frames.view(torch.int32)                                    # (B, G, G/4)
        m = 0x00FF00FF
        s = (v & m) + ((v >> 8) & m)                                    # lanes <= 510
        s = s.view(B, G // 4, 4, G2 // 4).sum(dim=2)                    # lanes <= 2040
        return ((s & 0xFFFF) + (s >> 16)).to(torch.float32) * (1.0 / 16)
    return F.avg_pool2d(frames[:, None].to(torch.float32), b)[:, 0]


def _gauss_kernel(sigma: float, device) -> torch.Tensor:
    r = max(1, int(math.ceil(3 * sigma)))
    t = torch.arange(-r, r + 1, device=device, dtype=torch.float32)
    k = torch.exp(-0.5 * (t / sigma) ** 2)
    return k / k.sum()


def _smooth(img: torch.Tensor, sigma: float) -> torch.Tensor:
    """Separable Gaussian smoothing of ``(B, H, W)``, zero padding."""
    k = _gauss_kernel(sigma, img.device)
    r = k.numel() // 2
    # Shifted sums: a 7-tap kernel on 256 x 256 is 4x faster this way than conv2d on the CPU.
    H, W = img.shape[1:]
    x = F.pad(img, (0, 0, r, r))
    y = sum(k[i] * x[:, i:i + H] for i in range(k.numel()))
    y = F.pad(y, (r, r))
    return sum(k[i] * y[:, :, i:i + W] for i in range(k.numel()))


def _max_filter(img: torch.Tensor, k: int) -> torch.Tensor:
    """Separable ``k x k`` maximum filter of ``(B, H, W)`` (odd ``k``), edges padded with -inf.

    Equal to ``F.max_pool2d(img[:, None], k, 1, k // 2)[:, 0]``; 2k - 2 elementwise maxima of
    shifted views are ~10x faster on the CPU than max_pool2d, which also computes indices.
    """
    r = k // 2
    H, W = img.shape[1:]
    x = F.pad(img, (0, 0, r, r), value=float("-inf"))
    y = x[:, 0:H]
    for i in range(1, k):
        y = torch.maximum(y, x[:, i:i + H])
    x = F.pad(y, (r, r), value=float("-inf"))
    y = x[:, :, 0:W]
    for i in range(1, k):
        y = torch.maximum(y, x[:, :, i:i + W])
    return y


# ---------------------------------------------------------------------------------------------
# Spot model on a window. A component is (u, v, A, s, rho): centre in bins relative to the window
# centre, peak, width (bins) and correlation.

def _model_and_jac(p: torch.Tensor, du: torch.Tensor, dv: torch.Tensor, need_jac: bool):
    """Sum of K spot components on window points.

    p: (N, K, 5); du, dv: (W2,) window offsets. Returns the model (N, W2) and, if asked, the
    transposed Jacobian (N, K*5, W2) (parameter-major, so its products are contiguous).
    """
    u, v, A, s, r = (p[..., i, None] for i in range(5))                  # (N, K, 1)
    a = du - u                                                           # (N, K, W2)
    c = dv - v
    inv_s2 = 1.0 / (s * s)
    ac = a * c
    q = (a * a + c * c + 2 * r * ac) * (0.5 * inv_s2)
    g = torch.exp(-q)
    Ag = A * g
    model = Ag.sum(dim=1)                                                # (N, W2)
    if not need_jac:
        return model, None
    Ags = Ag * inv_s2
    N, K, W2 = g.shape
    Jt = torch.empty((N, K, 5, W2), device=g.device, dtype=g.dtype)      # torch.stack here is slow
    Jt[:, :, 0] = Ags * (a + r * c)
    Jt[:, :, 1] = Ags * (c + r * a)
    Jt[:, :, 2] = g
    Jt[:, :, 3] = Ag * q * (2.0 / s)
    Jt[:, :, 4] = -Ags * ac
    return model, Jt.view(N, K * 5, W2)


class _Hypothesis:
    """One spot count K: which component parameters are free, their bounds and priors.

    Every spot has its own (u, v, A, s, rho), all free, with the spot model's Gaussian priors on
    A, s and rho (wider on A for K > 1: a blend's amplitudes trade against each other).
    A shared width or rho for a blend was tried and biased close pairs by ~0.8 px: the spots of
    a pair differ by ~7% in width and ~0.1 in rho, and the fit moves them to make up for it.
    """

    def __init__(self, K: int, cfg: CentroidConfig, s0: float, ss: float, w: float, device):
        self.K = K
        amp_sd = cfg.amp_std if K == 1 else cfg.multi_amp_std
        lo = torch.tensor([-w, -w, 0.0, 0.5 * s0, -0.9], device=device).repeat(K)
        hi = torch.tensor([w, w, 2000.0, 2.0 * s0, 0.9], device=device).repeat(K)
        self.lo, self.hi = lo, hi
        # Prior mean and 1/sd per parameter; 1/sd = 0 (flat) for the positions.
        self.prior_mu = torch.tensor([0.0, 0.0, cfg.amp, s0, 0.0], device=device).repeat(K)
        self.prior_inv = torch.tensor([0.0, 0.0, 1 / amp_sd, 1 / ss, 1 / cfg.rho_std], device=device).repeat(K)
        self.prior_H = torch.diag(self.prior_inv ** 2)                    # (P, P)

    def comps(self, theta: torch.Tensor) -> torch.Tensor:
        return theta.view(theta.shape[0], self.K, 5)

    def theta(self, comps: torch.Tensor) -> torch.Tensor:
        return comps.reshape(comps.shape[0], 5 * self.K)

    def clamp(self, theta: torch.Tensor) -> torch.Tensor:
        return torch.maximum(torch.minimum(theta, self.hi), self.lo)


def _fit(theta: torch.Tensor, data: torch.Tensor, hyp: _Hypothesis, du, dv, noise: float,
         iters: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Levenberg-Marquardt MAP fit of one hypothesis to windows.

    theta: (N, P) start; data: (N, W2) background-subtracted counts. Returns the fitted theta
    and its cost, chi^2 + prior chi^2, (N,).
    """
    N, P = theta.shape
    lam = torch.full((N,), 1e-2, device=theta.device)
    eye = torch.eye(P, device=theta.device)
    inv = hyp.prior_inv

    def cost_of(th, model):
        res = (data - model) * (1.0 / noise)
        pr = (th - hyp.prior_mu) * inv
        return (res * res).sum(1) + (pr * pr).sum(1), res, pr

    model, _ = _model_and_jac(hyp.comps(theta), du, dv, False)
    cost, res, pr = cost_of(theta, model)
    for _ in range(iters):
        _, Jt = _model_and_jac(hyp.comps(theta), du, dv, True)
        Jt = Jt * (1.0 / noise)                                          # (N, P, W2)
        # Prior rows: residual (mu - theta)/sd, derivative 1/sd.
        H = Jt @ Jt.transpose(1, 2) + hyp.prior_H                        # (N, P, P)
        grad = (Jt @ res[..., None])[..., 0] - pr * inv                  # (N, P)
        diag = torch.diagonal(H, dim1=1, dim2=2)
        A = H + lam[:, None, None] * (diag[:, :, None] + 1e-6) * eye
        step = torch.nan_to_num(torch.linalg.solve(A, grad[..., None])[..., 0])
        trial = hyp.clamp(theta + step)
        t_model, _ = _model_and_jac(hyp.comps(trial), du, dv, False)
        t_cost, t_res, t_pr = cost_of(trial, t_model)
        ok = t_cost < cost
        theta = torch.where(ok[:, None], trial, theta)
        res = torch.where(ok[:, None], t_res, res)
        pr = torch.where(ok[:, None], t_pr, pr)
        cost = torch.where(ok, t_cost, cost)
        lam = torch.where(ok, lam * 0.3, lam * 5.0).clamp(1e-6, 1e6)
    return theta, cost


def _moments_init(data: torch.Tensor, du, dv, K: int, s0: float, noise: float, w: float) -> torch.Tensor:
    """K components along the principal axis of the window's second moments, (N, K, 5)."""
    wt = (data - 2 * noise).clamp_min(0)                                 # (N, W2)
    tot = wt.sum(1).clamp_min(1e-6)
    mu = (wt * du).sum(1) / tot
    mv = (wt * dv).sum(1) / tot
    a = (wt * (du - mu[:, None]) ** 2).sum(1) / tot
    c = (wt * (dv - mv[:, None]) ** 2).sum(1) / tot
    b = (wt * (du - mu[:, None]) * (dv - mv[:, None])).sum(1) / tot
    half = torch.sqrt(((a - c) / 2) ** 2 + b * b)
    excess = (2 * half).clamp_min(0.25)                                  # lambda1 - lambda2
    ang = 0.5 * torch.atan2(2 * b, a - c)
    eu, ev = torch.cos(ang), torch.sin(ang)
    peak = data.max(1).values.clamp_min(1.0)
    if K == 2:
        h = excess.sqrt()                                                # pair at +-h
        offs = torch.stack([-h, h], 1)
        amp = peak / (2 * torch.exp(-h * h / (2 * s0 * s0)))
    else:
        d = (1.5 * excess).sqrt().clamp_min(0.7)                         # triple at -d, 0, d
        offs = torch.stack([-d, torch.zeros_like(d), d], 1)
        amp = peak / (1 + 2 * torch.exp(-d * d / (2 * s0 * s0)))
    p = torch.zeros(data.shape[0], K, 5, device=data.device)
    p[..., 0] = mu[:, None] + offs * eu[:, None]
    p[..., 1] = mv[:, None] + offs * ev[:, None]
    p[..., 2] = amp[:, None]
    p[..., 3] = s0
    return p


def _render(c: torch.Tensor, bidx, B: int, Gb: int, pad: int, Rp: int) -> torch.Tensor:
    """Model image (B, Gb + 2 pad, Gb + 2 pad) of spots ``c`` (M, 5) = (U, V, A, s, rho) in
    absolute bins, each drawn on a (2 Rp + 1)^2 patch (``pad > Rp + window``)."""
    P = Gb + 2 * pad
    img = torch.zeros(B * P * P, device=c.device)
    o = torch.arange(-Rp, Rp + 1, device=c.device)
    U, V = c[:, 0], c[:, 1]
    ui, vi = U.round().long(), V.round().long()
    a = (ui[:, None] + o).float() - U[:, None]                           # (M, 2Rp+1)
    b = (vi[:, None] + o).float() - V[:, None]
    inv = (0.5 / c[:, 3] ** 2)[:, None, None]
    r2 = (2 * c[:, 4])[:, None, None]
    aa, bb = a[:, :, None], b[:, None, :]
    val = c[:, 2, None, None] * torch.exp(-(aa * aa + bb * bb + r2 * aa * bb) * inv)
    rows = (ui[:, None] + o + pad).clamp(0, P - 1)
    cols = (vi[:, None] + o + pad).clamp(0, P - 1)
    flat = (bidx[:, None, None] * P + rows[:, :, None]) * P + cols[:, None, :]
    img.index_add_(0, flat.reshape(-1), val.reshape(-1))
    return img.view(B, P, P)


def _gather(img: torch.Tensor, pad: int, bidx, ci, cj, o) -> torch.Tensor:
    """Windows (N, W2) from a (B, H + 2 pad, W + 2 pad) image around bins (ci, cj)."""
    B, P, Q = img.shape
    rows = ci[:, None] + o[None, :] + pad
    cols = cj[:, None] + o[None, :] + pad
    flat = (bidx[:, None, None] * P + rows[:, :, None]) * Q + cols[:, None, :]
    return img.reshape(-1)[flat.reshape(flat.shape[0], -1)]


def _centroid_batch(frames: torch.Tensor, cfg: CentroidConfig):
    B, G, _ = frames.shape
    b = cfg.bin
    dev = frames.device
    Y, s0, ss, noise, Rp = _frame_setup(frames, cfg)                     # (B, Gb, Gb)
    Gb = Y.shape[1]
    Ys = _smooth(Y, cfg.smooth_bins)
    k = cfg.nms_bins
    peak = (Ys == _max_filter(Ys, k)) & (Ys > cfg.threshold)
    bidx, ci, cj = torch.nonzero(peak, as_tuple=True)                    # (N,) each
    N = bidx.numel()
    if N == 0:
        e = torch.zeros(0, device=dev)
        return bidx, e.double(), e.double(), bidx, e.new_zeros(0, 3)

    w = cfg.window
    o = torch.arange(-w, w + 1, device=dev)
    du = o[:, None].expand(-1, o.numel()).reshape(-1).float()            # (W2,)
    dv = o[None, :].expand(o.numel(), -1).reshape(-1).float()
    W2 = du.numel()
    raw = _gather(F.pad(Y, (w, w, w, w)), w, bidx, ci, cj, o)            # (N, W2)
    hyps = [_Hypothesis(K, cfg, s0, ss, float(w), dev) for K in (1, 2, 3)]
    kw = dict(du=du, dv=dv, noise=noise)

    # Start: one spot per candidate at the smoothed peak (sub-bin offset from a 3-point parabola
    # of log intensity per axis), its amplitude undoing the smoothing's peak loss.
    Ysp = F.pad(Ys, (1, 1, 1, 1)).clamp_min(1e-3).log()
    def at(di, dj):
        return Ysp[bidx, ci + 1 + di, cj + 1 + dj]
    c0 = at(0, 0)
    c1 = torch.zeros(N, 1, 5, device=dev)
    for axis, (m, p) in enumerate(((at(-1, 0), at(1, 0)), (at(0, -1), at(0, 1)))):
        c1[:, 0, axis] = (0.5 * (m - p) / (m + p - 2 * c0).clamp(max=-1e-3)).clamp(-0.5, 0.5)
    c1[:, 0, 2] = Ys[bidx, ci, cj] * (s0 ** 2 + cfg.smooth_bins ** 2) / s0 ** 2
    c1[:, 0, 3] = s0
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
        for _ in range(cfg.cluster_passes):
            fb, U, V, par, mult, _ = _refit_clusters(Y, fb, U, V, par, mult, cfg, s0, ss, noise, Rp)
    # Bin I spans pixels b*I .. b*I + b - 1, so its centre is pixel b*I + (b - 1)/2.
    x = to_detector(b * U + (b - 1) / 2.0, G)
    z = to_detector(b * V + (b - 1) / 2.0, G)
    return fb, x, z, mult, par


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


def _refit_clusters(Y, fb, U, V, par, mult, cfg: CentroidConfig, s0: float, ss: float, noise: float, Rp: int,
                    recount: bool = True):
    """Joint refit of every cluster of 2..``cluster_max`` spots, with the spot count chosen again.

    A cluster is a connected group of spots closer than ``cluster_link_bins``. Each is fitted
    as a whole (all its spots' u, v, A, s, rho at once, Levenberg-Marquardt on a
    ``(2 cluster_half + 1)^2``-bin window around its centre, all other spots' models subtracted),
    and then with one spot more (started at the brightest residual) and one fewer (the faintest
    dropped); the count with the least ``chi^2 + prior + cluster_penalty * n`` wins. This sees
    a chain of spots along a ring whole, where the per-candidate fits (at most 3 spots each, in
    overlapping windows) can count one spot twice or not at all. ``recount=False`` keeps every
    cluster's count (only the joint fit). Returns (fb, U, V, par, mult) sorted by frame, and the
    number of spots left as they were because their cluster is wider than the window.
    """
    B, Gb, _ = Y.shape
    dev = Y.device
    h = cfg.cluster_half
    o = torch.arange(-h, h + 1, device=dev)
    du = o[:, None].expand(-1, o.numel()).reshape(-1).float()
    dv = o[None, :].expand(o.numel(), -1).reshape(-1).float()
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
        own = _model_and_jac(torch.cat([torch.stack([U[idx] - cu[:, None], V[idx] - cv[:, None]], -1).float(),
                                        par[idx]], -1), du, dv, False)[0]
        data = _gather(Ypad, h, cb, cu, cv, o) - _gather(model_img, pad, cb, cu, cv, o) + own
        comps = torch.cat([torch.stack([U[idx] - cu[:, None], V[idx] - cv[:, None]], -1).float(), par[idx]], -1)
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
    return fb[order], U[order], V[order], par[order], mult[order], unfitted


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


def _frame_setup(frames: torch.Tensor, cfg: CentroidConfig):
    """Background-subtracted binned frames (steps 1-2) and the spot constants in bins: the mean
    width ``s0`` (the b x b bin adds b^2/12 px^2 of variance, a box average), its prior sd
    ``ss``, the noise per bin, and the radius to which spots are drawn (3.5 widths: the cut tail
    is < 0.3% of the peak, under 0.1 noise sigma)."""
    b = cfg.bin
    Y = bin_frames(frames, b)
    Y = Y - Y.reshape(Y.shape[0], -1).median(dim=1).values[:, None, None]
    s0 = math.sqrt(cfg.sigma_px ** 2 + b * b / 12.0) / b
    return Y, s0, cfg.sigma_std_px / b, cfg.noise_px / b, int(math.ceil(3.5 * s0))


def _to_bins(x: torch.Tensor, G: int, b: int) -> torch.Tensor:
    """Detector units -> bin coordinates (the inverse of the conversion in ``_centroid_batch``)."""
    return ((x.double() + 1) * G / 2 - 0.5 - (b - 1) / 2.0) / b


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
            fb, U, V, par, mult, n_un = _refit_clusters(Y, fb, U, V, par, mult, one, s0, ss, noise, Rp, recount)
            unfitted += n_un
            b = cfg.bin
            out.append((fb + start, to_detector(b * U + (b - 1) / 2.0, G), to_detector(b * V + (b - 1) / 2.0, G),
                        mult, par[:, 0], par[:, 1], par[:, 2]))
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
