"""coating.models.hparams (through the coating.models front door): hyperparameters checked, the Tune
search space within the defaults."""
import pytest

from coating.models import hparams as models


def test_hparams_are_checked():
    with pytest.raises(ValueError, match="unknown hyperparameter"):
        models.resolve_hparams("model1", {"lr": 1e-3, "widht": 3})
    with pytest.raises(ValueError, match="unknown model kind"):
        models.resolve_hparams("model3", {})
    for kind, space in models.SEARCH_SPACE.items():
        assert set(space) <= set(models.DEFAULTS[kind]), kind
        assert {"lr", "width", "depth", "weight_decay", "epochs"} <= set(space)
