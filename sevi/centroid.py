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
   local maxima over a 5 x 5-bin neighbourhood (max-pooling) above ``threshold`` (35 counts).
   A single spot peaks at ~100 counts; the smoothed background noise is ~1.4 counts (20 / 4 per
   bin, / sqrt(4 pi) by the smoothing), so the threshold is ~25 noise sigmas above it and 6.5
   amplitude sigmas under the mean spot.
4. **Fit** each candidate on an ``(2w+1)^2``-bin window (w = 5 bins, +-2.6 spot sigmas) of the
   unsmoothed binned frame by Levenberg-Marquardt (``iterations`` steps, batched), with the
   camera's own spot shape ``A exp(-(du^2 + dv^2 + 2 rho du dv) / (2 s^2))`` and Gaussian
   priors from the spot model (``A ~ N(amp, amp_std^2)``, ``s ~ N(sigma, sigma_std^2)``,
   ``rho ~ N(0, rho_std^2)``); the noise is ``noise_px / b`` per bin. Three hypotheses:
   one spot (free u, v, A, s, rho), two spots or three spots (free positions and amplitudes,
   width fixed at the mean, rho = 0), initialised along the principal axis of the window's
   second moments. The hypothesis with the smallest ``chi^2 + prior + split_penalty * (K - 1)``
   wins: a MAP choice, which uses the integrated intensity (through the amplitude prior: a merged
   pair fitted as one spot needs A ~ 150-200, far out in N(100, 10^2)), the peak height and the
   shape (a flat-topped or elongated blob fits two spots better than one ellipse) together.
