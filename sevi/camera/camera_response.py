"""What the camera records, on average, from a given density of hits: the frame sum's expected value
and variance per pixel, with the camera's rounding, its clip at 0 and its saturation at 255.

The camera (docs/camera.md; ``sevi.camera.frames``): in one frame, the light at frame pixel q is
``L_q = sum_j a_j k(q - x_j)``, one term per detected hit ``x_j`` (its spot: amplitude A, width s,
tilt rho, averaged on the 5 x 5 sub-pixel grid, cut at ``window_half_px``), and the pixel records
``Y_q = clip(round(b_q + L_q), 0, 255)`` with a background ``b_q ~ N(20, 20^2)`` of its own. The hits
of a frame are a Poisson process of intensity ``rate(x)`` (hits per frame per pixel: the expected
hit image of the whole measurement times the detection probability, over the number of frames),
so ``L_q`` is a compound Poisson sum: its Levy measure is ``nu_q(dv) = sum_x rate(x) P(a k(q - x) in dv)``.
Everything the frame sum's mean and variance need follows from it:

    E[Y_q] = E[f(L_q)],    f(l) = E_b[clip(round(b + l), 0, 255)] = sum_{k=1}^{255} Phi((mu_b + l - k + 1/2) / sd_b),

and ``Var(Y_q) = E[f2(L_q)] - E[Y_q]^2`` with ``f2(l) = E_b[Y^2 | l]``. Where spots pile up (both
shells on small radii: tens of spots on one ring per frame) ``L_q`` exceeds 255 - b and the pixel
saturates; in a spot's faint wings ``L_q`` is small and the clip at 0 eats part of it. Both are in
``f``: the model is linear in nothing.

How it is computed (all on the frame's pixels, on the folded quadrant, CPU or CUDA):

1. Kernels, once per camera (:class:`SpotKernels`): for each offset d in the spot's window, the
   distribution of a spot's value ``v = A Gbar(d; s, rho, delta)`` over A, s, rho (Gauss-Hermite)
   and the hit's position delta inside its pixel (Gauss-Legendre), spread onto a lattice of values
   ``0, h, 2h, ...`` by linear ("tent") weights, which keep each mark's mean exactly; plus the mean
   spot ``E[v]``, ``E[v^2]`` and the tent's added variance ``E[h^2 t (1 - t)]``, t = frac(v / h).
2. Per image (:meth:`CameraResponse.__call__`): one 2-D convolution per lattice value gives
   ``nu_q`` on the lattice (FFT convolutions; the quadrant is mirrored at the centre lines, the
   image's symmetry, and padded with zeros at the outer edge, where light is lost).
3. Per pixel with light: the compound Poisson law on the lattice by FFT,
   ``pmf = irfft(exp(rfft(nu) - sum(nu)))`` (length ``lattice_size``), and ``E[f(L)]``,
   ``E[f2(L)]``, ``E[f'(L)]`` against tables of f. The lattice adds ``sum_marks h^2 t (1 - t)`` of
   variance to L (a few counts^2 next to the background's 400); its effect ``E[f''(L)] / 2`` times
   that is removed (second order, exact to ~1e-4 counts). Pixels with almost no light (mean below
   ``min_light`` counts per frame) take ``f`` expanded to second order about 0.
4. Hits are taken as spread uniformly over their pixel. The hit density varies inside a pixel, which
   to second order acts like a blur of 1/6 px^2: the mean spot is sharpened by the same amount
   (``k - (1/12) laplacian(k)``), exact to second order in the pixel size.

Returned per frame pixel: ``mean`` E[Y] - E[Y | no light] (counts per frame, the background's own
clipped mean taken out: what the direct image adds per frame), ``light`` E[L] (the linear
model's value), ``var`` Var(Y) (counts^2 per frame), ``slope`` E[f'(L)] (the local gain for
covariances between pixels), ``scaled`` d E[Y] / d alpha at alpha = 1 for the rate scaled by alpha
(the gain for the fit's Jacobian), ``light_var`` Var(L).

Conventions: images are the positive quadrant of a ``(G, G)`` frame, ``(G/2, G/2)``, index 0 next
to the centre lines, axis 0 = x, axis 1 = z (``sevi.physics.forward``: ``quadrant``); counts per
frame; ``FrameModel`` units (detector units for sigma, counts for amplitudes).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import lru_cache

import numpy as np
import torch

from sevi.camera.frames import FrameModel

__all__ = ["ResponseConfig", "SpotKernels", "spot_kernels", "CameraResponse", "recorded_value_tables"]


@dataclass(frozen=True)
class ResponseConfig:
    """Accuracy settings of the camera response; defaults measured in tests/sevi/camera/test_camera_response.py."""

    lattice_step: float = 1.0  # h, counts: marks are spread on 0, h, 2h, ... (the tent adds <= h^2/4 per mark)
    lattice_size: int = 1024  # FFT length: L is resolved up to (size - 1) h counts; saturation is at 255
    min_light: float = 1e-3  # counts per frame below which f is expanded to second order about 0
    n_amplitude: int = 12  # Gauss-Hermite nodes of A ~ N(amp_mean, amp_std^2)
    n_width: int = 8  # Gauss-Hermite nodes of s ~ N(sigma_mean, sigma_std^2)
    n_tilt: int = 8  # Gauss-Hermite nodes of rho ~ N(0, rho_std^2), clipped to [-1, 1]
    n_position: int = 4  # Gauss-Legendre nodes per axis of the hit's position inside its pixel
    chunk: int = 4096  # pixels per FFT batch (memory: chunk * lattice_size * 16 bytes)

    def __post_init__(self):
        if not self.lattice_step > 0 or self.lattice_size < 512:
            raise ValueError(f"ResponseConfig: lattice_step > 0 and lattice_size >= 512 (saturation at 255), got {self}")


def _normal_nodes(n: int, mean: float, sd: float) -> tuple[np.ndarray, np.ndarray]:
    """Gauss-Hermite nodes and weights (summing to 1) of N(mean, sd^2)."""
    if sd <= 0 or n == 1:
        return np.array([mean]), np.array([1.0])
    t, w = np.polynomial.hermite_e.hermegauss(n)
    return mean + sd * t, w / w.sum()


def recorded_value_tables(camera: FrameModel, values: np.ndarray) -> dict[str, np.ndarray]:
    """f, f2 and their first two derivatives (f1, f11, f2_1, f2_11) at the light ``values`` (counts):
    the recorded value's conditional moments.

    ``f(l) = E[clip(round(b + l), 0, 255)]`` with ``b ~ N(background_mean, background_std^2)``:
    ``sum_{k=1}^{255} P(b + l >= k - 1/2)`` (exact, as ``sevi.camera.direct_image.background_moments``),
    ``f2(l) = E[Y^2 | l] = sum_k (2k - 1) P(b + l >= k - 1/2)``, and f's first two derivatives."""
    from scipy.special import ndtr

    v = np.asarray(values, dtype=np.float64)[:, None]
    k = np.arange(1, 256, dtype=np.float64)[None, :]
    mu, sd = float(camera.background_mean), float(camera.background_std)
    if sd == 0:
        raise ValueError("recorded_value_tables: the camera's background_std must be > 0")
    z = (mu + v - (k - 0.5)) / sd
    tail = ndtr(z)
    pdf = np.exp(-0.5 * z * z) / math.sqrt(2 * math.pi) / sd
    return {"f": tail.sum(1), "f2": ((2 * k - 1) * tail).sum(1), "f1": pdf.sum(1),
            "f11": (-z / sd * pdf).sum(1), "f2_1": ((2 * k - 1) * pdf).sum(1),
            "f2_11": ((2 * k - 1) * (-z / sd) * pdf).sum(1)}


