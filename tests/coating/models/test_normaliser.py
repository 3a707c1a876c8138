"""coating.models.normaliser (through the coating.models front door): normalisation stored with the
model, never from the batch; a sample predicts alone as inside a batch. Fixtures ``cycle_rows``
and ``fitted``: conftest.py."""
import dataclasses

import pytest
import torch
from numpy.testing import assert_allclose

from coating.line import history_rows
from coating.models import hparams, normaliser


@pytest.mark.parametrize("kind", hparams.KINDS)
def test_single_sample_equals_the_same_sample_in_a_batch(fitted, cycle_rows, kind):
    model = fitted[kind].model
    d = history_rows.rows_to_tensors(cycle_rows)
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
    assert isinstance(norm, normaliser.Normaliser)
    with pytest.raises(dataclasses.FrozenInstanceError):
        norm.x_mean = torch.zeros(1)
    tr, _ = history_rows.time_split(cycle_rows, 1)
    x = torch.as_tensor(tr.settings if kind == "model1" else tr.std)
    assert_allclose(norm.x_mean.numpy(), x.mean(0).numpy(), rtol=1e-12, err_msg="mean of the training rows")
    # Shifting the batch does not change the statistics used.
    d = history_rows.rows_to_tensors(cycle_rows)
    with torch.no_grad():
        a = model.predict(d["settings"][:1], d["std"][:1]).R
        b = model.predict(d["settings"][:2] * torch.tensor([[1.0], [1.1]]), d["std"][:2] * torch.tensor([[1.0], [1.3]])).R[:1]
    assert_allclose(a.numpy(), b.numpy(), atol=1e-12)
    assert torch.equal(model.normaliser.x_mean, norm.x_mean)
