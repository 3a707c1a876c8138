"""A fast renderer of camera frames: the course's spot model (docs/camera.md), the same distribution
as :func:`sevi.camera.frames.render_frames`, 7x its speed on one CPU core (~200 frames/s at the
course's density); and a streaming sum of a whole measurement's frames (:func:`accumulate_frames`)
that never keeps them.

Conventions (docs/conventions.md, sevi.camera.frames): hits ``x, z`` in detector units over
``[-1, 1]^2``; a frame is ``(G, G)`` ``uint8``, axis 0 = x, axis 1 = z, pixel ``i``'s centre at
detector coordinate ``-1 + (i + 0.5) 2/G``; one detector unit is ``G/2`` px.

The model, per detected electron at pixel coordinates ``(px, pz)`` (``sevi.camera.frames.to_pixel``):

    A exp(-(dx^2 + dz^2 + 2 rho dx dz) / (2 s^2)),   dx, dz, s in px,

averaged over the ``S x S`` sub-pixel grid (offsets ``(a + 1/2)/S - 1/2`` px), only within
``window_half_px = h`` pixels of ``round(px), round(pz)``, added over electrons; then a background
``N(20, 20^2)`` per pixel, rounding, and clipping to ``0..255``. ``A``, ``s`` and ``rho`` are drawn
per electron; detection has probability 0.9; a hit outside ``[-1, 1)^2`` is never detected.

How it is fast and still exact (no approximation above 1e-3 counts anywhere):

* Separable spots. With ``w = dx/s`` and ``v = dz/s`` the spot is ``A g(w) g(v) exp(-rho w v)``,
  ``g(t) = exp(-t^2/2)``. The cross factor is not separable, but its Taylor series is a sum of
  separable terms: ``exp(-rho w v) = sum_k (-rho)^k / k! w^k v^k``. The 5 x 5 sub-pixel average of
  a product of a function of ``w`` and a function of ``v`` is the product of the 1-D averages, so
  the ``(2h+1)^2`` window of a spot is ``sum_{k<K} c_k X_k Z_k^T`` with ``X_k[u] = mean_a g(w) w^k``
  (a 57-vector), ``c_k = A (-rho)^k / k!``: one ``(57, K) @ (K, 57)`` product per spot instead of
  ``57^2 * 25`` exponentials.
* The truncation error is bounded (Lagrange remainder, :func:`truncation_bound`): at a sub-sample
  ``|exp(-y) - sum_{k<K} (-y)^k/k!| <= |y|^K / K! e^|y|``; with ``y = rho w v``, ``p = |w v| <=
  (w^2 + v^2)/2`` and the Gaussian factor ``exp(-(w^2 + v^2)/2) <= exp(-p)``, the error is at most
  ``A |rho|^K p^K exp(-(1 - |rho|) p) / K!``, largest at ``p = K / (1 - |rho|)`` or at the window's
  largest ``p`` (``(h + 1/2 + (S-1)/(2S))^2 / s^2``), whichever is smaller. A sub-pixel average
  and a sum of such errors keep the bound. Each spot takes the first order in ``orders`` whose
  bound, with its own ``A``, ``s`` and ``rho``, is at most ``tol`` (1e-3 counts, a thousandth of
  the rounding step); the rare spot no order covers (``|rho| >~ 0.32``: about 1 in 700 of the
  course's spots) is rendered exactly, sub-sample by sub-sample, as ``render_frames`` does. An error of
  ``e`` counts moves a pixel's rounded value with probability at most ``e`` times the density of
  ``signal + background`` at a rounding edge (< 0.02 per count), so at most 2e-5 per pixel.
* Float32 throughout (as ``render_frames``): the Taylor terms cannot cancel catastrophically,
  since ``sum_k |c_k X_k Z_k| <= A exp(-(1 - |rho|) p) <= A``; rounding adds < 5e-5 counts (tested).
* Scatter-add: every window is ``index_add_``-ed into the frames' float buffer at flat indices
  ``base + u G + v``; window rows and columns outside the frame get zero weight (their entries of
  ``X`` and ``Z`` are zeroed), so a wrapped index adds 0 to some other pixel (the buffer has a
  margin of ``h G + h`` on each end so no index leaves it).
* The background costs more than the spots: 1M normals per frame (``Tensor.normal_``, 2.6 ms per
  frame on one core of the development box, against 8 ms for numpy's ``standard_normal(dtype=
  float32)``; a uint16 inverse-CDF table of the discrete recorded value would cost 1.4 ms, but the
  pixels under a spot still need the continuous normal, so it saves nothing at the course's
  density, where windows cover ~30% of the pixels). The random stream is serial, so on a CPU the
  next step's background can be drawn in a second thread while this step's spots are added and
  its pixels rounded (``overlap=True``): the same numbers in the same order, so the frames do not
  depend on it.

Reproducibility: all draws come from the caller's ``torch.Generator`` in a fixed order: per call,
``rand(N)`` (detection), ``randn(N)`` (A), ``randn(N)`` (sigma), ``randn(N)`` (rho) (as
``render_frames``: the same seed detects the same electrons), then the background of frames
``0, 1, ..., B-1`` as ``normal_(20 + 1/2, 20)`` (the 1/2 of the rounding folded in) on steps of
``frames_per_step`` frames. On a CPU a step-wise ``normal_`` draws the same numbers as one call over all frames, so the
frames are a function of (hits, model, generator state) alone, whatever the threads and the step.
On CUDA the Philox offsets make them depend on ``frames_per_step`` too, and ``index_add_`` adds
floats in a varying order (a sum within an ulp of a rounding edge can round either way), unless
``torch.use_deterministic_algorithms(True)`` is set.

Cost (``OMP_NUM_THREADS=2 python tools/bench_frame_renderer.py --out F.json``; 1024^2 frames of
prior hits, ~100 spots each; the 2-core development box, shared, best of 3 calls of 64 frames):
one thread 185-200 frames/s, against 28-30 for ``render_frames`` and 9-18 for a numpy
spot-by-spot renderer. Of its ~5 ms per frame, 2.6 ms is the background's ``normal_``, ~1 ms the
spots (moments, products, ``index_add_``), the rest the clipping, the uint8 conversion and Python.
With ``overlap=True`` and one intra-op thread: 200-350 frames/s (the second core's speed varies
from run to run on that box); two intra-op threads: 160-235. :func:`accumulate_frames` with its
hit sampling: 170-195 frames/s on one core (a 50,000-frame measurement in ~5 min), peak RSS 340
MB at 1,000 frames and 352 MB at 10,000 (the truth positions).
"""
from __future__ import annotations