@dataclass(frozen=True)
class SpotKernels:
    """One camera's spot, as the response needs it; arrays over the window's offsets (W, W), W = 2 h + 1,
    index h = offset 0, axis 0 = x, axis 1 = z; float64 on the CPU.

    ``mean``: E[v] (counts per hit), sharpened by -(1/12) laplacian for hits spread inside their pixel;
    ``second``: E[v^2]; ``lattice``: (J, W, W), the expected tent weight of lattice value j h (j = 1..J);
    ``inflation``: E[h^2 t (1 - t)], the variance the lattice adds per mark."""
    mean: torch.Tensor
    second: torch.Tensor
    lattice: torch.Tensor
    inflation: torch.Tensor
    step: float

    @property
    def half(self) -> int:
        return self.mean.shape[0] // 2


@lru_cache(maxsize=4)
def spot_kernels(camera: FrameModel = FrameModel(), config: ResponseConfig = ResponseConfig()) -> SpotKernels:
    """The kernels of :class:`SpotKernels` for ``camera`` (a few seconds; cached per camera and config).

    The spot is the renderer's (``sevi.camera.frames.render_frames``): a hit at pixel coordinate
    ``x0 + delta`` (delta in [-1/2, 1/2)) lights the pixels within ``window_half_px`` of ``x0``; pixel
    ``x0 + d`` gets ``A`` times the mean over its 5 x 5 sub-samples ``d + u`` (u = (i + 1/2)/S - 1/2)
    of ``exp(-(dx^2 + dz^2 + 2 rho dx dz) / (2 s^2))``, ``dx = d_x + u_x - delta_x``, s in pixels."""
    c, h = camera, camera.window_half_px
    S = c.subpixel
    u = (np.arange(S) + 0.5) / S - 0.5
    d = np.arange(-h, h + 1, dtype=np.float64)
    tp, wp = np.polynomial.legendre.leggauss(config.n_position)
    tp, wp = 0.5 * tp, wp / wp.sum()  # the hit's position inside its pixel: uniform on [-1/2, 1/2]
    s_nodes, s_w = _normal_nodes(config.n_width, c.sigma_mean, c.sigma_std)
    r_nodes, r_w = _normal_nodes(config.n_tilt, 0.0, c.rho_std)
    a_nodes, a_w = _normal_nodes(config.n_amplitude, c.amp_mean, c.amp_std)
    a_nodes = np.clip(a_nodes, 0.0, None)
    W = 2 * h + 1
    step = config.lattice_step
    J = int(math.ceil((a_nodes.max() * 1.0000001) / step)) + 1
    mean = np.zeros((W, W))
    second = np.zeros((W, W))
    infl = np.zeros((W, W))
    lat = torch.zeros((J + 2) * W * W, dtype=torch.float64)
    cell = torch.arange(W * W)
    a_t = torch.tensor(a_nodes)
    for dxi, wx in zip(tp, wp):
        for dzi, wz in zip(tp, wp):
            # sample offsets from the hit, px: (W, S) per axis
            ox = (d[:, None] + u[None, :] - dxi).ravel()
            oz = (d[:, None] + u[None, :] - dzi).ravel()
            for s, ws in zip(s_nodes, s_w):
                s_px = max(s, 1e-6) * c.px_per_unit
                for rho, wr in zip(r_nodes, r_w):
                    rho = float(np.clip(rho, -1.0, 1.0))
                    q = (ox[:, None] ** 2 + oz[None, :] ** 2 + 2 * rho * ox[:, None] * oz[None, :]) / (2 * s_px * s_px)
                    g = np.exp(-q).reshape(W, S, W, S).mean(axis=(1, 3))  # (W, W): the spot's shape
                    w = wx * wz * ws * wr
                    mean += w * c.amp_mean * g
                    second += w * (c.amp_mean ** 2 + c.amp_std ** 2) * g * g
                    v = a_t[:, None] * torch.from_numpy(g).reshape(1, -1) / step  # (nA, W W) in steps
                    j = torch.floor(v).long()
                    t = v - j
                    wa = torch.tensor(a_w)[:, None] * w
                    infl += (wa * t * (1 - t)).sum(0).numpy().reshape(W, W) * step * step
                    lat.index_add_(0, (j * W * W + cell).reshape(-1), (wa * (1 - t)).reshape(-1))
                    lat.index_add_(0, ((j + 1) * W * W + cell).reshape(-1), (wa * t).reshape(-1))
    lattice = lat.reshape(J + 2, W, W)[1:J + 1]  # value 0 carries no light; J + 1 is never reached
    # Hits spread uniformly over their pixel stand for a density that varies inside it: to second
    # order that blurs by 1/12 px^2 per axis, undone by sharpening the mean (docstring, point 4).
    lap = np.zeros_like(mean)
    lap[1:-1, :] += mean[2:, :] - 2 * mean[1:-1, :] + mean[:-2, :]
    lap[:, 1:-1] += mean[:, 2:] - 2 * mean[:, 1:-1] + mean[:, :-2]
    return SpotKernels(mean=torch.from_numpy(mean - lap / 12.0), second=torch.from_numpy(second),
                       lattice=lattice.contiguous(), inflation=torch.from_numpy(infl), step=step)


