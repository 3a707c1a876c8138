"""Model registry: round trip, weights_only loading, hashes, schema mismatch, atomic layout."""
import json

import numpy as np
import pytest
import torch
from numpy.testing import assert_allclose

from coating.line import history_rows, plant, schema
from coating.models import fit_cycles, fitting, hparams, registry

P = plant.PlantParams()


@pytest.fixture(scope="module")
def history():
    state = plant.init(P, 3)
    rng = np.random.default_rng(4)
    runs = []
    for _ in range(14):
        state, m = plant.step(state, state.settings, rng, P)
        runs.append(m)
    return schema.history_from_measurements(runs)


@pytest.fixture(scope="module")
def registry_dir(tmp_path_factory, history):
    d = tmp_path_factory.mktemp("models")
    fit_cycles.fit_all(history, d, kinds=("greybox", "model1", "model2"), log=lambda s: None,
                       hparams={"greybox": {"epochs": 1, "inner_steps": 5}, "model1": {"epochs": 20},
                                "model2": {"epochs": 20}})
    return d


@pytest.mark.parametrize("kind", hparams.KINDS)
def test_round_trip_predicts_identically(registry_dir, history, kind, monkeypatch):
    calls = []
    real = torch.load
    monkeypatch.setattr(torch, "load", lambda *a, **k: calls.append(k) or real(*a, **k))
    m = registry.load(registry_dir, 1, kind, history)
    assert calls and all(k.get("weights_only") is True for k in calls)
    meta = json.loads((registry.cycle_dir(registry_dir, 1, kind) / "model.json").read_text())
    tr, _ = history_rows.time_split(history, 1)
    assert meta["data_sha256"] == registry.data_sha256(tr) and len(meta["data_sha256"]) == 64
    assert meta["kind"] == kind and meta["schema"]["version"] == registry.SCHEMA_VERSION
    assert {"val_loss", "val_dE00"} <= set(meta["metrics"]) and meta["hparams"]
    assert meta["last_run_in_cycle"] == int(tr.run_in_cycle.max())
    # Refit with the same inputs is deterministic: compare predictions.
    fresh = fitting.fit(kind, meta["hparams"], tr, None).model
    d = history_rows.rows_to_tensors(history)
    with torch.no_grad():
        a = m.predict(d["settings"], d["std"], d["run"]).R
        b = fresh.predict(d["settings"], d["std"], d["run"]).R
    assert_allclose(a.numpy(), b.numpy(), atol=1e-9, err_msg=f"{kind}: loaded model differs")
    assert torch.equal(m.normaliser.x_mean, fresh.normaliser.x_mean)
    assert not list(registry.cycle_dir(registry_dir, 1, kind).glob("*.tmp")), "temporary files left"


def test_schema_mismatch_is_a_clear_error(registry_dir, tmp_path):
    import shutil
    d = tmp_path / "reg"
    shutil.copytree(registry_dir, d)
    j = registry.cycle_dir(d, 1, "model1") / "model.json"
    meta = json.loads(j.read_text())
    meta["schema"]["wavelength_nm"] = list(range(400, 701, 10))
    j.write_text(json.dumps(meta))
    with pytest.raises(ValueError, match="does not match the data schema.*wavelength grid of 31 points"):
        registry.load(d, 1, "model1")
    meta["schema"]["wavelength_nm"] = registry.schema_descriptor()["wavelength_nm"]
    meta["schema"]["version"] = "coating-history/0"
    j.write_text(json.dumps(meta))
    with pytest.raises(ValueError, match="schema version"):
        registry.load(d, 1, "model1")


def test_torn_pair_and_missing_model_are_detected(registry_dir, tmp_path):
    import shutil
    d = tmp_path / "reg"
    shutil.copytree(registry_dir, d)
    pt = registry.cycle_dir(d, 1, "model2") / "model.pt"
    pt.write_bytes(pt.read_bytes() + b"x")
    with pytest.raises(ValueError, match="SHA-256"):
        registry.load(d, 1, "model2")
    with pytest.raises(ValueError, match="no greybox model for cycle 9"):
        registry.load(d, 9, "greybox")
    assert registry.list_models(registry_dir) == [(1, "greybox"), (1, "model1"), (1, "model2")]


def test_state_dict_alone_restores_the_model_with_its_normaliser(history):
    """The Tune job checkpoints ``state_dict()`` only: the normaliser must travel in it."""
    import io
    tr, _ = history_rows.time_split(history, 1)
    for kind, hp in (("model1", {"epochs": 10}), ("greybox", {"epochs": 1, "inner_steps": 4})):
        res = fitting.fit(kind, hp, tr, None)
        buf = io.BytesIO()
        torch.save(res.model.state_dict(), buf)
        buf.seek(0)
        back = fitting.build_model_from_state(kind, res.hparams, torch.load(buf, weights_only=True))
        assert torch.equal(back.normaliser.y_std, res.model.normaliser.y_std), kind
        d = history_rows.rows_to_tensors(history)
        with torch.no_grad():
            assert_allclose(back.predict(d["settings"], d["std"], d["run"]).R.numpy(),
                            res.model.predict(d["settings"], d["std"], d["run"]).R.numpy(), atol=1e-12)