import math
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np
import torch

from sevi.camera.frames import FrameModel, to_pixel
from sevi.physics.prior import ShellParams
from sevi.runtime.device import pick_device
from sevi.runtime.errors import InputError

__all__ = [
    "FrameRendererError",
    "FrameRenderer",
    "FrameSum",
    "HitChunk",
    "TRUNCATION_TOL",
    "ORDERS",
    "truncation_bound",
    "spot_patches",
    "shell_hit_chunks",
    "accumulate_frames",
]

# Ours: the largest truncation error allowed in any pixel of any spot, counts: a thousandth of the
# rounding step (1 count); see the module docstring for what it does to the recorded values.
TRUNCATION_TOL = 1e-3
# Ours: Taylor orders a spot can take (the first whose bound is <= TRUNCATION_TOL). For a mean
# spot (A 100, s 7.68 px) order 6 covers |rho| <= 0.166 (90% of spots, rho ~ N(0, 0.1^2)), order
# 12 |rho| <= 0.319 (all but 1.4e-3 of them, which are rendered exactly: ~0.14 per frame). The
# cost is one (57, K) @ (K, 57) product per spot, so the second tier costs little.
ORDERS = (6, 12)


class FrameRendererError(InputError):
    """Bad input to the frame renderer (shapes, frame indices, a generator on another device)."""


# -- the spot ----------------------------------------------------------------------------------
def _reach_px(window_half_px: int, subpixel: int) -> float:
    """The largest ``|dx|`` of a sub-sample in a window, px: ``h`` pixels, the sub-sample offset
    ``(S-1)/(2S)`` and the hit's offset from the window's centre pixel, at most 1/2."""
    return window_half_px + 0.5 + (subpixel - 1) / (2.0 * subpixel)