class CameraResponse:
    """Configure once (a camera's kernels and tables, on a device), call many:
    ``CameraResponse(camera, device)(rate)`` with ``rate`` the hits per frame per pixel of the
    positive quadrant (G/2, G/2) of the camera's frame (module docstring); with ``symmetric=False``,
    of the whole frame (G, G), whose centre may lie anywhere (``sevi.fit.centred_frame_sum_fit``)."""

    def __init__(self, camera: FrameModel = FrameModel(), device="cpu", config: ResponseConfig = ResponseConfig(),
                 symmetric: bool = True):
        from sevi.runtime.device import pick_device

        self.camera, self.config = camera, config
        self.symmetric = symmetric  # rate is the positive quadrant (mirrored); False: the whole frame
        self.device = pick_device(device)
        self.kernels = spot_kernels(camera, config)
        lv = np.arange(config.lattice_size) * config.lattice_step
        tab = recorded_value_tables(camera, lv)
        self.tables = {k: torch.tensor(v, dtype=torch.float64, device=self.device) for k, v in tab.items()}
        self.no_light = float(tab["f"][0])  # E[Y] of a pixel without light: the background's clipped mean
        self._ffts: dict[tuple[int, int], tuple] = {}

    # -- convolutions ---------------------------------------------------------------------------
    def _padded(self, rate: torch.Tensor) -> torch.Tensor:
        """The quadrant mirrored across the centre lines (the frame's symmetry) and zero past its edge;
        a whole frame (``symmetric`` False) zero past every edge."""
        h = self.kernels.half
        before = (lambda t, d: t.narrow(d, 0, h).flip(d)) if self.symmetric else \
            (lambda t, d: torch.zeros_like(t.narrow(d, 0, h)))
        x = torch.cat([before(rate, 0), rate, torch.zeros_like(rate[:h])], 0)
        return torch.cat([before(x, 1), x, torch.zeros_like(x[:, :h])], 1)

    def _kernel_ffts(self, shape: tuple[int, int]):
        if shape not in self._ffts:
            k = self.kernels
            fft = lambda t, dt: torch.fft.rfft2(t.to(self.device, dt), s=shape)  # noqa: E731
            stack = torch.stack([k.mean, k.second, k.inflation])
            self._ffts = {shape: (fft(stack, torch.float64), fft(k.lattice, torch.float32))}
        return self._ffts[shape]

    def _convolve(self, rate: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(mean light, E-second, inflation) (3, H, W) float64 and the Levy measure (J, H, W) float32."""
        H, W = rate.shape
        h = self.kernels.half
        x = self._padded(rate)
        shape = (x.shape[0] + 2 * h, x.shape[1] + 2 * h)
        k64, k32 = self._kernel_ffts(shape)
        X = torch.fft.rfft2(x, s=shape)
        # full convolution: output index i + 2h <-> input pixel i + h (the padded quadrant's origin)
        sl = (slice(2 * h, 2 * h + H), slice(2 * h, 2 * h + W))
        stats = torch.fft.irfft2(X[None] * k64, s=shape)[(slice(None),) + sl]
        X32 = X.to(torch.complex64)[None]
        nu = torch.empty((len(k32), H, W), dtype=torch.float32, device=self.device)
        for j in range(0, len(k32), 32):  # 32 lattice values at a time bound the temporaries
            nu[j:j + 32] = torch.fft.irfft2(X32 * k32[j:j + 32], s=shape)[(slice(None),) + sl]
        return stats, nu.clamp_min(0)

    # -- the response ---------------------------------------------------------------------------
    @torch.no_grad()
    def __call__(self, rate) -> dict[str, torch.Tensor]:
        """Per pixel of the quadrant (H, W), float64: mean (E[Y] - E[Y | no light]), light (E[L]),
        var (Var Y), slope (E[f'(L)]), scaled (d E[Y] / d alpha), light_var (Var L); counts per frame."""
        rate = torch.as_tensor(rate, dtype=torch.float64, device=self.device)
        if rate.ndim != 2 or not bool(torch.isfinite(rate).all()) or \
                bool((rate < -1e-9 * rate.abs().max().clamp_min(1e-300)).any()):
            raise ValueError("CameraResponse: rate must be a finite (H, W) image of hits per frame per pixel >= 0")
        rate = rate.clamp_min(0)  # quadrature rounding of an expected image can leave -1e-17
        stats, nu = self._convolve(rate)
        light, second, infl = stats[0], stats[1].clamp_min(0), stats[2].clamp_min(0)
        tb, f0 = self.tables, self.no_light
        out = {"light": light, "light_var": second}
        # Dim pixels: f and f2 to second order about 0 (L's first two moments, E[L^2] = Var L + E[L]^2).
        t0 = {k: float(v[0]) for k, v in tb.items()}
        ell2 = second + light * light
        mean = t0["f1"] * light + 0.5 * t0["f11"] * ell2
        var = (t0["f2"] + t0["f2_1"] * light + 0.5 * t0["f2_11"] * ell2) - (f0 + mean) ** 2
        slope = t0["f1"] + t0["f11"] * light
        scaled = t0["f1"] * light + 0.5 * t0["f11"] * (second + 2 * light * light)
        lit = (light > self.config.min_light).reshape(-1).nonzero().reshape(-1)
        if len(lit):
            J = nu.shape[0]
            N = self.config.lattice_size
            nu_flat = nu.reshape(J, -1)
            m_flat, infl_flat = light.reshape(-1), infl.reshape(-1)
            res = {k: v.reshape(-1).clone() for k, v in (("mean", mean), ("var", var), ("slope", slope),
                                                            ("scaled", scaled))}
            step = self.kernels.step
            for s0 in range(0, len(lit), self.config.chunk):
                idx = lit[s0:s0 + self.config.chunk]
                levy = torch.zeros(len(idx), N, dtype=torch.float64, device=self.device)
                levy[:, 1:J + 1] = nu_flat[:, idx].T.double()
                log_cf = torch.fft.rfft(levy, dim=1) - levy.sum(1, keepdim=True)
                cf = torch.exp(log_cf)
                pmf = torch.fft.irfft(cf, n=N, dim=1)
                dpmf = torch.fft.irfft(cf * log_cf, n=N, dim=1)  # d pmf / d alpha: the rate scaled by alpha
                e = {k: pmf @ v for k, v in tb.items()}
                lattice_mean = levy[:, 1:J + 1] @ (torch.arange(1, J + 1, dtype=torch.float64, device=self.device) * step)
                # the lattice's added variance taken out (second order), and the mean the sharpened
                # kernel adds put in (first order)
                shift, extra = m_flat[idx] - lattice_mean, infl_flat[idx]
                ef = e["f"] - 0.5 * e["f11"] * extra + e["f1"] * shift
                ef2 = e["f2"] - 0.5 * e["f2_11"] * extra + e["f2_1"] * shift
                res["mean"][idx] = ef - f0
                res["var"][idx] = ef2 - ef * ef
                res["slope"][idx] = e["f1"]
                res["scaled"][idx] = dpmf @ tb["f"]
            shape = light.shape
            out.update({k: v.reshape(shape) for k, v in res.items()})
        else:
            out.update({"mean": mean, "var": var, "slope": slope, "scaled": scaled})
        out["var"] = out["var"].clamp_min(0)
        return out
