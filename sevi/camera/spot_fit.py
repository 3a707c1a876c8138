"""The centroider's spot fit: the spot model on a window and its Jacobian, the spot-count
hypotheses with their priors, the batched Levenberg-Marquardt MAP fit, its starting points, and
drawing spots into (and cutting windows out of) whole binned frames. Steps 4-6 of the method in
:mod:`sevi.camera.centroid`'s docstring run on these; the joint cluster refit (step 8,
:mod:`sevi.camera.cluster_refit`) too.

Units: bins of the binned frame (``CentroidConfig.bin`` px), counts of the binned frame. A
component is ``(u, v, A, s, rho)``: centre in bins relative to the window centre (u along
axis 0 = x, v along axis 1 = z), peak (counts), width (bins, the bin's box average included)
and correlation; the spot is ``A exp(-(du^2 + dv^2 + 2 rho du dv) / (2 s^2))``. A window of
half-width ``w`` has ``W2 = (2w + 1)^2`` points, row-major.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from sevi.camera.centroid_config import CentroidConfig


def _window_offsets(half: int, device):
    """A ``(2 half + 1)^2``-bin window: its offsets ``o`` (2 half + 1,) int64 along one axis,
    and ``du``, ``dv`` (W2,) float32 row and column offsets of its points, row-major."""
    o = torch.arange(-half, half + 1, device=device)
    du = o[:, None].expand(-1, o.numel()).reshape(-1).float()
    dv = o[None, :].expand(o.numel(), -1).reshape(-1).float()
    return o, du, dv


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


def _peak_start(Ys: torch.Tensor, bidx, ci, cj, s0: float, smooth_bins: float) -> torch.Tensor:
    """One spot per candidate at the smoothed peak, (N, 1, 5): the sub-bin offset from a
    3-point parabola of log intensity per axis, the amplitude undoing the smoothing's peak loss
    (a Gaussian of ``smooth_bins`` on a spot of width ``s0``). ``Ys`` (B, Gb, Gb) smoothed
    frames; ``bidx``, ``ci``, ``cj`` (N,) the candidates' frame, row and column bins."""
    Ysp = F.pad(Ys, (1, 1, 1, 1)).clamp_min(1e-3).log()
    def at(di, dj):
        return Ysp[bidx, ci + 1 + di, cj + 1 + dj]
    c0 = at(0, 0)
    c1 = torch.zeros(bidx.numel(), 1, 5, device=Ys.device)
    for axis, (m, p) in enumerate(((at(-1, 0), at(1, 0)), (at(0, -1), at(0, 1)))):
        c1[:, 0, axis] = (0.5 * (m - p) / (m + p - 2 * c0).clamp(max=-1e-3)).clamp(-0.5, 0.5)
    c1[:, 0, 2] = Ys[bidx, ci, cj] * (s0 ** 2 + smooth_bins ** 2) / s0 ** 2
    c1[:, 0, 3] = s0
    return c1


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