def truncation_bound(amp: torch.Tensor, rho: torch.Tensor, s_px: torch.Tensor, order: int,
                     window_half_px: int, subpixel: int) -> torch.Tensor:
    """Upper bound (counts) on ``|Taylor - exact|`` at any pixel of a spot's window, per spot.

    ``A |rho|^K p^K exp(-(1 - |rho|) p) / K!`` at ``p = min(K / (1 - |rho|), p_max)``, ``p_max =
    (reach / s)^2`` the window's largest ``|w v|`` (module docstring). ``amp`` counts, ``s_px`` px,
    ``order`` = K (terms ``k = 0 .. K-1`` kept). Same shape as the broadcast of the inputs.
    """
    r = rho.abs().to(torch.float64)
    p_max = (_reach_px(window_half_px, subpixel) / s_px.to(torch.float64)) ** 2
    p_star = torch.where(r < 1, order / (1 - r).clamp_min(1e-300), torch.full_like(r, math.inf))
    p = torch.minimum(p_star, p_max)
    log_b = order * torch.log(r * p) - (1 - r) * p - math.lgamma(order + 1)
    return amp.to(torch.float64) * torch.exp(log_b)


def _unit_offsets(frac: torch.Tensor, s_px: torch.Tensor, offsets: torch.Tensor) -> torch.Tensor:
    """``w = (u + sub - f) / s`` for every spot, axis and sub-sample: ``(n, 2, W, S)`` float32.
    ``frac`` (n, 2): hit minus window-centre pixel, px; ``offsets`` (W, S): ``u + sub``, px."""
    return (offsets[None, None] - frac[:, :, None, None]) / s_px[:, None, None, None]


def _taylor(w: torch.Tensor, amp: torch.Tensor, rho: torch.Tensor, order: int,
            row_ok: torch.Tensor | None = None) -> torch.Tensor:
    """Windows ``(n, W, W)`` from the first ``order`` Taylor terms (module docstring).

    ``w`` (n, 2, W, S) from :func:`_unit_offsets`; ``row_ok`` (n, 2, W) float, 0 for window rows
    (axis 0) and columns (axis 1) outside the frame."""
    g = torch.exp(-0.5 * w * w)
    # m_k = mean over sub-samples of g(w) w^k, k < order: one cumulative product along k.
    n, _, W, S = w.shape
    terms = torch.cat([g[:, :, None], w[:, :, None].expand(n, 2, order - 1, W, S)], dim=2)
    m = terms.cumprod_(dim=2).mean(dim=-1)                                 # (n, 2, K, W)
    if row_ok is not None:
        m = m * row_ok[:, :, None, :]
    k = torch.arange(order, device=w.device, dtype=torch.float64)
    # c_k = A (-rho)^k / k!, in float64 then float32 (rho^12 / 12! ~ 1e-21 is fine in float32 too).
    c = amp[:, None].double() * (-rho[:, None].double()) ** k / torch.exp(torch.lgamma(k + 1))
    xs = m[:, 0] * c.to(w.dtype)[:, :, None]                                # (n, K, W)
    # A float32 matmul below "highest" precision may run in TF32 or bf16 (10 or 8 mantissa bits:
    # 0.1 counts of error); then multiply in float64, which no such setting touches.
    if w.dtype == torch.float32 and torch.get_float32_matmul_precision() != "highest":
        return torch.bmm(xs.transpose(1, 2).double(), m[:, 1].double()).float()
    return torch.bmm(xs.transpose(1, 2), m[:, 1])                           # (n, W, W)


def _exact(w: torch.Tensor, amp: torch.Tensor, rho: torch.Tensor, row_ok: torch.Tensor | None = None,
           chunk: int = 16) -> torch.Tensor:
    """Windows ``(n, W, W)`` sub-sample by sub-sample: the course's formula as ``render_frames``
    evaluates it. ``chunk`` spots at a time bound the scratch to ``chunk * (W S)^2 * 4`` bytes."""
    n, _, W, _ = w.shape
    out = torch.empty((n, W, W), dtype=w.dtype, device=w.device)
    for a in range(0, n, chunk):
        wx = w[a:a + chunk, 0][:, :, :, None, None]                        # (c, W, S, 1, 1)
        wz = w[a:a + chunk, 1][:, None, None, :, :]                        # (c, 1, 1, W, S)
        r = rho[a:a + chunk].to(w.dtype)[:, None, None, None, None]
        q = wx * wx + wz * wz + 2.0 * r * wx * wz
        out[a:a + chunk] = torch.exp(-0.5 * q).mean(dim=(2, 4)) * amp[a:a + chunk].to(w.dtype)[:, None, None]
    if row_ok is not None:
        out *= row_ok[:, 0, :, None] * row_ok[:, 1, None, :]
    return out


