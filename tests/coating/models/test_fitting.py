"""coating.models.fitting (through the coating.models front door): the fit loop and its reports, the
best of several candidates, fine-tuning. Fixtures ``cycle_rows`` and ``fitted``: conftest.py."""
import pytest

from coating.line import history_rows
from coating.models import fitting
from tests.coating.conftest import FAST  # the short fits the shared fixtures make too


def test_fit_reports_every_epoch_and_greybox_validates_well(cycle_rows):
    tr, va = history_rows.time_split(cycle_rows, 1)
    seen = []
    res = fitting.fit("greybox", FAST["greybox"], tr, va, report=lambda e, m: seen.append((e, m)))
    assert [e for e, _ in seen] == [1, 2]
    assert {"train_loss", "val_loss", "val_rmse_R", "val_dE00"} <= set(seen[-1][1])
    # The physics with calibrated tooling predicts unseen later runs within the run noise.
    assert res.metrics["val_rmse_R"] < 0.3, res.metrics


def test_fine_tune_moves_the_grey_box_towards_a_new_run(fitted, cycle_rows):
    g = fitted["greybox"].model
    last = history_rows.select_rows(cycle_rows, [19])
    before = float(fitting.run_loss(g, last)[0])
    g2 = fitting.fine_tune(g, last)
    assert float(g2.r_last) == 20.0 and float(g.r_last) != 20.0, "fine_tune must not modify its input"
    after = float(fitting.run_loss(g2, last)[0])
    assert after < before, (before, after)


def test_fit_best_keeps_the_lowest_validation_loss(cycle_rows):
    tr, va = history_rows.time_split(cycle_rows, 1)
    cands = [{"walk_sd": 1e-4}, {"walk_sd": 3e-3}, {"walk_sd": 1e-2}]
    best, i = fitting.fit_best("greybox", FAST["greybox"], cands, tr, va)
    losses = [fitting.fit("greybox", {**FAST["greybox"], **c}, tr, va).metrics["val_loss"] for c in cands]
    assert i == min(range(3), key=losses.__getitem__)
    assert best.hparams["walk_sd"] == cands[i]["walk_sd"] and best.hparams["epochs"] == 2
    assert best.metrics["val_loss"] == pytest.approx(losses[i], rel=1e-9)
    with pytest.raises(ValueError, match="validation runs"):
        fitting.fit_best("greybox", FAST["greybox"], cands, tr, None)
    with pytest.raises(ValueError, match="no candidate"):
        fitting.fit_best("greybox", FAST["greybox"], [], tr, va)
