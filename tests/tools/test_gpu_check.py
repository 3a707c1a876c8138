"""tools/gpu_check.py: the tiny CPU run of the whole check, the runner's failure handling, and the
full-size a100 training path for two steps (its crash test)."""
import json
import math
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from tools import gpu_check
from tools.gpu_check import STEPS, steady_rates, training_run

ROOT = Path(__file__).resolve().parents[2]


def _finite_numbers(obj, path=""):
    """Every number in a JSON tree, with its key path."""
    if isinstance(obj, dict):
        for k, v in obj.items():
            yield from _finite_numbers(v, f"{path}.{k}")
    elif isinstance(obj, list):
        for i, v in enumerate(obj):
            yield from _finite_numbers(v, f"{path}[{i}]")
    elif isinstance(obj, (int, float)) and not isinstance(obj, bool):
        yield path, obj


def test_tiny_cpu_run_measures_every_step_without_ray(tmp_path):
    # A `ray` that cannot be imported stands first on the path: the GPU box has none.
    fake = tmp_path / "no_ray" / "ray"
    fake.mkdir(parents=True)
    (fake / "__init__.py").write_text("raise ImportError('the GPU check must not import ray')\n")
    env = {**os.environ, "PYTHONPATH": str(fake.parent), "OMP_NUM_THREADS": "1"}
    out = tmp_path / "out"
    t0 = time.perf_counter()
    p = subprocess.run([sys.executable, "tools/gpu_check.py", "--out", str(out), "--device", "cpu", "--tiny"],
                       cwd=ROOT, env=env, capture_output=True, text=True, timeout=240)
    took = time.perf_counter() - t0
    assert p.returncode == 0, p.stdout + p.stderr
    text = (out / "gpu_check.json").read_text()
    assert "NaN" not in text and "Infinity" not in text
    r = json.loads(text)
    assert r["device"] == "cpu" and r["tiny"] is True
    assert list(r["steps"]) == [name for name, _, _ in STEPS]
    s = r["steps"]
    assert s["frames_limit"]["status"].startswith("skipped: not chosen"), "the course-scale step runs only when named"
    assert s["frame_renderer"]["frames_per_s"] > 0 and s["frame_renderer"]["stream_frames_per_s"] > 0
    front = s["regressor_front"]["members"]
    assert len(front) == 2 and all(len([k for k in m if k.startswith("bf16=")]) == 4 for m in front.values())
    assert all(v["images_per_s"] > 0 for m in front.values() for k, v in m.items() if k.startswith("bf16="))
    for name in ("environment", "generator", "expected_renderer", "training", "centroiding", "optics", "refinement",
                 "frame_renderer", "regressor_front"):
        assert s[name]["status"] == "ok", (name, s[name])
        assert 0 <= s[name]["seconds"] <= s[name]["budget_s"], name
    assert s["expected_renderer"]["grid64"]["poisson_images_per_s"] > 0
    assert s["refinement"]["seconds_per_image"] > 0 and all(s["refinement"]["converged"])
    assert s["refinement"]["direct"]["seconds_per_image"] > 0 and all(s["refinement"]["direct"]["converged"])
    for path, v in _finite_numbers(r):
        assert math.isfinite(v), path
    assert s["environment"]["torch"] == torch.__version__
    g = s["generator"]
    assert g["images_per_s"] > 0 and g["numpy_images_per_s"] > 0
    assert g["ratio_to_numpy"] > 1, "the torch generator should beat the notes' numpy loop even at tiny sizes"
    assert g["target_met"] is None  # tiny sizes never claim the full-size target
    for amp in ("amp_bf16", "amp_none"):
        t = s["training"][amp]
        assert t["steps"] == 6 and t["steps_per_s"] > 0 and t["images_per_s"] == pytest.approx(4 * t["steps_per_s"])
        assert 0 <= t["data_wait_fraction"] <= 1 and t["peak_memory_gib"] is None  # no GPU memory on a CPU
        assert [c["step"] for c in t["loss_curve"]] == [3, 6]
        assert all(c["loss"] > 0 and c["val/distance"] > 0 for c in t["loss_curve"])
    c = s["centroiding"]
    for mode in ("full", "fast"):
        assert c[mode]["frames"] == 3 and c[mode]["frames_per_s"] > 0
        assert 0.7 < c[mode]["recall"] <= 1 and 0.7 < c[mode]["precision"] <= 1, c[mode]
    o = s["optics"]
    rates = [v for k, v in o.items() if k.endswith("_spectra_per_s")]
    assert len(rates) == 4 and min(rates) > 0
    assert "total" in p.stdout and "centroiding" in p.stdout  # the table
    print(f"tiny gpu_check on the CPU: {took:.1f} s")


def _boom(ck, budget_s):
    raise RuntimeError("deliberate failure\nsecond line")


def _fine(ck, budget_s):
    return {"value": 1.5, "bad": float("nan"), "summary": "fine"}