def spot_patches(frac: torch.Tensor, s_px: torch.Tensor, amp: torch.Tensor, rho: torch.Tensor, *,
                 window_half_px: int = FrameModel.window_half_px, subpixel: int = FrameModel.subpixel,
                 order: int | None = None) -> torch.Tensor:
    """The windows of ``n`` spots, ``(n, 2h+1, 2h+1)`` counts, before background and rounding: float64
    when ``frac`` is float64 (for tests), else float32 as the renderer computes them.

    ``frac`` (n, 2): each hit's offset from its window's centre pixel ``round(px), round(pz)``, px,
    in ``[-1/2, 1/2]``; ``s_px`` (n,) sigma in px; ``amp`` (n,) counts; ``rho`` (n,). ``order``:
    keep Taylor terms ``0 .. order-1``, or ``None`` for the exact sub-sample-by-sub-sample formula.
    A pure function, for tests and for :class:`FrameRenderer`, which uses the same code.
    """
    h, S = window_half_px, subpixel
    dev, dt = frac.device, (torch.float64 if frac.dtype == torch.float64 else torch.float32)
    u = torch.arange(-h, h + 1, device=dev, dtype=dt)
    sub = (torch.arange(S, device=dev, dtype=dt) + 0.5) / S - 0.5
    w = _unit_offsets(frac.to(dt), s_px.to(dt), u[:, None] + sub[None, :])
    return _exact(w, amp, rho) if order is None else _taylor(w, amp, rho, order)


# -- the renderer ------------------------------------------------------------------------------
def _same_device(a: torch.device, b: torch.device) -> bool:
    a, b = torch.device(a), torch.device(b)
    if a.type != b.type:
        return False
    if a.type == "cuda":
        cur = torch.cuda.current_device()
        return (a.index if a.index is not None else cur) == (b.index if b.index is not None else cur)
    return True


