"""The frame-sum fit with the image centre fitted too: what ``sevi analyze --centre fit`` uses.

``sevi.fit.frame_sum_fit.FrameSumRefiner`` takes the course's centre (the corner between the frame's two
middle pixels) and fits the folded quadrant. Frames whose centre is not known (a lab's camera, a
detector whose axis drifted) break that fold. This fit keeps everything else of the frame-sum fit (the
camera's exact response at anchors around the linear surrogate, the chord gain, weighted least squares
with the camera's variances, the sandwich error bars, the block chi^2, the regressor's start, the
prior, the mixture of modes) and fits the whole frame sum instead of its fold:

    theta = (per shell R, sigma_R, N, beta_2 .. beta_2L, then x0, z0),

with the centre in the fit grid's pixel indices (``sevi.fit.centred_fit.to_input_pixels`` turns it
into the frames'). The pieces that change:

* the hits, on the whole fine grid and on the whole camera grid, around any centre
  (``sevi.physics.grid_image.GridImage``, whose closed-form Jacobian includes the centre);
* the blur, one whole axis (``sevi.fit.direct_fit.spot_matrix`` with ``mirror=False``);
* the camera's exact response at anchors whose centre is snapped to the nearest corner between
  camera pixels: there the frame is mirror-symmetric, so the response is computed once on the
  largest quadrant about it (``sevi.camera.camera_response.CameraResponse``) and laid out on the
  frame; the fit's surrogate, ``mu_exact(anchor) + G (mu_lin(theta) - mu_lin(anchor))``, carries
  it the remaining fraction of a camera pixel (at most 1/8 of a fit pixel at 256^2). Computing the
  response on the whole frame at the centre itself (``CameraResponse(symmetric=False)``) costs six
  times as much (13 s against 2 s per anchor at 1024^2) and is what the tests compare against;
* the fit pixels: the whole fit grid, k x k camera pixels each (no fold, no factor 4);
* the centre's prior: uniform on a box of ``centre_window`` camera pixels around its start, the
  convolution estimate (``sevi.fit.centre_estimate.estimate_centre``) of the rebinned frame sum.

Held at the course's centre it gives the known-centre fit's answer within a fraction of an error bar
(the unfolded pixels are weighted one by one, the fold's mirror pairs together;
tests/sevi/fit/test_centred_frame_sum_fit.py).
Cost: four times the folded fit's pixels for the surrogate, and the exact model on a quadrant a few
pixels larger than the folded fit's at every anchor (BENCHMARKS.md, "Centre in the frame-sum fit").
"""

from __future__ import annotations

import torch

from sevi.fit.centred_fit import add_centre_parameters, centre_on_grid, centre_prior, whole_image_shells
from sevi.fit.count_fit import FitConfig, FitResult
from sevi.fit.direct_fit import DirectNoise, fine_grid, spot_matrix
from sevi.fit.frame_sum_fit import FrameSumRefiner
from sevi.physics.grid_image import GridImage, PixelGrid
from sevi.physics.prior import PriorConfig

__all__ = ["CENTRED_OVERSAMPLE", "CentredFrameSumRefiner"]

# The hits' grid per fit pixel that ``sevi analyze --centre fit`` uses: on the fit's own grid the
# linear surrogate's Jacobian depends on where the centre falls inside a fit pixel, which costs
# efficiency where rings are thinner than a pixel (tests/sevi/fit/test_centred_frame_sum_fit.py;
# BENCHMARKS.md, "Centre in the frame-sum fit").
CENTRED_OVERSAMPLE = 2


