"""Per-cycle models: normalisation stored (never from the batch), time split, fit loop, fine-tune."""
import dataclasses

import pytest
import torch
from numpy.testing import assert_allclose

from coating import models, plant, schema

P = plant.PlantParams()


@pytest.fixture(scope="module")
def cycle_rows(operator_runs):
    _, _, runs, _ = operator_runs(7, 8, 20, P)
    return schema.history_from_measurements(runs)


FAST = {"model1": {"epochs": 40}, "model2": {"epochs": 40},
        "greybox": {"epochs": 2, "inner_steps": 8, "width": 8}}


@pytest.fixture(scope="module")
def fitted(cycle_rows):
    tr, va = models.time_split(cycle_rows, 1)
    return {k: models.fit(k, FAST[k], tr, va) for k in models.KINDS}


def test_time_split_takes_the_latest_runs(cycle_rows):
    tr, va = models.time_split(cycle_rows, 1, val_fraction=0.2)
    assert len(va) == 4 and len(tr) == 16
    assert tr.run_in_cycle.max() < va.run_in_cycle.min(), "validation must be the latest runs"
    with pytest.raises(ValueError, match="runs"):
        models.time_split(cycle_rows, 2)


@pytest.mark.parametrize("kind", models.KINDS)
def test_single_sample_equals_the_same_sample_in_a_batch(fitted, cycle_rows, kind):
    model = fitted[kind].model
    d = models.rows_to_tensors(cycle_rows)
    with torch.no_grad():
        batch = model.predict(d["settings"], d["std"], d["run"])
        for i in (0, 7, 19):
            one = model.predict(d["settings"][i:i + 1], d["std"][i:i + 1], d["run"][i:i + 1])
            assert_allclose(one.R[0].numpy(), batch.R[i].numpy(), rtol=0, atol=1e-10,
                            err_msg=f"{kind}: sample {i} alone differs from inside the batch")
            assert_allclose(one.lab[0].numpy(), batch.lab[i].numpy(), rtol=0, atol=1e-10)
    # A lone sample is not normalised to zeros by its own statistics (the notes' bug).
    assert one.R.abs().max() > 0.1


@pytest.mark.parametrize("kind", ["model1", "model2"])
def test_normalisation_is_stored_not_recomputed(fitted, cycle_rows, kind):
    model = fitted[kind].model
    norm = model.normaliser
    assert isinstance(norm, models.Normaliser)
    with pytest.raises(dataclasses.FrozenInstanceError):
        norm.x_mean = torch.zeros(1)
    tr, _ = models.time_split(cycle_rows, 1)
    x = torch.as_tensor(tr.settings if kind == "model1" else tr.std)
    assert_allclose(norm.x_mean.numpy(), x.mean(0).numpy(), rtol=1e-12, err_msg="mean of the training rows")
    # Shifting the batch does not change the statistics used.
    d = models.rows_to_tensors(cycle_rows)
    with torch.no_grad():
        a = model.predict(d["settings"][:1], d["std"][:1]).R
        b = model.predict(d["settings"][:2] * torch.tensor([[1.0], [1.1]]), d["std"][:2] * torch.tensor([[1.0], [1.3]])).R[:1]
    assert_allclose(a.numpy(), b.numpy(), atol=1e-12)
    assert torch.equal(model.normaliser.x_mean, norm.x_mean)


def test_fit_reports_every_epoch_and_greybox_validates_well(cycle_rows):
    tr, va = models.time_split(cycle_rows, 1)
    seen = []
    res = models.fit("greybox", FAST["greybox"], tr, va, report=lambda e, m: seen.append((e, m)))
    assert [e for e, _ in seen] == [1, 2]
    assert {"train_loss", "val_loss", "val_rmse_R", "val_dE00"} <= set(seen[-1][1])
    # The physics with calibrated tooling predicts unseen later runs within the run noise.
    assert res.metrics["val_rmse_R"] < 0.3, res.metrics


def test_hparams_are_checked():
    with pytest.raises(ValueError, match="unknown hyperparameter"):
        models.resolve_hparams("model1", {"lr": 1e-3, "widht": 3})
    with pytest.raises(ValueError, match="unknown model kind"):
        models.resolve_hparams("model3", {})
    for kind, space in models.SEARCH_SPACE.items():
        assert set(space) <= set(models.DEFAULTS[kind]), kind
        assert {"lr", "width", "depth", "weight_decay", "epochs"} <= set(space)


def test_fine_tune_moves_the_grey_box_towards_a_new_run(fitted, cycle_rows):
    g = fitted["greybox"].model
    last = models.select_rows(cycle_rows, [19])
    before = float(models.run_loss(g, last)[0])
    g2 = models.fine_tune(g, last)
    assert float(g2.r_last) == 20.0 and float(g.r_last) != 20.0, "fine_tune must not modify its input"
    after = float(models.run_loss(g2, last)[0])
    assert after < before, (before, after)


def test_fit_best_keeps_the_lowest_validation_loss(cycle_rows):
    tr, va = models.time_split(cycle_rows, 1)
    cands = [{"walk_sd": 1e-4}, {"walk_sd": 3e-3}, {"walk_sd": 1e-2}]
    best, i = models.fit_best("greybox", FAST["greybox"], cands, tr, va)
    losses = [models.fit("greybox", {**FAST["greybox"], **c}, tr, va).metrics["val_loss"] for c in cands]
    assert i == min(range(3), key=losses.__getitem__)
    assert best.hparams["walk_sd"] == cands[i]["walk_sd"] and best.hparams["epochs"] == 2
    assert best.metrics["val_loss"] == pytest.approx(losses[i], rel=1e-9)
    with pytest.raises(ValueError, match="validation runs"):
        models.fit_best("greybox", FAST["greybox"], cands, tr, None)
    with pytest.raises(ValueError, match="no candidate"):
        models.fit_best("greybox", FAST["greybox"], [], tr, va)
