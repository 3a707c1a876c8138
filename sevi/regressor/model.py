"""ResNet34 regressor for two-shell SEVI images (torchvision ``models/resnet.py`` layout).

What goes in: ``x`` of shape (batch, C, H, W) float32, the output of ``sevi.regressor.features.Features``
(C = 1 for every representation we ship; H, W fixed by the representation, e.g. the folded
quadrant of a 64 x 64 image is 32 x 32, the polar map 64 x 32). Pixels are electron densities
scaled so that an image's pixels average ~1 whatever its electron count (features.py).

What comes out (``forward``): (batch, 2 * N_TARGETS) float32 in *normalised* units: the first
N_TARGETS are the mean prediction, the last N_TARGETS the log-variance of a Gaussian per target
(the heteroscedastic head that ``sevi predict`` turns into 1-sigma error bars; trained with a
Gaussian NLL on the detached mean, training.py; after training its sd is rescaled per target by
the buffer ``sd_scale`` so that z-scores on the validation set have unit RMS). Target layout (``N_TARGETS = 2 * (L + 2)``,
L = 12 by default, shells sorted by R, smaller first):

    [ beta_{2..2L} of shell 0 (L), beta_{2..2L} of shell 1 (L), R_0, R_1, sigma_R0, sigma_R1 ]

beta in the course's convention (beta_2 first), R and sigma_R in detector units ([-1, 1] field).

Target normalisation: ``y_norm = (y - target_mean) / target_std``, with ``target_mean`` and
``target_std`` (N_TARGETS,) computed ONCE from a large seeded draw of the training prior
(training.target_stats), never from a batch, stored here as buffers and so in every checkpoint.
``decode`` maps a forward output back to physical units:
``{"beta": (B, 2, L), "R": (B, 2), "sigma_R": (B, 2), "beta_sd", "R_sd", "sigma_R_sd"}``.

Named constructor: ``resnet34_regressor(width=64)`` is ResNet34 ([3, 4, 6, 3] BasicBlocks),
~21.3 M parameters at width 64; ``width`` scales every stage (16 for the CPU preset).
"""

from __future__ import annotations

import torch
from torch import Tensor, nn


def conv3x3(c_in: int, c_out: int, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(c_in, c_out, 3, stride=stride, padding=1, bias=False)


def conv1x1(c_in: int, c_out: int, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(c_in, c_out, 1, stride=stride, bias=False)


class BasicBlock(nn.Module):
    expansion = 1

    def __init__(self, c_in: int, c_out: int, stride: int = 1, downsample: nn.Module | None = None):
        super().__init__()
        self.conv1 = conv3x3(c_in, c_out, stride)
        self.bn1 = nn.BatchNorm2d(c_out)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = conv3x3(c_out, c_out)
        self.bn2 = nn.BatchNorm2d(c_out)
        self.downsample = downsample

    def forward(self, x: Tensor) -> Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu(out + identity)


class ResNetRegressor(nn.Module):
    """ResNet trunk + linear head giving mean and log-variance of every normalised target."""

    def __init__(self, layers: list[int], n_terms: int = 12, in_channels: int = 1, width: int = 64,
                 stem_stride: int = 1):
        super().__init__()
        self.n_terms = n_terms
        self.n_targets = 2 * (n_terms + 2)
        self.c = width
        # torchvision's stem is a stride-2 7x7 conv + maxpool (a /4 cut for 224 px photos). Our
        # inputs are already small (32-64 px) and the rings are ~1 px thick: stem_stride=1 and no
        # maxpool keep them; stem_stride=2 adds torchvision's cut for large full-scale inputs.
        self.conv1 = nn.Conv2d(in_channels, width, 7 if stem_stride > 1 else 3, stride=stem_stride,
                               padding=3 if stem_stride > 1 else 1, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(3, stride=2, padding=1) if stem_stride > 1 else nn.Identity()
        self.layer1 = self._make_layer(width, layers[0])
        self.layer2 = self._make_layer(2 * width, layers[1], stride=2)
        self.layer3 = self._make_layer(4 * width, layers[2], stride=2)
        self.layer4 = self._make_layer(8 * width, layers[3], stride=2)
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(8 * width, 2 * self.n_targets)
        # Normalisation of the targets, set once from the prior (training.target_stats).
        self.register_buffer("target_mean", torch.zeros(self.n_targets))
        self.register_buffer("target_std", torch.ones(self.n_targets))
        # Per-target factor on the head's sd, fitted on the validation set after training
        # (training.calibrate_uncertainties; 1 = uncalibrated).
        self.register_buffer("sd_scale", torch.ones(self.n_targets))
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight), nn.init.zeros_(m.bias)
        for m in self.modules():  # torchvision's zero_init_residual: each block starts as identity
            if isinstance(m, BasicBlock):
                nn.init.zeros_(m.bn2.weight)
        nn.init.zeros_(self.fc.bias)

    def _make_layer(self, c_out: int, blocks: int, stride: int = 1) -> nn.Sequential:
        down = None
        if stride != 1 or self.c != c_out:
            down = nn.Sequential(conv1x1(self.c, c_out, stride), nn.BatchNorm2d(c_out))
        layers = [BasicBlock(self.c, c_out, stride, down)]
        self.c = c_out
        layers += [BasicBlock(c_out, c_out) for _ in range(1, blocks)]
        return nn.Sequential(*layers)

    def forward(self, x: Tensor) -> Tensor:
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return self.fc(torch.flatten(self.avgpool(x), 1))  # (B, 2 * n_targets)

    def set_target_stats(self, mean: Tensor, std: Tensor) -> None:
        self.target_mean.copy_(mean), self.target_std.copy_(std)

    def decode(self, out: Tensor) -> dict[str, Tensor]:
        """Forward output (B, 2 * n_targets) -> physical units, float32 (see module docstring)."""
        out = out.float()
        mu, logvar = out[:, :self.n_targets], out[:, self.n_targets:].clamp(-20, 10)
        y = mu * self.target_std + self.target_mean  # (B, n_targets)
        sd = torch.exp(0.5 * logvar) * self.target_std * self.sd_scale
        L = self.n_terms
        split = lambda t: {"beta": t[:, :2 * L].reshape(-1, 2, L), "R": t[:, 2 * L:2 * L + 2],  # noqa: E731
                           "sigma_R": t[:, 2 * L + 2:]}
        res = split(y)
        res.update({k + "_sd": v for k, v in split(sd).items()})
        return res


def resnet34_regressor(n_terms: int = 12, in_channels: int = 1, width: int = 64, stem_stride: int = 1) -> ResNetRegressor:
    """ResNet34: BasicBlocks [3, 4, 6, 3]. width=64 is the paper's (about 21 M parameters)."""
    return ResNetRegressor([3, 4, 6, 3], n_terms, in_channels, width, stem_stride)


def targets_from_params(beta: Tensor, R: Tensor, sigma_R: Tensor) -> Tensor:
    """(B, 2, L), (B, 2), (B, 2) -> (B, 2 * (L + 2)) in the model's target layout (physical units)."""
    return torch.cat([beta.reshape(beta.shape[0], -1), R, sigma_R], dim=1)