class FrameRenderer:
    """Configure once, call many: ``FrameRenderer(model, device)(x, z, frame, n_frames, generator)``.

    Renders the course's camera frames (module docstring) with the same distribution as
    :func:`sevi.camera.frames.render_frames`. The constructor fixes the model, the device and the
    tables; a call draws from the caller's generator only.

    Args:
        model: the spot model (every default is the course's camera).
        device: ``"auto"`` (cuda when torch sees one, else cpu), or a torch device.
        orders: Taylor orders a spot may take (see :data:`ORDERS`), increasing.
        tol: the largest truncation error allowed in a pixel, counts (:data:`TRUNCATION_TOL`).
        frames_per_step: frames rendered per step: one background buffer (``frames_per_step *
            G^2 * 4`` bytes, twice when overlapping) and one batch of spot windows (~2.6 MB per
            frame at the course's density). Default 1 on a CPU (its 4 MB buffer stays in cache:
            the fastest of 1, 2, 4 and 8, by 5-25%), 512 on a GPU (few launches per frame).
        overlap: draw the next step's background in a second thread while this step is finished
            (CPU only; it never changes the frames). It pays when torch runs one intra-op thread:
            on the 2-core development box 335 frames/s with ``torch.set_num_threads(1)`` and
            ``overlap=True``, against 200 with one thread, 230 with two intra-op threads, and 220
            with both (the intra-op threads then compete with the drawing thread).
    """

    def __init__(self, model: FrameModel = FrameModel(), device: str | torch.device | None = "auto", *,
                 orders: tuple[int, ...] = ORDERS, tol: float = TRUNCATION_TOL,
                 frames_per_step: int | None = None, overlap: bool = False):
        if not orders or any(k < 1 for k in orders) or list(orders) != sorted(orders):
            raise FrameRendererError(f"FrameRenderer: orders must be increasing positive integers, got {orders}")
        if not tol > 0:
            raise FrameRendererError(f"FrameRenderer: tol must be > 0 counts, got {tol}")
        if frames_per_step is not None and frames_per_step < 1:
            raise FrameRendererError(f"FrameRenderer: frames_per_step must be >= 1, got {frames_per_step}")
        self.model = model
        self.device = pick_device(device)
        self.orders = tuple(int(k) for k in orders)
        self.tol = float(tol)
        self.frames_per_step = frames_per_step or (1 if self.device.type == "cpu" else 512)
        self.overlap = bool(overlap)
        G, h, S = model.grid, model.window_half_px, model.subpixel
        u = torch.arange(-h, h + 1, device=self.device)
        sub = (torch.arange(S, device=self.device, dtype=torch.float32) + 0.5) / S - 0.5
        self._u = u                                                           # (W,) int64, px
        self._offsets = u.to(torch.float32)[:, None] + sub[None, :]           # (W, S), px
        # Flat index of window pixel (u, v) relative to the window's centre pixel.
        self._flat_uv = u[:, None] * G + u[None, :]                           # (W, W) int64
        self._margin = h * G + h   # buffer margin: no window index leaves the buffer

    # -- one call ------------------------------------------------------------------------------
    def __call__(self, x, z, frame, n_frames: int, generator: torch.Generator
                 ) -> tuple[torch.Tensor, torch.Tensor]:
        """Render ``n_frames`` frames from ``N`` hits.

        Args:
            x, z: ``(N,)`` hit positions, detector units (any float dtype; float64 is used).
            frame: ``(N,)`` integer frame of each hit, in ``[0, n_frames)``.
            n_frames: ``B``, frames to make (>= 1).
            generator: a ``torch.Generator`` on this renderer's device; the only source of randomness.

        Returns:
            frames: ``(B, G, G)`` ``uint8`` on the renderer's device, axis 1 = x, axis 2 = z.
            detected: ``(N,)`` bool: the electron made a spot (probability ``detect_prob``, and
                only if its centre lies in ``[-1, 1)^2``).
        """
        m, dev = self.model, self.device
        G = m.grid
        x, z, frame = self._check(x, z, frame, n_frames, generator)
        n = x.shape[0]
        # Random draws, in this order, for every electron (detected or not): docs/camera.md.
        detected = torch.rand(n, generator=generator, device=dev) < m.detect_prob
        amp = (m.amp_mean + m.amp_std * torch.randn(n, generator=generator, device=dev)).clamp_min(0)
        sigma = (m.sigma_mean + m.sigma_std * torch.randn(n, generator=generator, device=dev)).clamp_min(1e-6)
        rho = (m.rho_std * torch.randn(n, generator=generator, device=dev)).clamp(-1.0, 1.0)
        detected &= (x >= -1) & (x < 1) & (z >= -1) & (z < 1)

        # Detected spots sorted by frame, so a step's spots are one slice.
        idx = torch.nonzero(detected).reshape(-1)
        idx = idx[torch.argsort(frame[idx], stable=True)]
        spots = self._spot_table(x[idx], z[idx], frame[idx], amp[idx], sigma[idx], rho[idx])
        # Steps of frames_per_step frames: one background buffer, one batch of spot windows.
        step = self.frames_per_step
        starts = list(range(0, n_frames, step))
        bounds = torch.searchsorted(spots["frame"], torch.tensor(starts + [n_frames], device=dev)).tolist()

        overlap = self.overlap and dev.type == "cpu" and len(starts) > 1
        # Float buffers with a margin of h G + h on each end (contents there are never read).
        nbuf = min(step, n_frames) * G * G + 2 * self._margin
        bufs = [torch.empty(nbuf, device=dev) for _ in range(2 if overlap else 1)]
        frames = torch.empty((n_frames, G, G), dtype=torch.uint8, device=dev)

        def draw(i: int) -> torch.Tensor:  # the background of step i, in buffer i % 2
            nb = min(step, n_frames - starts[i])
            view = bufs[i % len(bufs)][self._margin:self._margin + nb * G * G]
            # + 1/2: the conversion to uint8 truncates, and floor(v + 1/2) is round(v) but at exact
            # half-way values (probability 0 in the model; torch.round would send them to even).
            return view.normal_(m.background_mean + 0.5, m.background_std, generator=generator)

        def finish(i: int, bg: torch.Tensor) -> None:  # spots, rounding, clipping of step i
            s0, nb = starts[i], min(step, n_frames - starts[i])
            buf = bufs[i % len(bufs)]
            if bounds[i + 1] > bounds[i]:
                sp = {k: v[bounds[i]:bounds[i + 1]] for k, v in spots.items()}
                for patches, flat in self._windows(sp, s0):
                    buf.index_add_(0, flat.reshape(-1), patches.reshape(-1))
            # clip(round(v), 0, 255) = trunc(clip(v + 1/2, 0, 255)): the bounds are integers.
            frames[s0:s0 + nb].view(-1).copy_(bg.clamp_(0, 255))

        if overlap:
            # One thread draws step i+1 while this one finishes step i. The generator is used by
            # that thread alone, one step after the other: the same numbers as without it.
            with ThreadPoolExecutor(1) as pool:
                nxt = pool.submit(draw, 0)
                for i in range(len(starts)):
                    bg = nxt.result()
                    if i + 1 < len(starts):
                        nxt = pool.submit(draw, i + 1)
                    finish(i, bg)
        else:
            for i in range(len(starts)):
                finish(i, draw(i))
        return frames, detected

    # -- pieces --------------------------------------------------------------------------------
    def _check(self, x, z, frame, n_frames: int, generator: torch.Generator):
        if not isinstance(generator, torch.Generator):
            raise FrameRendererError(f"generator must be a torch.Generator, got {type(generator).__name__}")
        if not _same_device(generator.device, self.device):
            raise FrameRendererError(f"generator is on {generator.device}, the renderer on {self.device}; "
                                     f"make the generator with torch.Generator(device=renderer.device)")
        if int(n_frames) < 1:
            raise FrameRendererError(f"n_frames must be >= 1, got {n_frames}")
        x = torch.as_tensor(x, device=self.device).to(torch.float64).reshape(-1)
        z = torch.as_tensor(z, device=self.device).to(torch.float64).reshape(-1)
        frame = torch.as_tensor(frame, device=self.device)
        if frame.is_floating_point():
            raise FrameRendererError(f"frame must hold integer frame indices, got dtype {frame.dtype}")
        frame = frame.to(torch.int64).reshape(-1)
        if not (x.shape == z.shape == frame.shape):
            raise FrameRendererError(f"x, z, frame must have one shape, got {tuple(x.shape)}, "
                                     f"{tuple(z.shape)}, {tuple(frame.shape)}")
        if frame.numel():
            lo, hi = int(frame.min()), int(frame.max())
            if lo < 0 or hi >= n_frames:
                raise FrameRendererError(f"frame indices must be in [0, {n_frames}), got [{lo}, {hi}]")
        return x, z, frame

    def _spot_table(self, x, z, frame, amp, sigma, rho) -> dict[str, torch.Tensor]:
        """Per detected spot: window centre pixel, offset, width in px, amplitude, rho, frame, and
        the Taylor tier (index into ``orders``, or ``len(orders)`` for the exact formula)."""
        G = self.model.grid
        p = torch.stack([to_pixel(x, G), to_pixel(z, G)], 1)                 # (n, 2) float64, px
        centre = p.round()
        s_px = (sigma * self.model.px_per_unit).to(torch.float32)
        tier = torch.full(amp.shape, len(self.orders), dtype=torch.int64, device=self.device)
        for t in reversed(range(len(self.orders))):  # the lowest order whose bound is within tol
            ok = truncation_bound(amp, rho, s_px, self.orders[t], self.model.window_half_px,
                                  self.model.subpixel) <= self.tol
            tier = torch.where(ok, t, tier)
        return {"centre": centre.to(torch.int64), "frac": (p - centre).to(torch.float32), "s_px": s_px,
                "amp": amp.to(torch.float32), "rho": rho.to(torch.float32), "frame": frame, "tier": tier}

    def _windows(self, sp: dict[str, torch.Tensor], first_frame: int):
        """Per tier with spots: windows ``(n, W, W)`` and their flat indices into the step's buffer
        (margin included; int32 where the buffer allows: half the index traffic)."""
        G = self.model.grid
        w = _unit_offsets(sp["frac"], sp["s_px"], self._offsets)             # (n, 2, W, S)
        rc = sp["centre"][:, :, None] + self._u                               # (n, 2, W) pixel rows, cols
        row_ok = ((rc >= 0) & (rc < G)).to(torch.float32)
        base = ((sp["frame"] - first_frame) * G + sp["centre"][:, 0]) * G + sp["centre"][:, 1] + self._margin
        itype = torch.int32 if self.frames_per_step * G * G + 2 * self._margin < 2**31 else torch.int64
        flat_uv = self._flat_uv.to(itype)
        for t in range(len(self.orders) + 1):
            sel = torch.nonzero(sp["tier"] == t).reshape(-1)
            if sel.numel() == 0:
                continue
            args = (w[sel], sp["amp"][sel], sp["rho"][sel])
            patches = (_taylor(*args, self.orders[t], row_ok[sel]) if t < len(self.orders)
                       else _exact(*args, row_ok[sel]))
            yield patches, base[sel].to(itype)[:, None, None] + flat_uv       # (n, W, W) each


