"""The recommender's config: the CLI's defaults are the config's, and values out of range are
refused by field (by flag at the CLI)."""
import math

import pytest

from coating.cli import main as cli
from coating.recommend.config import RecommendConfig, RecommendConfigError


def test_cli_defaults_are_the_configs():
    args = cli.build_parser().parse_args(["recommend", "--history", "h", "--runs", "r", "--standard", "s",
                                          "--models", "m", "--out", "o"])
    assert cli.recommend_config(args) == RecommendConfig()
    args = cli.build_parser().parse_args(["recommend", "--history", "h", "--runs", "r", "--standard", "s",
                                          "--models", "m", "--out", "o", "--robust", "0", "--no-refit"])
    assert cli.recommend_config(args) == RecommendConfig(robust_draws=0, refit=False)


@pytest.mark.parametrize("field, value", [("robust_draws", -1), ("bound_rel", 1.0), ("max_step_rel", math.nan),
                                          ("spectral_weight", -0.1)])
def test_out_of_range_is_refused_by_field(field, value):
    with pytest.raises(RecommendConfigError, match=f"^{field} ") as e:
        RecommendConfig(**{field: value})
    assert e.value.field == field
