"""Shapes, parameter count and decoding of the ResNet34 regressor."""

import torch
from numpy.testing import assert_allclose

from sevi.regressor.model import resnet34_regressor, targets_from_params


def test_resnet34_width64_has_about_21M_parameters():
    n = sum(p.numel() for p in resnet34_regressor(width=64).parameters())
    # torchvision resnet34 is 21.8 M with a 1000-way fc; ours has a 1-channel stem and a 56-way head.
    assert 20.5e6 < n < 22e6, f"width-64 ResNet34 has {n} parameters"


def test_output_shapes_and_decode_layout():
    torch.manual_seed(0)
    m = resnet34_regressor(width=4).eval()
    out = m(torch.rand(3, 1, 32, 16))
    assert out.shape == (3, 2 * 28)
    mean, std = torch.arange(28.0), torch.full((28,), 2.0)
    m.set_target_stats(mean, std)
    d = m.decode(torch.zeros(3, 56))  # zero mean, zero log-variance -> the stored mean, sd = std
    y = targets_from_params(d["beta"], d["R"], d["sigma_R"])
    assert_allclose(y.numpy(), mean.expand(3, -1).numpy(), err_msg="decode does not invert the target layout")
    assert d["beta"].shape == (3, 2, 12) and d["R"].shape == (3, 2) and d["sigma_R"].shape == (3, 2)
    assert_allclose(d["beta_sd"].numpy(), 2.0, err_msg="sd of a zero log-variance must be target_std")
    assert_allclose(d["R"][0].numpy(), [24.0, 25.0], err_msg="R must follow the 24 betas")


def test_stem_stride_2_accepts_large_inputs():
    m = resnet34_regressor(width=4, stem_stride=2).eval()
    assert m(torch.rand(1, 1, 128, 64)).shape == (1, 56)
