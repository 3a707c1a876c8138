"""The recipe book's cache: keyed on the DataConfig a batch depends on, checked against batches made directly."""

import dataclasses

import numpy as np
import pytest
import torch

from ray_jobs.recipes import RecipeBook
from sevi.regressor.batches import make_batch, make_generator
from sevi.regressor.train_config import DATA_FIELDS, PRESETS, data_config_from_dict

BASE = dataclasses.asdict(PRESETS["tiny"].replace(grid=32, n_r=16, n_theta=8, electrons=(2000, 3000),
                                                  batch_size=2, representation="polar").data)
# A different valid value for every field a training run sets besides its data: none reaches a batch.
OTHER = {"init_from": "elsewhere/model.pt", "target_stats_draws": 77, "width": 8, "stem_stride": 2, "steps": 7,
         "lr": 0.1, "min_lr": 0.0, "warmup_steps": 1, "weight_decay": 0.5, "grad_clip": 0.0,
         "radius_loss_weight": 0.7, "nll_weight": 0.0, "amp": "none", "seed": 99, "val_images": 3, "val_seed": 4,
         "eval_every": 3, "checkpoint_every": 5, "log_every": 2}


def test_the_pool_receives_the_data_config_and_serves_what_make_batch_makes():
    book = RecipeBook(torch.device("cpu"))
    cached = book("sevi-images", BASE, 11)
    data = data_config_from_dict(BASE)
    direct = make_batch(make_generator(data, "cpu"), data, 11)
    for k, v in direct.items():
        np.testing.assert_array_equal(cached[k], v.numpy(), err_msg=f"the pool's {k} differs from make_batch's")
    # The training run's other fields change its config, never its DataConfig: one build serves them all.
    cfg = PRESETS["tiny"].replace(**{k: v for k, v in BASE.items() if k != "prior"})
    for field, value in OTHER.items():
        other = cfg.replace(**{field: value})
        assert other.data == cfg.data, f"{field} must not be a DataConfig field"
        book("sevi-images", dataclasses.asdict(other.data), 11)
    assert len(book.built) == 1, "one build serves every optimiser / model / step setting"


def test_a_training_only_field_is_refused_by_the_pool():
    with pytest.raises(ValueError, match="unknown DataConfig fields \\['lr'\\]"):
        RecipeBook(torch.device("cpu"))("sevi-images", {**BASE, "lr": 0.1}, 1)


def test_fields_in_the_key_build_again_and_the_book_is_bounded():
    book = RecipeBook(torch.device("cpu"), max_built=2)
    base = book("sevi-images", BASE, 1)
    assert book("sevi-images", {**BASE, "batch_size": 3}, 1)["x"].shape[0] == 3
    assert len(book.built) == 2
    more = book("sevi-images", {**BASE, "electrons": (4000, 5000)}, 1)
    assert len(book.built) == 2, "the least recently used build is dropped"
    assert not np.array_equal(base["x"], more["x"]), "electron counts are part of the key"
    # Defaults written out or left implicit are the same key.
    implicit = {k: v for k, v in BASE.items() if k in ("grid", "n_r", "n_theta", "electrons", "batch_size",
                                                        "representation")}
    assert book.key("sevi-images", implicit) == book.key("sevi-images", BASE)
    assert set(DATA_FIELDS) == set(BASE)
