"""sevi.regressor.train_config: the DataConfig a batch carries, flat overrides, the narrowed prior read
once on the driver, the dict round trip (old flat configs too), and the refused resume."""
import dataclasses

import numpy as np
import pytest

from sevi.regressor.train_config import (
    DATA_FIELDS,
    PRESETS,
    DataConfig,
    changed_fields,
    config_from_dict,
    resolve_config,
)
from sevi.runtime.errors import InputError


def test_flat_fields_are_routed_to_the_data_or_the_training_config():
    cfg = PRESETS["tiny"].replace(grid=64, lr=1e-3, electrons="1000,2000")
    assert cfg.data.grid == 64 and cfg.lr == 1e-3 and cfg.data.electrons == (1000, 2000)
    assert cfg.data.batch_size == PRESETS["tiny"].data.batch_size
    with pytest.raises(InputError, match="unknown TrainConfig field 'gird' \\(did you mean 'grid'\\?\\)"):
        PRESETS["tiny"].replace(gird=64)


def test_the_round_trip_keeps_every_field_and_reads_a_flat_config_of_earlier_versions():
    cfg = PRESETS["cpu-course"]
    assert config_from_dict(dataclasses.asdict(cfg)) == cfg
    flat = {k: v for k, v in dataclasses.asdict(cfg).items() if k != "data"}
    flat.update({k: v for k, v in dataclasses.asdict(cfg.data).items() if k != "prior"})
    assert config_from_dict(flat) == cfg, "a model saved before DataConfig must still load"
    with pytest.raises(ValueError, match="unknown fields \\['warp'\\]"):
        config_from_dict({**dataclasses.asdict(cfg), "warp": 9})


def test_the_narrowed_prior_is_read_once_into_numbers(tmp_path):
    from sevi.io.tables import answer_rows, write_tables
    from sevi.physics.prior import Prior, PriorConfig
    from sevi.regressor.batches import make_batch, make_generator

    beta = Prior(PriorConfig()).mean_beta().numpy()[None, None].repeat(2, 1)
    answer = tmp_path / "answer.h5"
    write_tables(answer, {"Answer": answer_rows(np.array([[0.5, 0.7]]), beta)})
    cfg = resolve_config("tiny", {"refine_answer": str(answer)})
    assert cfg.refine_answer == str(answer) and cfg.data.prior is not None
    assert cfg.data.prior.radius_range != PriorConfig().radius_range
    answer.unlink()  # nothing after the driver may need the file: a pool actor, a worker, a resume
    data = DataConfig(**{k: getattr(cfg.data, k) for k in DATA_FIELDS})
    batch = make_batch(make_generator(data, "cpu"), data, 3)
    lo, hi = cfg.data.prior.radius_range
    assert ((batch["R"] >= lo - 1e-6) & (batch["R"] <= hi + 1e-6)).all(), "batches come from the narrowed prior"
    assert config_from_dict(dataclasses.asdict(cfg)) == cfg, "the narrowed prior travels in the config's numbers"
    with pytest.raises(ValueError, match="narrowed prior is not in data.prior"):
        dataclasses.replace(cfg, data=dataclasses.replace(cfg.data, prior=None))


def test_changed_fields_name_the_data_and_model_shape_differences():
    a = PRESETS["tiny"]
    assert changed_fields(a, a.replace(lr=0.1, steps=99)) == []
    assert changed_fields(a, a.replace(grid=64, width=8)) == ["grid", "width"]


def test_a_resume_with_other_data_or_model_shape_is_refused(tmp_path):
    from sevi.regressor.batches import batch_seed, make_batch, make_generator
    from sevi.regressor.training import LoopContext, train_loop

    cfg = PRESETS["tiny"].replace(steps=2, checkpoint_every=2, eval_every=2)
    gen = make_generator(cfg.data, "cpu")
    res = train_loop(cfg, lambda s: make_batch(gen, cfg.data, batch_seed(cfg, s)), LoopContext(out_dir=str(tmp_path)))
    other = cfg.replace(steps=4, electrons=(3000, 4000))
    with pytest.raises(InputError, match=r"electrons \(2000, 4000\) -> \(3000, 4000\)"):
        train_loop(other, lambda s: None, LoopContext(out_dir=str(tmp_path), resume_dir=res["checkpoint"]))
    longer = cfg.replace(steps=4, checkpoint_every=4, eval_every=4)  # more steps: a resume is fine
    assert train_loop(longer, lambda s: make_batch(gen, cfg.data, batch_seed(cfg, s)),
                      LoopContext(out_dir=str(tmp_path), resume_dir=res["checkpoint"]))["step"] == 4