5. **Deblend**: neighbours fitted in the previous round are rendered into a model image and
   subtracted from every window (keeping the spot's own model), and the fits are repeated
   (``rounds`` times), so nearby spots do not pull each other's positions.
6. Components with fitted amplitude under ``min_amp`` (40 counts) are dropped (noise or a
   duplicate candidate); the rest are electrons, positioned to sub-pixel accuracy.

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

__all__ = ["CentroidConfig", "Centroids", "centroid_frames", "bin_frames"]


@dataclass(frozen=True)
class CentroidConfig:
    """Centroider settings. The spot-model fields default to the course's camera
    (CONTEXT.md, "How a camera frame is made") for a 1024-px frame; the rest are ours."""

    bin: int = 4                  # px per bin side; ours (see module docstring, step 1)
    sigma_px: float = 7.68        # mean spot sigma, px: 0.015 detector units * 512; CONTEXT.md
    sigma_std_px: float = 0.512   # 0.001 * 512; CONTEXT.md
    amp: float = 100.0            # mean spot peak, counts; CONTEXT.md
    amp_std: float = 10.0         # CONTEXT.md
    rho_std: float = 0.1          # CONTEXT.md
    noise_px: float = 20.0        # per-pixel background std, counts; CONTEXT.md
    smooth_bins: float = 1.0      # detection smoothing sigma, bins; ours
    threshold: float = 35.0       # detection threshold on the smoothed image, counts; ours
    nms_bins: int = 5             # local-maximum neighbourhood, bins (odd); ours
    window: int = 5               # fit window half-width, bins; ours
    rounds: int = 2               # deblend-and-refit rounds after the first fit; ours
    iterations: int = 10          # Levenberg-Marquardt steps per fit; ours
    split_penalty: float = 12.0   # cost of one more spot, chi^2 units; ours, tuned on simulations
    multi_amp_std: float = 15.0   # amplitude prior width for 2-3 spot fits (width is fixed there)
    min_amp: float = 40.0         # components fitted fainter than this are dropped, counts; ours
    frame_batch: int = 16         # frames per batch, bounds memory (~100 MB on CPU); ours

    def __post_init__(self) -> None:
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
    multiplicity: int64, how many electrons the fit put in the blob this one came from (1-3).
    amplitude: float32 fitted peak, counts (binned).
    """

    frame: torch.Tensor
    x: torch.Tensor
    z: torch.Tensor
    multiplicity: torch.Tensor
    amplitude: torch.Tensor

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
    x = F.conv2d(img[:, None], k.view(1, 1, -1, 1), padding=(r, 0))
    x = F.conv2d(x, k.view(1, 1, 1, -1), padding=(0, r))
    return x[:, 0]


# ---------------------------------------------------------------------------------------------
# Spot model on a window. A component is (u, v, A, s, rho): centre in bins relative to the window
# centre, peak, width (bins) and correlation.

def _model_and_jac(p: torch.Tensor, du: torch.Tensor, dv: torch.Tensor, need_jac: bool):
    """Sum of K spot components on window points.

    p: (N, K, 5); du, dv: (W2,) window offsets. Returns model (N, W2) and, if asked, the
    Jacobian (N, W2, K, 5).
    """
    u, v, A, s, r = (p[..., i, None] for i in range(5))                  # (N, K, 1)
    a = du - u                                                           # (N, K, W2)
    c = dv - v
    s2 = s * s
    q = (a * a + c * c + 2 * r * a * c) / (2 * s2)
    g = torch.exp(-q)
    Ag = A * g
    model = Ag.sum(dim=1)                                                # (N, W2)
    if not need_jac:
        return model, None
    J = torch.stack([Ag * (a + r * c) / s2, Ag * (c + r * a) / s2, g,
                     Ag * 2 * q / s, -Ag * a * c / s2], dim=-1)           # (N, K, W2, 5)
    return model, J.transpose(1, 2)                                      # (N, W2, K, 5)


class _Hypothesis:
    """Which component parameters are free and their priors, for one spot count K."""

    def __init__(self, K: int, cfg: CentroidConfig, s0: float, ss: float, device):
        self.K = K
        if K == 1:
            free = [(0, i) for i in range(5)]
            prior = {(0, 2): (cfg.amp, cfg.amp_std), (0, 3): (s0, ss), (0, 4): (0.0, cfg.rho_std)}
        else:
            free = [(k, i) for k in range(K) for i in range(3)]
            prior = {(k, 2): (cfg.amp, cfg.multi_amp_std) for k in range(K)}
        self.flat = torch.tensor([k * 5 + i for k, i in free], device=device)  # (P,)
        pf = [j for j, ki in enumerate(free) if ki in prior]
        self.prior_idx = torch.tensor(pf, device=device)
        self.prior_mu = torch.tensor([prior[free[j]][0] for j in pf], device=device)
        self.prior_sd = torch.tensor([prior[free[j]][1] for j in pf], device=device)


def _clamp(p: torch.Tensor, w: float, s0: float) -> torch.Tensor:
    p = p.clone()
    p[..., 0:2] = p[..., 0:2].clamp(-w, w)
    p[..., 2] = p[..., 2].clamp(0.0, 2000.0)
    p[..., 3] = p[..., 3].clamp(0.5 * s0, 2.0 * s0)
    p[..., 4] = p[..., 4].clamp(-0.9, 0.9)
    return p


def _fit(p: torch.Tensor, data: torch.Tensor, hyp: _Hypothesis, du, dv, noise: float,
         iters: int, w: float, s0: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Levenberg-Marquardt MAP fit of K components to windows.

    p: (N, K, 5) start; data: (N, W2) background-subtracted counts. Returns the fitted (N, K, 5)
    and the cost chi^2 + prior chi^2 (N,).
    """
    N = p.shape[0]
    lam = torch.full((N,), 1e-2, device=p.device)

    def cost_of(pp, model):
        res = (data - model) / noise
        th = pp.reshape(N, -1)[:, hyp.flat][:, hyp.prior_idx]
        pr = (th - hyp.prior_mu) / hyp.prior_sd
        return (res * res).sum(1) + (pr * pr).sum(1), res, pr

    model, J = _model_and_jac(p, du, dv, True)
    cost, res, pr = cost_of(p, model)
    eye = torch.eye(hyp.flat.numel(), device=p.device)
    for _ in range(iters):
        Jf = J.reshape(N, J.shape[1], -1)[:, :, hyp.flat] / noise       # (N, W2, P)
        H = Jf.transpose(1, 2) @ Jf                                      # (N, P, P)
        grad = (Jf.transpose(1, 2) @ res[..., None])[..., 0]             # (N, P)
        # Prior rows: residual (mu - theta)/sd, derivative 1/sd.
        inv = 1.0 / hyp.prior_sd
        H[:, hyp.prior_idx, hyp.prior_idx] += inv * inv
        grad[:, hyp.prior_idx] += -pr * inv
        diag = torch.diagonal(H, dim1=1, dim2=2)
        A = H + (lam[:, None, None] * (diag[:, :, None] * eye + 1e-6 * eye))
        step = torch.linalg.solve(A, grad[..., None])[..., 0]           # (N, P)
        step = torch.nan_to_num(step)
        trial = p.reshape(N, -1).clone()
        trial[:, hyp.flat] += step
        trial = _clamp(trial.view_as(p), w, s0)
        t_model, t_J = _model_and_jac(trial, du, dv, True)
        t_cost, t_res, t_pr = cost_of(trial, t_model)
        ok = t_cost < cost
        okb = ok[:, None]
        p = torch.where(ok[:, None, None], trial, p)
        J = torch.where(ok[:, None, None, None], t_J, J)
        res = torch.where(okb, t_res, res)
        pr = torch.where(okb, t_pr, pr)
        cost = torch.where(ok, t_cost, cost)
        lam = torch.where(ok, lam * 0.3, lam * 5.0).clamp(1e-6, 1e6)
    return p, cost


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
    return _clamp(p, w, s0)


def _render(comps: torch.Tensor, alive: torch.Tensor, bidx, ci, cj, B: int, Gb: int, R: int):
    """Model image (B, Gb + 2R, Gb + 2R) of all live components, each drawn on a (2R+1)^2 patch."""
    N, K, _ = comps.shape
    P = Gb + 2 * R
    img = torch.zeros(B * P * P, device=comps.device)
    o = torch.arange(-R, R + 1, device=comps.device)
    U = ci[:, None].float() + comps[..., 0]                              # (N, K) absolute bins
    V = cj[:, None].float() + comps[..., 1]
    ui, vi = U.round().long(), V.round().long()
    a = (ui[..., None] + o).float() - U[..., None]                       # (N, K, 2R+1)
    c = (vi[..., None] + o).float() - V[..., None]
    s2 = (comps[..., 3] ** 2)[..., None, None]
    r = comps[..., 4][..., None, None]
    aa, cc = a[..., :, None], c[..., None, :]
    val = comps[..., 2][..., None, None] * torch.exp(-(aa * aa + cc * cc + 2 * r * aa * cc) / (2 * s2))
    val = val * alive[..., None, None]
    rows = (ui[..., None] + o + R).clamp(0, P - 1)
    cols = (vi[..., None] + o + R).clamp(0, P - 1)
    flat = (bidx[:, None, None, None] * P + rows[..., :, None]) * P + cols[..., None, :]
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
    Y = bin_frames(frames, b)                                            # (B, Gb, Gb)
    Gb = Y.shape[1]
    bg = Y.reshape(B, -1).median(dim=1).values
    Y = Y - bg[:, None, None]
    Ys = _smooth(Y, cfg.smooth_bins)
    k = cfg.nms_bins
    peak = (Ys == F.max_pool2d(Ys[:, None], k, 1, k // 2)[:, 0]) & (Ys > cfg.threshold)
    bidx, ci, cj = torch.nonzero(peak, as_tuple=True)                    # (N,) each
    dev = frames.device
    N = bidx.numel()
    empty = torch.zeros(0, device=dev)
    if N == 0:
        return bidx, empty.double(), empty.double(), bidx, empty

    w = cfg.window
    o = torch.arange(-w, w + 1, device=dev)
    du = o[:, None].expand(-1, o.numel()).reshape(-1).float()            # (W2,)
    dv = o[None, :].expand(o.numel(), -1).reshape(-1).float()
    # Spot width in bins; the b x b bin adds b^2/12 px^2 of variance (box average).
    s0 = math.sqrt(cfg.sigma_px ** 2 + b * b / 12.0) / b
    ss = cfg.sigma_std_px / b
    noise = cfg.noise_px / b
    Ypad = F.pad(Y, (w, w, w, w))
    raw = _gather(Ypad, w, bidx, ci, cj, o)                              # (N, W2)
    hyps = [_Hypothesis(K, cfg, s0, ss, dev) for K in (1, 2, 3)]
    fit_kw = dict(du=du, dv=dv, noise=noise, iters=cfg.iterations, w=float(w), s0=s0)

    p1 = torch.zeros(N, 1, 5, device=dev)
    p1[:, 0, 2] = raw[:, raw.shape[1] // 2].clamp_min(1.0)
    p1[:, 0, 3] = s0
    p1, _ = _fit(p1, raw, hyps[0], **fit_kw)
    comps = torch.zeros(N, 3, 5, device=dev)
    comps[:, :1] = p1
    alive = torch.zeros(N, 3, device=dev)
    alive[:, 0] = 1.0
    nK = torch.ones(N, dtype=torch.long, device=dev)
    fits = None
    R = 2 * w
    for rnd in range(cfg.rounds):
        model_img = _render(comps, alive, bidx, ci, cj, B, Gb, R)
        own, _ = _model_and_jac(comps * alive[..., None], du, dv, False)
        data = raw - _gather(model_img, R, bidx, ci, cj, o) + own        # deblended windows
        if fits is None:
            starts = [p1] + [_moments_init(data, du, dv, K, s0, noise, float(w)) for K in (2, 3)]
        else:
            starts = fits
        fits, costs = [], []
        for K, start, hyp in zip((1, 2, 3), starts, hyps):
            pk, ck = _fit(start, data, hyp, **fit_kw)
            fits.append(pk)
            costs.append(ck + cfg.split_penalty * (K - 1))
        choice = torch.stack(costs, 1).argmin(1)                         # (N,) 0..2
        nK = choice + 1
        comps = torch.zeros(N, 3, 5, device=dev)
        for K in (1, 2, 3):
            sel = choice == K - 1
            comps[sel, :K] = fits[K - 1][sel]
        alive = (torch.arange(3, device=dev)[None, :] < nK[:, None]).float()

    keep = (alive > 0) & (comps[..., 2] >= cfg.min_amp)                  # (N, 3)
    n_idx, k_idx = torch.nonzero(keep, as_tuple=True)
    c = comps[n_idx, k_idx]                                              # (M, 5)
    U = ci[n_idx].double() + c[:, 0].double()                            # bins
    V = cj[n_idx].double() + c[:, 1].double()
    # Bin I spans pixels b*I .. b*I + b - 1, so its centre is pixel b*I + (b - 1)/2.
    x = to_detector(b * U + (b - 1) / 2.0, G)
    z = to_detector(b * V + (b - 1) / 2.0, G)
    mult = keep.sum(1)[n_idx]
    return bidx[n_idx], x, z, mult, c[:, 2]


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
            f, x, z, m, a = _centroid_batch(frames[start:start + config.frame_batch].contiguous(), config)
            out.append((f + start, x, z, m, a))
    if not out:
        e = torch.zeros(0, device=frames.device)
        return Centroids(e.long(), e.double(), e.double(), e.long(), e)
    cols = [torch.cat(col) for col in zip(*out)]
    return Centroids(*cols)