class CentredFrameSumRefiner(FrameSumRefiner):
    """``CentredFrameSumRefiner(cfg, prior, device, noise)(image, R, sigma_R, beta, R_sd, centre=None)``:
    ``image`` the frame sum in electron units (``sevi.camera.direct_image``) at a grid the fit grid
    divides; ``centre`` None (estimated, then fitted) or (x0, z0) in the camera's frame pixel indices
    (held; the course's centre is (G - 1) / 2 for a G-pixel camera)."""

    def __init__(self, config: FitConfig = FitConfig(fit_grid=256), prior: PriorConfig = PriorConfig(),
                 device="cpu", noise: DirectNoise = DirectNoise(), oversample: int = 1, centre_window: float = 40.0,
                 **kwargs):
        super().__init__(config, prior, device, noise, oversample, **kwargs)
        g, G = config.fit_grid, self.camera.grid
        fine = fine_grid(g, noise.spot_sigma, oversample)
        self.o, self.k = fine // g, G // g  # fine pixels per fit pixel, camera pixels per fit pixel
        self.fine_image = GridImage(PixelGrid((fine, fine), 2.0 / fine), self.L, config.forward, self.device)
        self.W = spot_matrix(g, fine, noise.spot_sigma * fine / 2.0, mirror=False).to(self.device)
        self.W2 = self.W ** 2
        self.centre_window = float(centre_window)  # camera pixels around the start
        add_centre_parameters(self)

    def _unpack(self, theta: torch.Tensor):
        return super()._unpack(theta[: self.n_shell_params])

    def _linear(self, theta, jacobian):
        lam, J = whole_image_shells(self, self.fine_image, theta, self.o, jacobian)
        self._hits = lam  # the noise's intensity (FrameSumRefiner's)
        return lam, J

    def snapped(self, theta: torch.Tensor) -> torch.Tensor:
        """theta with its centre moved to the nearest corner between camera pixels (camera index
        m + 1/2), where the frame is mirror-symmetric about the centre's lines."""
        k = self.k
        cam = torch.round((theta[-2:] * k + (k - 1) / 2) - 0.5) + 0.5
        out = theta.clone()
        out[-2:] = (cam - (k - 1) / 2) / k
        return out

    def _set_anchor(self, theta: torch.Tensor) -> None:
        """The anchor at theta's centre snapped to a pixel corner (``snapped``): the exact model there
        costs one quadrant's response (``exact``), and the surrogate carries the fit the remaining
        fraction of a camera pixel (module docstring)."""
        super()._set_anchor(self.snapped(theta))

    def exact(self, theta: torch.Tensor) -> dict[str, torch.Tensor]:
        """The camera's response to theta's hits on the whole frame, per fit pixel (as the parent's).
        theta's centre must lie on a corner between camera pixels (``snapped``): the response is then
        computed on the largest quadrant about it (the frame is mirror-symmetric there) and laid out
        on the frame; hits past the frame's edges are not in it."""
        G, k = self.camera.grid, self.k
        cx, cz = centre_on_grid(theta, k)
        if abs(cx % 1 - 0.5) > 1e-6 or abs(cz % 1 - 0.5) > 1e-6:
            raise ValueError(f"exact: the centre ({cx}, {cz}) must lie on a corner between camera pixels")
        idx = [torch.arange(G, device=self.device, dtype=torch.float64) - c for c in (cx, cz)]
        qi, qj = (torch.where(d > 0, d - 0.5, -d - 0.5).long() for d in idx)  # quadrant index of each pixel
        hq = int(max(int(qi.max()), int(qj.max()))) + 1
        quadrant = GridImage(PixelGrid((hq, hq), 2.0 / G), self.L, self.config.forward, self.device)
        R, s, N, beta = self._unpack(theta)
        hits = sum(quadrant.shell(float(R[j]), float(s[j]), float(N[j]), beta[j], (-0.5, -0.5))[0] for j in range(2))
        out = self.response(hits / self.noise.n_frames)
        self.exact_evaluations += 1
        return self._exact_per_fit_pixel({key: v[qi][:, qj] for key, v in out.items()})

    def _block(self, x: torch.Tensor) -> torch.Tensor:
        """The whole camera grid (G, G) -> fit pixels (flattened): k x k block sums."""
        g, k = self.config.fit_grid, self.k
        return x.reshape(g, k, g, k).sum(dim=(1, 3)).reshape(-1)

    def fold(self, image) -> torch.Tensor:
        """The whole image at the fit grid, flattened: nothing is folded when the centre is free."""
        return self.rebin(image).reshape(-1)

    def _block_ids(self, device) -> torch.Tensor:
        g, b = self.config.fit_grid, self.chi2_block
        nb = -(-g // b)
        label = torch.arange(g, device=device) // b
        return (label[:, None] * nb + label[None, :]).reshape(-1)

    def __call__(self, image, R, sigma_R, beta, R_sd=None, centre=None) -> FitResult:
        rebinned = self.rebin(image)
        c0_t = centre_prior(self, rebinned, centre, self.k, self.centre_window)  # camera pixels per fit pixel
        n = rebinned.reshape(-1)
        total = float(n.sum())
        if not total > 0:
            raise ValueError("the image has no light; nothing to fit")
        starts = [(name, torch.cat([th, c0_t])) for name, th in self.starts(R, sigma_R, beta, total, R_sd)]
        return self._anchored(starts, n)