# -- a measurement, streamed -------------------------------------------------------------------
@dataclass(frozen=True)
class FrameSum:
    """The sum of a measurement's frames and its truth.

    frame_sum: ``(G, G)`` int64, the sum of the ``uint8`` frames (exact: 255 * n_frames << 2^63).
    n_frames: frames summed.
    x, z: ``(M,)`` float32, detector units: every detected electron (perfect centroiding).
    n_emitted: electrons drawn per shell (smaller radius first), detected or not.
    batch_sums, batch_frames: ``(K, g, g)`` int64 and ``(K,)``: the sums of K contiguous batches of
    the frames (``sevi.camera.frame_batches``), or None.
    """

    frame_sum: np.ndarray
    n_frames: int
    x: np.ndarray
    z: np.ndarray
    n_emitted: tuple[int, int]
    batch_sums: np.ndarray | None = None
    batch_frames: np.ndarray | None = None


class HitChunk(NamedTuple):
    """The hits of ``n_frames`` consecutive frames: ``x, z`` (N,) float32 detector units, ``frame``
    (N,) int64 in ``[0, n_frames)``, ``counts`` (2,) int64 electrons of each shell (smaller first)."""

    x: torch.Tensor
    z: torch.Tensor
    frame: torch.Tensor
    n_frames: int
    counts: torch.Tensor


