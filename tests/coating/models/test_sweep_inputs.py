"""A sweep's recorded inputs: keyed on its cycle's own rows, so new runs of another cycle leave
it alone and any change to its own rows, space or sample count gives a new key."""
import dataclasses

import numpy as np
import pytest

from coating.line import history_rows as models
from coating.line import plant, schema
from coating.models.sweep_inputs import (
    differences,
    inputs_key,
    parse_record,
    record_text,
    reusable,
    sweep_inputs,
)

SPACE = {"lr": ("uniform", 0.3, 1.0), "epochs": ("choice", [2])}


@pytest.fixture(scope="module")
def history():
    params = plant.PlantParams(cycle_runs_min=8, cycle_runs_max=8)
    return schema.history_from_measurements(plant.simulate(params, 2, seed=5))


def test_key_ignores_other_cycles_and_follows_own_rows(history):
    first = models.select_rows(history, history.cycle_id == 1)
    a = sweep_inputs(first, 1, "greybox", SPACE, 4)
    assert a == sweep_inputs(history, 1, "greybox", SPACE, 4), "runs of cycle 2 changed cycle 1's inputs"
    changed = dataclasses.replace(history, std=history.std.copy())
    changed.std[3, 0] += 1e-6                    # one value of one cycle-1 row
    b = sweep_inputs(changed, 1, "greybox", SPACE, 4)
    assert inputs_key(b) != inputs_key(a) and differences(a, b) == ["the cycle's rows"]
    assert sweep_inputs(changed, 2, "greybox", SPACE, 4) == sweep_inputs(history, 2, "greybox", SPACE, 4)
    for other in (sweep_inputs(history, 1, "greybox", SPACE, 5),
                  sweep_inputs(history, 1, "greybox", {**SPACE, "epochs": ("choice", [3])}, 4),
                  sweep_inputs(history, 1, "model1", SPACE, 4),
                  sweep_inputs(history, 1, "model1", SPACE, 4, pretrain_runs=64)):
        assert inputs_key(other) != inputs_key(a)
    # Appending a run to cycle 1 changes its key (the routine that used to resume stale sweeps).
    more = models.concat_rows(first, models.select_rows(history, [int(np.flatnonzero(history.cycle_id == 2)[0])]))
    more = dataclasses.replace(more, cycle_id=np.ones(len(more), dtype=np.int64),
                               run_in_cycle=np.arange(1, len(more) + 1))
    assert sweep_inputs(more, 1, "greybox", SPACE, 4)["n_rows"] == 9
    assert inputs_key(sweep_inputs(more, 1, "greybox", SPACE, 4)) != inputs_key(a)


def test_record_round_trip_and_reuse_rule(history):
    inp = sweep_inputs(history, 2, "greybox", SPACE, 4)
    rec = parse_record(record_text(inp), "x.inputs.json")
    assert rec["inputs"] == inp and rec["key"] == inputs_key(inp) and rec["result"] is None
    assert not reusable(rec, inp, "abc"), "an unfinished sweep is resumed, not reused"
    done = parse_record(record_text(inp, {"model_sha256": "abc", "val_loss": 0.1}), "x")
    assert reusable(done, inp, "abc")
    assert not reusable(done, inp, "def"), "the registry holds another model: save the best again"
    assert not reusable(done, sweep_inputs(history, 2, "greybox", SPACE, 5), "abc")
    with pytest.raises(ValueError, match="x.inputs.json: not a sweep inputs record"):
        parse_record("{not json", "x.inputs.json")
