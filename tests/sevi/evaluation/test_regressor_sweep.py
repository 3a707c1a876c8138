"""The sweep's logic without Ray: the space checked, trial configs, the inputs' key, the judgement
on held-out images, every trial's row (failed ones with their reason), the Pareto front, the PNG."""

import math

import pytest

from sevi.evaluation import regressor_sweep as rs
from sevi.regressor.train_config import resolve_config
from sevi.runtime.errors import InputError


@pytest.mark.parametrize("space, words", [
    ({"depth": ["choice", [1, 2]]}, "unknown field 'depth'"),
    ({"widht": ["choice", [8]]}, "did you mean 'width'"),
    ({"width": ["choice", []]}, "empty range"),
    ({"lr": ["loguniform", 1e-2, 1e-3]}, "empty range"),
    ({"lr": ["loguniform", 0, 1e-3]}, "low > 0"),
    ({"lr": ["normal", 0, 1]}, "sampler one of"),
    ({"blocks": ["choice", ["3-4-6"]]}, "4 stages"),
    ({}, "expected an object"),
])
def test_a_bad_space_is_refused_in_one_line(space, words):
    with pytest.raises(InputError) as e:
        rs.check_space(space)
    assert words in str(e.value) and "\n" not in str(e.value)


def test_grids_must_divide_the_held_out_grid():
    base = resolve_config("tiny")
    rs.check_grids({"grid": ["choice", [16, 32]]}, base, 32)
    with pytest.raises(InputError, match="divide the held-out grid 32"):
        rs.check_grids({"grid": ["choice", [16, 24]]}, base, 32)


def test_a_trial_config_takes_the_sampled_fields_and_the_budget():
    preset = rs.SWEEP_PRESETS["smoke"]
    cfg = rs.trial_config(resolve_config("tiny"), {"blocks": "2-2-2-2", "width": 8, "grid": 16,
                                                   "representation": "polar", "lr": 0.005}, preset)
    assert cfg.blocks == (2, 2, 2, 2) and cfg.width == 8 and cfg.data.grid == 16
    assert (cfg.data.n_r, cfg.data.n_theta) == (8, 8) and cfg.lr == 0.005
    assert cfg.steps == preset.steps and cfg.eval_every == preset.eval_every == cfg.checkpoint_every


def test_the_key_changes_with_the_space_and_the_budget_and_names_what_changed():
    import dataclasses

    base, p = resolve_config("tiny"), rs.SWEEP_PRESETS["smoke"]
    space = rs.check_space(p.space)
    a = rs.sweep_inputs("smoke", p, space, base, 2024)
    assert rs.inputs_key(a) == rs.inputs_key(rs.sweep_inputs("smoke", p, rs.check_space(dict(p.space)), base, 2024))
    b = rs.sweep_inputs("smoke", p, {**space, "width": ["choice", [4]]}, base, 2024)
    c = rs.sweep_inputs("smoke", dataclasses.replace(p, steps=p.steps + 1), space, base, 2024)
    assert len({rs.inputs_key(x) for x in (a, b, c)}) == 3
    assert rs.differences(a, b) == ["space: width"] and rs.differences(a, c) == ["budget: steps"]


def test_judge_measures_a_model_on_the_held_out_images():
    import torch

    from sevi.regressor.checkpoints import build_model

    base = resolve_config("tiny")
    held = rs.make_held_out(base, 2, 32, 7, fit_max_iterations=4)
    assert held.images.shape == (2, 32, 32) and held.truth_log_posterior.shape == (2,)
    cfg = rs.trial_config(base, {"grid": 16, "representation": "fold", "width": 4, "blocks": "1-1-1-1"},
                          rs.SWEEP_PRESETS["smoke"])
    torch.manual_seed(0)
    model = build_model(cfg)
    f = rs.judge(model, cfg, held)
    assert 0 <= f["landed_fraction"] <= 1 and f["refined_distance"] > 0 and f["regressor_distance"] > 0
    assert f["parameters"] == sum(p.numel() for p in model.parameters())
    assert f["flops_per_image"] > 2 * f["parameters"] / 10 and f["images_per_s"] > 0 and 0 <= f["fit_iterations"] <= 4