def _slow(ck, budget_s):
    time.sleep(30)
    return {}


def test_a_failing_or_overrunning_step_loses_nothing_else(tmp_path, monkeypatch):
    monkeypatch.setattr(gpu_check, "GRACE_S", 0.2)
    monkeypatch.setattr(gpu_check, "STEPS", [("boom", _boom, 1), ("fine", _fine, 1), ("slow", _slow, 0.3),
                                             ("late", _fine, 5)])
    t0 = time.perf_counter()
    # A cap of 5.4 s: boom and fine (budget 1 s) start unless the box stalls for 4 s; slow is stopped
    # at 0.3 + 0.2 s, after which late (budget 5 s) can no longer fit.
    rc = gpu_check.main(["--out", str(tmp_path), "--device", "cpu", "--max-total-s", "5.4"])
    assert time.perf_counter() - t0 < 10, "the hard limit must stop a step that overruns"
    assert rc == 1
    s = json.loads((tmp_path / "gpu_check.json").read_text())["steps"]
    assert s["boom"]["status"] == "failed: RuntimeError: deliberate failure"
    assert any("deliberate failure" in line for line in s["boom"]["traceback"])
    assert s["fine"]["status"] == "ok" and s["fine"]["value"] == 1.5
    assert s["fine"]["bad"] is None and s["fine"]["non_finite"] == ["bad"]  # never a silent NaN
    assert s["slow"]["status"].startswith("failed: over its time budget"), s["slow"]
    assert s["late"]["status"] == "skipped: total time cap of 5 s reached", s["late"]


def test_steady_rates_leave_out_warmup_and_evaluation_intervals():
    # Steps 0..5; every step 1 s, but step 0 (warm-up) 10 s and steps 2 and 5 end in an evaluation (+4 s).
    dt = [10, 1, 5, 1, 1, 5]
    t_call = [0.0]
    for d in dt:
        t_call.append(t_call[-1] + d)
    wait = [0.5] * 6
    r = steady_rates(t_call, wait, batch=8, eval_every=3, warmup=1)
    assert r["steady_steps"] == 3  # steps 1, 3, 4
    assert r["steps_per_s"] == pytest.approx(1.0) and r["images_per_s"] == pytest.approx(8.0)
    assert r["data_wait_fraction"] == pytest.approx(0.5)


def test_full_a100_training_path_two_steps_at_batch_2():
    """The crash test of the full-size path: the a100 preset's grid, electrons, input and model
    (only the batch is 2), two steps and one validation through train_loop. About 20 s here."""
    from sevi.regressor.train_config import PRESETS

    cfg = PRESETS["a100"].replace(batch_size=2, val_images=2)
    assert (cfg.data.grid, cfg.data.n_r, cfg.data.n_theta, cfg.width, cfg.stem_stride) == (512, 256, 256, 64, 2)
    r = training_run(cfg, torch.device("cpu"), wall_s=600, max_steps=2, eval_every=2, warmup=0)
    assert r["steps"] == 2
    assert [c["step"] for c in r["loss_curve"]] == [2]
    assert math.isfinite(r["loss_curve"][0]["loss"]) and 0 < r["loss_curve"][0]["val/distance"] < 10
    assert r["steps_per_s"] > 0 and 0 <= r["data_wait_fraction"] <= 1


def test_training_run_stops_at_its_wall_budget():
    from sevi.regressor.train_config import PRESETS

    cfg = PRESETS["tiny"].replace(val_images=8, steps=10**6)  # the wall budget ends it, not the steps
    t0 = time.perf_counter()
    r = training_run(cfg, torch.device("cpu"), wall_s=8.0, eval_every=10**6, warmup=0)  # 8 s: room on a loaded box
    took = time.perf_counter() - t0
    assert r["steps"] >= 1 and r["loss_curve"] == []  # no evaluation asked for, none made
    assert 8.0 <= r["wall_s"] <= took < 8.0 + 10, "the run ends at the first step after the wall budget"


def test_tiny_frames_limit_step_answers_as_sevi_analyze_does(tmp_path):
    """The course-scale step, named, on the CPU with an untrained tiny frames model and 60 frames: one
    measurement rendered with its batches of frames and answered with the error bars from their spread
    (sevi analyze's default), compared with perfect centroiding."""
    out = tmp_path / "out"
    p = subprocess.run([sys.executable, "tools/gpu_check.py", "--out", str(out), "--device", "cpu", "--tiny",
                        "--steps", "frames_limit"], cwd=ROOT, env={**os.environ, "OMP_NUM_THREADS": "1"},
                       capture_output=True, text=True, timeout=400)
    assert p.returncode == 0, p.stdout + p.stderr
    s = json.loads((out / "gpu_check.json").read_text())["steps"]["frames_limit"]
    assert s["status"] == "ok" and s["measurements"] == 1, s
    (row,) = s["rows"]
    assert row["error_bars"] == "batches 60" and row["direct"] > 0 and row["oracle"] > 0
