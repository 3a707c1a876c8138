"""The regressor's Tune sweep: the --smoke-test sweep end to end (every trial in the table, the
Pareto PNG, TensorBoard's HParams), an unchanged rerun that trains nothing, a changed space that
starts a new sweep beside the old one, bad options in one line, and (slow) kill -9 of the driver."""

import csv
import json

import pytest

from ray_jobs import sevi_sweep


def smoke(tmp_path, *extra):
    return ["--smoke-test", "--storage-path", str(tmp_path / "runs"), "--pool", "test-sweep-pool", *extra]


def test_the_smoke_sweep_keeps_every_trial_and_an_unchanged_rerun_trains_nothing(ray_local, tmp_path, capsys):
    from ray_jobs.pool import stop_pool

    try:
        res = sevi_sweep.run(smoke(tmp_path))
    finally:
        stop_pool("test-sweep-pool")
    rows = list(csv.DictReader(open(res["table"])))
    assert len(rows) == 3 and {r["status"] for r in rows} <= {"finished", "stopped early", "failed"}
    done = [r for r in rows if r["status"] == "finished"]
    assert done, rows
    for r in done:
        assert 0 <= float(r["landed_fraction"]) <= 1 and float(r["refined_distance"]) > 0
        assert int(r["parameters"]) > 0 and float(r["flops_per_image"]) > 0 and float(r["images_per_s"]) > 0
        assert r["blocks"] and r["grid"] in ("16", "32")
    assert any(r["on_front"] for r in done)
    assert all(r["reason"] for r in rows if r["status"] != "finished")
    assert open(res["png"], "rb").read(4) == b"\x89PNG"
    exp = tmp_path / "runs" / res["name"]
    events = list(exp.glob("trial_*/events.out.tfevents.*"))
    assert len(events) == 3 and all(b"hparams" in e.read_bytes() for e in events)  # TensorBoard's HParams view
    record = json.loads((tmp_path / "runs" / (res["name"] + ".inputs.json")).read_text())
    assert record["finished"] and record["inputs"]["space"]["width"] == ["choice", [4, 8]]

    trials_before = sorted(p.name for p in exp.glob("trial_*"))
    capsys.readouterr()
    again = sevi_sweep.run(smoke(tmp_path))
    out = capsys.readouterr().out
    assert again["how"] == "reused" and "reused, nothing trained" in out
    assert sorted(p.name for p in exp.glob("trial_*")) == trials_before
    assert list(csv.DictReader(open(again["table"]))) == rows

    # A changed space is a new sweep beside the old one, never the old one restored.
    args = sevi_sweep.parse_args(smoke(tmp_path, "--space", '{"width": ["choice", [4]]}'))
    p = sevi_sweep.plan(args)
    assert p["how"] == "new" and p["name"] != res["name"]
    assert f"inputs changed since {res['name']} (space: width), which is kept" in p["line"]
    args = sevi_sweep.parse_args(smoke(tmp_path, "--steps", "12"))
    assert "(budget: steps)" in sevi_sweep.plan(args)["line"]


@pytest.mark.parametrize("extra, line", [
    (["--space", '{"depth": ["choice", [1]]}'], "sevi_sweep: search space: unknown field 'depth'"),
    (["--space", '{"width": ["choice", []]}'], "sevi_sweep: search space: width: empty range"),
    (["--space", '{"lr": ["loguniform", 0.01, 0.001]}'], "sevi_sweep: search space: lr: empty range"),
    (["--space", "{not json"], "sevi_sweep: --space: '{not json': not JSON nor a JSON file"),
    (["--space", '{"grid": ["choice", [12]]}'], "sevi_sweep: search space: grid [12]: expected even grids"),
    (["--space", '{"batch_size": ["choice", [8, 0]]}'], "sevi_sweep: search space: batch_size: 0 makes no valid trial (batch_size must be >= 1, got 0)"),
    (["--space", '{"width": ["choice", [4.5]]}'], "sevi_sweep: search space: width: 4.5 is not a whole number"),
    (["--num-samples", "0"], "sevi_sweep: --num-samples: got 0; expected >= 1"),
    (["--preset", "gpu9"], "sevi_sweep: --preset 'gpu9': unknown sweep preset"),
])
def test_a_bad_option_is_one_line_and_exit_2(tmp_path, capsys, extra, line):
    argv = ["--storage-path", str(tmp_path / "runs"), *extra]
    assert sevi_sweep.main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith(line) and err.count("\n") == 1, err
    assert not (tmp_path / "runs").exists()


@pytest.mark.slow  # the in-process test above covers the same code; this one kills the driver
def test_a_sweep_whose_driver_is_killed_resumes_with_the_same_command(tmp_path):
    import os
    import signal
    import subprocess
    import sys
    import time

    cmd = [sys.executable, "-m", "ray_jobs.sevi_sweep", "--smoke-test", "--storage-path", str(tmp_path / "runs"),
           "--num-cpus", "3", "--max-concurrent", "1"]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "RAY_AUTH_MODE": "disabled"}
    p = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline and p.poll() is None and \
            not any(f.stat().st_size for f in (tmp_path / "runs").glob("sevi-sweep-*/trial_*/result.json")):
        time.sleep(0.2)
    os.kill(p.pid, signal.SIGKILL)
    p.wait()
    again = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=400)
    assert again.returncode == 0, again.stderr[-3000:]
    assert "resuming sweep" in again.stdout, again.stdout
    table = next((tmp_path / "runs").glob("sevi-sweep-*/trials.csv"))
    assert len(list(csv.DictReader(open(table)))) == 3
    third = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=200)
    assert "reused, nothing trained" in third.stdout


def test_a_trial_that_fails_in_ray_is_kept_in_the_table_with_its_reason(ray_local, tmp_path):
    """A real Tune run (not a mock of its ResultGrid): one trial raises; its row says failed and why,
    the others are kept beside it."""
    from ray import tune

    def trainable(config):
        if config["width"] == 8:
            raise RuntimeError("CUDA out of memory at step 3")
        tune.report({"val_loss": 1.0, "steps_done": 1})

    results = tune.Tuner(trainable, param_space={"width": tune.grid_search([4, 8])},
                         run_config=tune.RunConfig(storage_path=str(tmp_path), name="failing",
                                                   verbose=0)).fit()
    rows = {r["width"]: r for r in sevi_sweep.rows_from_results(results)}
    assert set(rows) == {4, 8}
    assert rows[8]["status"] == "failed" and "CUDA out of memory at step 3" in rows[8]["reason"], rows[8]
    assert rows[4]["status"] == "stopped early" and rows[4]["reason"], rows[4]