def test_overlapping_held_out_images_move_only_the_outer_shell_into_the_inner_ones_reach():
    base = resolve_config("tiny")
    prior = rs.make_held_out(base, 3, 32, 7, fit_max_iterations=2)
    over = rs.make_held_out(base, 3, 32, 7, fit_max_iterations=2, kind="overlapping")
    gap = over.R[:, 1] - over.R[:, 0]
    assert ((gap >= rs.OVERLAP[0]) & (gap <= rs.OVERLAP[1])).all() and (over.R[:, 0] >= 0.3).all()
    assert (over.R[:, 1] <= 0.9).all() and (over.R >= 10 * over.sigma_R).all()
    assert (over.beta == prior.beta).all() and (over.sigma_R == prior.sigma_R).all()
    assert not (over.R == prior.R).all() and over.images.sum() > 0
    with pytest.raises(InputError, match="held-out kind"):
        rs.make_held_out(base, 1, 32, 7, kind="crowded")


def _row(trial, landed, refined, latency, params, status="finished", error=None):
    metrics = {"cfg_blocks": "1-1-1-1", "cfg_width": 4, "cfg_grid": 16, "cfg_representation": "fold",
               "cfg_batch_size": 4, "cfg_lr": 1e-3, "val_loss": 0.4, "steps_done": 8}
    if status == "finished":
        metrics.update(judged=1, landed_fraction=landed, refined_distance=refined, latency_ms=latency,
                       parameters=params)
    return rs.trial_row(trial, {}, metrics, error, ended=status != "unfinished")


def test_every_trial_is_a_row_with_its_status_and_the_front_is_marked():
    rows = rs.mark_front([
        _row("a", 1.0, 0.010, 1.0, 1000),   # fast, small, lands: on both fronts
        _row("b", 1.0, 0.008, 5.0, 5000),   # the best refined Distance: on both
        _row("c", 0.5, 0.020, 6.0, 6000),   # beaten by a and b everywhere
        _row("d", 0, 0, 0, 0, status="stopped early"),
        _row("e", 0, 0, 0, 0, status="failed", error="RuntimeError: out of memory\n  at step 3"),
        _row("f", 0, 0, 0, 0, status="unfinished"),  # the sweep was interrupted while it ran
    ])
    status = {r["trial"]: (r["status"], r["on_front"]) for r in rows}
    assert status == {"a": ("finished", "latency+parameters"), "b": ("finished", "latency+parameters"),
                      "c": ("finished", ""), "d": ("stopped early", ""), "e": ("failed", ""),
                      "f": ("unfinished", "")}
    assert rows[4]["reason"] == "RuntimeError: out of memory at step 3"
    assert "ASHA stopped it at step 8" in rows[3]["reason"]
    back = rs.read_table(rs.table_text(rows))
    assert [r["status"] for r in back] == [r["status"] for r in rows] and back[4]["reason"] == rows[4]["reason"]
    assert math.isclose(float(back[1]["refined_distance"]), 0.008)
    lines = rs.summary_lines(back)
    assert len(lines) == 7 and lines[1].split()[0] == "b"
    assert "same command resumes" in rows[5]["reason"]


def test_the_pareto_png_names_the_front(tmp_path):
    rows = rs.mark_front([_row("a", 1.0, 0.010, 1.0, 1000), _row("b", 0.5, 0.02, 2.0, 2000),
                          _row("e", 0, 0, 0, 0, status="failed", error="boom")])
    rs.pareto_png(rows, tmp_path / "p.png", title="test")
    assert (tmp_path / "p.png").read_bytes()[:4] == b"\x89PNG"


def test_a_trials_id_is_read_from_its_tune_folder():
    name = "trial_sevi_sweep_379e516598_f79c7_00007_7_batch_size=32,blocks=3-4-6-3_2026-12-05_01-38-46"
    assert rs.trial_id(name) == "f79c7_00007" and rs.trial_id("/runs/x/" + name + "/") == "f79c7_00007"
    assert rs.trial_id("runs/preset_choice/cpu-smoke") is None
