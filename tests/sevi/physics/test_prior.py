import dataclasses

import pytest
import torch

from sevi.physics.prior import Prior, PriorConfig


def test_prior_draws_valid_sorted_sets_in_range():
    prior = Prior()
    draw = prior(500, seed=1)
    p, c = draw.params, prior.config
    assert p.beta.shape == (500, 2, 12)
    assert prior.check(p.beta).all(), "every drawn shell must be a valid density"
    assert (p.R[:, 0] <= p.R[:, 1]).all(), "shells must be sorted by radius"
    assert ((p.R >= 0.3) & (p.R <= 0.9)).all() and ((p.sigma_R >= 0.005) & (p.sigma_R <= 0.009)).all()
    lo, hi = torch.tensor(c.beta_low, dtype=torch.float64), torch.tensor(c.beta_high, dtype=torch.float64)
    assert ((p.beta >= lo) & (p.beta <= hi)).all()
    assert ((p.n_electrons >= 1_800_000) & (p.n_electrons <= 2_500_000)).all()
    # Measured rejection rate of the notes' prior: ~4.7% of shells (README). Bounds, not a copy.
    assert 0.01 < draw.rejection_rate < 0.15
    assert draw.candidates == 1000 + draw.rejected_density


def test_prior_is_deterministic_per_seed():
    a, b, c = Prior()(20, 7).params, Prior()(20, 7).params, Prior()(20, 8).params
    assert torch.equal(a.beta, b.beta) and torch.equal(a.R, b.R)
    assert not torch.equal(a.beta, c.beta)


def test_min_separation():
    p = Prior(dataclasses.replace(PriorConfig(), min_separation=0.1))(300, 2)
    assert ((p.params.R[:, 1] - p.params.R[:, 0]) >= 0.1).all()
    assert p.rejected_separation > 0


def test_prior_that_cannot_be_valid_is_an_error():
    # beta_2 forced to [-1, -0.9]: I(1) = 1/2 + beta_2 < 0 always.
    bad = dataclasses.replace(PriorConfig(), beta_low=(-1.0,), beta_high=(-0.9,), beta_mean=(-1.0,),
                              beta_sigma=(0.1,), max_rounds=5)
    with pytest.raises(RuntimeError, match="no valid angular density"):
        Prior(bad)(3, 0)


def test_config_errors_name_the_field():
    with pytest.raises(ValueError, match="beta_high"):
        PriorConfig(beta_high=(1.0,))
    with pytest.raises(ValueError, match="radius_range"):
        PriorConfig(radius_range=(0.9, 0.3))
