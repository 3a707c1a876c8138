"""The recipe book's cache: keyed on what determines a batch, checked against batches made directly."""

import dataclasses

import numpy as np
import torch

from ray_jobs.recipes import SEVI_NOT_IN_BATCH, RecipeBook
from sevi.regressor.batches import make_batch, make_generator
from sevi.regressor.train_config import config_from_dict

BASE = {"grid": 32, "n_r": 16, "n_theta": 8, "electrons": (2000, 3000), "batch_size": 2, "width": 4}
# A different valid value for every field the cache key leaves out.
OTHER = {"init_from": "elsewhere/model.pt", "target_stats_draws": 77, "width": 8, "stem_stride": 2, "steps": 7,
         "lr": 0.1, "min_lr": 0.0, "warmup_steps": 1, "weight_decay": 0.5, "grad_clip": 0.0,
         "radius_loss_weight": 0.7, "nll_weight": 0.0, "amp": "none", "seed": 99, "val_images": 3, "val_seed": 4,
         "eval_every": 3, "checkpoint_every": 5, "log_every": 2}


def test_fields_left_out_of_the_key_do_not_change_a_batch():
    book = RecipeBook(torch.device("cpu"))
    cached = book("sevi-images", BASE, 11)
    for field in sorted(SEVI_NOT_IN_BATCH):
        params = {**BASE, field: OTHER[field]}
        cfg = config_from_dict(params)
        direct = make_batch(make_generator(cfg, "cpu"), cfg, 11)  # built from scratch with the changed field
        for k, v in direct.items():
            np.testing.assert_array_equal(cached[k], v.numpy(), err_msg=f"{field} changes the batch's {k}")
        book("sevi-images", params, 11)
    assert len(book.built) == 1, "one build serves every optimiser / model / step setting"


def test_fields_in_the_key_build_again_and_the_book_is_bounded():
    book = RecipeBook(torch.device("cpu"), max_built=2)
    base = book("sevi-images", BASE, 1)
    assert book("sevi-images", {**BASE, "batch_size": 3}, 1)["x"].shape[0] == 3
    assert len(book.built) == 2
    more = book("sevi-images", {**BASE, "electrons": (4000, 5000)}, 1)
    assert len(book.built) == 2, "the least recently used build is dropped"
    assert not np.array_equal(base["x"], more["x"]), "electron counts are part of the key"
    # Defaults written out or left implicit are the same key.
    full = dataclasses.asdict(config_from_dict(BASE))
    assert book.key("sevi-images", full) == book.key("sevi-images", BASE)
