"""coating.line.history_rows (through the coating.models front door): the time split."""
import pytest

from coating.line import history_rows as models


def test_time_split_takes_the_latest_runs(cycle_rows):
    tr, va = models.time_split(cycle_rows, 1, val_fraction=0.2)
    assert len(va) == 4 and len(tr) == 16
    assert tr.run_in_cycle.max() < va.run_in_cycle.min(), "validation must be the latest runs"
    with pytest.raises(ValueError, match="runs"):
        models.time_split(cycle_rows, 2)