def shell_hit_chunks(params: ShellParams, n_frames: int, *, generator: torch.Generator, chunk_frames: int,
                     exact_totals: bool = True, sampler=None) -> Iterator[HitChunk]:
    """The hits of one measurement, ``chunk_frames`` frames at a time, as :class:`HitChunk` s.

    ``params``: one two-shell parameter set (``len(params) == 1``); ``n_electrons`` per shell are
    spread over ``n_frames`` frames, every electron in a frame chosen uniformly and independently.
    With ``exact_totals`` (default) the totals are ``n_electrons`` exactly and a frame's count is
    Binomial(n, 1/n_frames), the Poisson process conditioned on its totals; without, each frame's
    count of shell j is an independent Poisson(n_j / n_frames). Electrons are sampled as
    :func:`sevi.camera.frames.draw_prior_hits` does, by :class:`sevi.physics.generator.SeviGenerator`
    (``sample_electrons``), chunk by chunk, so memory is one chunk's whatever ``n_frames``.

    Draws per chunk, in order: the chunk's counts per shell (``binomial`` of the electrons left
    with probability chunk / frames left, or ``poisson``), then one frame per electron
    (``randint``). The chunk's electrons come from ``sampler`` seeded with ``base + chunk index``,
    ``base`` drawn once first: distinct seeds (a CPU generator keeps 32 bits of a seed, so seeds
    drawn at random could repeat across 1,600 chunks).
    """
    from sevi.physics.generator import GeneratorConfig, SeviGenerator

    if len(params) != 1:
        raise FrameRendererError(f"shell_hit_chunks: one parameter set, got {len(params)}")
    if n_frames < 1 or chunk_frames < 1:
        raise FrameRendererError(f"n_frames and chunk_frames must be >= 1, got {n_frames}, {chunk_frames}")
    dev = generator.device
    total = params.n_electrons.reshape(-1).to(torch.float64).cpu()
    if bool((total < 0).any()):
        raise FrameRendererError(f"n_electrons must be >= 0, got {total.tolist()}")
    sampler = sampler or SeviGenerator(GeneratorConfig(), device=dev)
    n_chunks = -(-n_frames // chunk_frames)
    base = int(torch.randint(0, 2**31 - n_chunks, (1,), generator=generator, device=dev))
    left = total.to(dev)
    for c in range(n_chunks):
        first = c * chunk_frames
        nb = min(chunk_frames, n_frames - first)
        if exact_totals:
            counts = torch.binomial(left, torch.full_like(left, nb / (n_frames - first)), generator=generator)
            left = left - counts
        else:
            counts = torch.poisson(total.to(dev) * (nb / n_frames), generator=generator)
        k = counts.to(torch.int64)
        x, z, _, _ = sampler.sample_electrons(
            ShellParams(params.R, params.sigma_R, params.beta, k.reshape(1, -1).cpu()), base + c)
        frame = torch.randint(0, nb, (x.shape[0],), generator=generator, device=dev)
        yield HitChunk(x, z, frame, nb, k.cpu())


def accumulate_frames(renderer: FrameRenderer, params: ShellParams, n_frames: int, *,
                      generator: torch.Generator, chunk_frames: int | None = None, exact_totals: bool = True,
                      progress: bool = True, batches: int = 0, batch_grid: int = 256) -> FrameSum:
    """Render a measurement of ``n_frames`` frames chunk by chunk and keep only their sum.

    The hits come from :func:`shell_hit_chunks` (``params``: one two-shell set, ``n_electrons``
    per shell spread over the frames), each chunk is rendered by ``renderer`` with ``generator``
    (the same generator, after the chunk's hit draws), added frame by frame to an integer sum on
    the device (``sevi.camera.frame_batches``: int32 per frame, exact), and dropped. ``batches``:
    also the sums of that many contiguous batches of the frames at ``batch_grid`` (the error bars
    from the measurement's own spread, ``sevi.fit.batch_spread``). Memory: one chunk of frames
    (``chunk_frames * G^2`` bytes of uint8, default 32 frames on a CPU and 1024 on a GPU) and the
    renderer's step buffers, plus the detected positions (8 bytes per electron: 36 MB for the
    course's 50,000 frames of 2 x 2.5e6 electrons) and the batches' sums. The result equals the sum
    of the frames the renderer makes from the same chunks with the same generator. Progress goes to
    a tqdm bar (shown on a terminal only; ``progress=False``: never).
    """
    from tqdm import tqdm

    from sevi.camera.frame_batches import FrameBatcher

    if chunk_frames is None:
        chunk_frames = 32 if renderer.device.type == "cpu" else 1024
    if not _same_device(generator.device, renderer.device):
        raise FrameRendererError(f"generator is on {generator.device}, the renderer on {renderer.device}")
    # frame by frame: a uint8 -> int32 add_ costs 0.13 ms per 1024^2 frame on one core, where
    # frames.sum(0, dtype=int64) costs 3.9 ms.
    acc = FrameBatcher(n_frames, batches, batch_grid, renderer.device)
    xs, zs = [], []
    emitted = np.zeros(2, dtype=np.int64)
    with tqdm(total=n_frames, unit="frame", desc="frames", disable=None if progress else True) as bar:
        for x, z, frame, nb, counts in shell_hit_chunks(params, n_frames, generator=generator,
                                                        chunk_frames=chunk_frames, exact_totals=exact_totals):
            frames, det = renderer(x, z, frame, nb, generator)
            acc.add(frames)
            xs.append(x[det].cpu().numpy())
            zs.append(z[det].cpu().numpy())
            emitted += counts.numpy()
            bar.update(nb)
    s = acc.result()
    return FrameSum(s.total, s.n_frames, np.concatenate(xs), np.concatenate(zs), tuple(int(v) for v in emitted),
                    s.batch_sums, s.batch_frames)
