import torch
from numpy.testing import assert_allclose

from sevi.physics.legendre import angular_density
from sevi.physics.metric import distance, squared_distance_loss


def test_distance_is_l2_between_densities():
    g = torch.Generator().manual_seed(0)
    beta = torch.rand(5, 2, 12, generator=g, dtype=torch.float64) * 0.3
    beta_hat = beta + 0.05 * torch.randn(5, 2, 12, generator=g, dtype=torch.float64)
    x = torch.linspace(-1, 1, 40001, dtype=torch.float64)
    diff = angular_density(x, beta_hat) - angular_density(x, beta)  # (5, 2, n)
    ref = torch.trapezoid(diff**2, x).sqrt().sum(-1)
    assert_allclose(distance(beta_hat, beta).numpy(), ref.numpy(), rtol=1e-5, err_msg="Distance vs integral (trapezoid error ~1e-6)")


def test_loss_is_mean_squared_shell_distance():
    beta = torch.zeros(3, 2, 12)
    beta_hat = beta.clone()
    beta_hat[:, 0, 0] = 1.0  # weight 2/5 on beta_2
    assert_allclose(squared_distance_loss(beta_hat, beta).item(), 0.4, rtol=1e-6)
    assert_allclose(distance(beta_hat, beta).numpy(), [0.4**0.5] * 3, rtol=1e-6)
