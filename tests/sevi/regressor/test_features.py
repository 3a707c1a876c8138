"""Input representations: quadrant folding, exact rebinning, grid errors."""

import pytest
import torch
from numpy.testing import assert_allclose

from sevi.physics.generator import GeneratorConfig, SeviGenerator
from sevi.physics.prior import Prior, PriorConfig
from sevi.regressor.features import Features, fold_quadrants, rebin


@pytest.mark.parametrize("rep", ["fold", "polar"])
def test_features_are_invariant_under_both_reflections(rep):
    img = torch.randint(0, 50, (2, 32, 32))
    f = Features(rep, 32, n_r=16, n_theta=8)
    for flipped in (img.flip(1), img.flip(2), img.flip(1, 2)):
        assert_allclose(f(flipped).numpy(), f(img).numpy(), rtol=1e-6, err_msg=f"{rep}: not symmetric under a flip")


def test_fold_sums_the_four_quadrants():
    img = torch.zeros(1, 4, 4)
    img[0, 0, 0], img[0, 3, 3], img[0, 0, 3], img[0, 2, 1] = 1, 2, 4, 8  # corners -> (1, 1); (2, 1) -> (0, 0)
    q = fold_quadrants(img)
    assert q.shape == (1, 2, 2)
    assert q[0, 1, 1] == 7 and q[0, 0, 0] == 8 and q.sum() == 15


def test_rebinned_render_equals_render_at_the_coarse_grid():
    pc = PriorConfig().with_electrons(20_000)
    p = Prior(pc)(2, 3).params
    fine = SeviGenerator(GeneratorConfig(grid=64), "cpu", pc).render(p, 5).images
    coarse = SeviGenerator(GeneratorConfig(grid=16), "cpu", pc).render(p, 5).images
    assert torch.equal(rebin(fine, 16), coarse), "a histogram at G/k must be the rebinned histogram at G"
    f = Features("fold", 16)
    assert torch.equal(f(fine), f(coarse))


def test_grid_that_does_not_rebin_is_refused():
    with pytest.raises(ValueError, match="does not rebin exactly"):
        Features("fold", 64)(torch.ones(1, 100, 100))
    with pytest.raises(ValueError, match="square"):
        Features("fold", 64)(torch.ones(1, 128, 64))
    with pytest.raises(ValueError, match="no electrons"):
        Features("fold", 4)(torch.zeros(1, 8, 8))


def test_scaling_is_independent_of_the_electron_total():
    img = torch.randint(0, 9, (1, 32, 32))
    f = Features("polar", 32, n_r=16, n_theta=8)
    assert_allclose(f(img * 10).numpy(), f(img).numpy(), rtol=1e-5)
    assert Features("fold", 32)(img).shape == (1, 1, 16, 16) and f(img).shape == (1, 1, 16, 8)
