"""The training loop on the CPU: it learns, checkpoints resume exactly, configs are type-checked."""

import dataclasses

import pytest
import torch

from sevi.regressor.batches import batch_seed, make_batch, make_generator
from sevi.regressor.checkpoints import load_model, save_final_model
from sevi.regressor.train_config import PRESETS, config_from_dict, resolve_config
from sevi.regressor.training import LoopContext, train_loop

torch.set_num_threads(1)  # a shared 2-core box: 2 OpenMP threads are far slower under load
TINY = PRESETS["tiny"]


def stream(cfg):
    gen = make_generator(cfg.data, "cpu")
    return lambda step: make_batch(gen, cfg.data, batch_seed(cfg, step))


def test_make_batch_is_pure_and_shaped():
    cfg = TINY
    gen = make_generator(cfg.data, "cpu")
    a, b = make_batch(gen, cfg.data, 3), make_batch(make_generator(cfg.data, "cpu"), cfg.data, 3)
    assert a["x"].shape == (cfg.data.batch_size, 1, 16, 16) and a["x"].dtype == torch.float32
    assert a["y"].shape == (cfg.data.batch_size, 28) and a["beta"].shape == (cfg.data.batch_size, 2, 12)
    for k in a:
        assert torch.equal(a[k], b[k]), f"make_batch is not a function of (cfg, seed): {k} differs"
    assert (a["R"][:, 0] <= a["R"][:, 1]).all(), "targets must have the smaller shell first"


def test_loop_lowers_the_loss_on_a_fixed_batch(tmp_path):
    cfg = dataclasses.replace(TINY, steps=30, eval_every=5, checkpoint_every=1000, warmup_steps=2)
    batch = stream(cfg)(0)
    losses = []
    train_loop(cfg, lambda step: batch, LoopContext(report=lambda m, c: losses.append(m["loss"]), out_dir=str(tmp_path)))
    assert len(losses) == 6, "report must be called at every eval step (and the last)"
    assert losses[-1] < 0.5 * losses[0], f"loss did not fall over 30 steps: {losses}"


def test_resume_continues_exactly(tmp_path):
    cfg = dataclasses.replace(TINY, steps=12, eval_every=6, checkpoint_every=6)
    full = train_loop(cfg, stream(cfg), LoopContext(out_dir=str(tmp_path / "a"), log_dir=str(tmp_path / "tb")))
    assert (tmp_path / "tb").exists() and full["checkpoint"].endswith("checkpoint_000012")
    assert not torch.equal(full["model"].sd_scale, torch.ones(28)), "error bars were not calibrated at the end"
    ck = torch.load(tmp_path / "a" / "checkpoint_000006" / "model.pt", weights_only=True)
    assert ck["step"] == 6 and config_from_dict(ck["config"]) == cfg and "optimizer" in ck
    seen = []
    resumed = train_loop(cfg, lambda s: seen.append(s) or stream(cfg)(s),
                         LoopContext(out_dir=str(tmp_path / "b"), resume_dir=str(tmp_path / "a" / "checkpoint_000006")))
    assert seen == list(range(6, 12)) and resumed["step"] == 12
    for k, v in full["model"].state_dict().items():
        torch.testing.assert_close(resumed["model"].state_dict()[k], v, rtol=1e-5, atol=1e-6,
                                   msg=f"resumed run differs from the uninterrupted one in {k}")
    path = save_final_model(resumed["model"], cfg, tmp_path / "final")
    model, cfg2 = load_model(path)
    assert cfg2 == cfg and (tmp_path / "final" / "config.json").exists()


def test_overrides_are_type_checked_and_unknown_keys_refused():
    cfg = resolve_config("cpu-smoke", {"width": "8", "lr": "1e-3", "electrons": "1000,2000", "amp": "none",
                                       "representation": "fold"})
    assert (cfg.width, cfg.lr, cfg.data.electrons, cfg.amp) == (8, 1e-3, (1000, 2000), "none")
    with pytest.raises(ValueError, match="unknown TrainConfig field 'widht'.*'width'"):
        resolve_config("cpu-smoke", {"widht": "8"})
    with pytest.raises(ValueError, match="expected int"):
        resolve_config("cpu-smoke", {"width": "wide"})
    with pytest.raises(ValueError, match="representation"):
        resolve_config("cpu-smoke", {"representation": "cartesian"})
    with pytest.raises(ValueError, match="unknown preset"):
        resolve_config("gpu-huge", {})
    assert resolve_config("a100", {}).width == 64
