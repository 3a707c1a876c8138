"""The coating Tune job on CPU with a tiny space, and both workloads drawing from one pool at once."""

import threading

import pytest

from ray_jobs.pool import find_pool, pool_stats, stop_pool


@pytest.fixture(scope="module")
def history(tmp_path_factory):
    from coating.line import plant
    from coating.line.schema import history_from_measurements, write_history

    d = tmp_path_factory.mktemp("plant")
    params = plant.PlantParams(cycle_runs_min=30, cycle_runs_max=30)
    write_history(history_from_measurements(plant.simulate(params, 1, seed=3)), d / "hist.csv")
    return d / "hist.csv"


def tune_args(history, tmp_path, pool):
    return ["--history", str(history), "--models", str(tmp_path / "models"), "--num-samples", "2",
            "--max-concurrent", "1", "--smoke-test", "--kinds", "greybox,model1", "--storage-path",
            str(tmp_path / "runs"), "--pool", pool, "--pretrain-runs", "32"]


def test_tune_job_writes_best_models_and_resumes(ray_local, history, tmp_path):
    from coating.models import registry
    from ray_jobs import coating_tune

    pool = "test-tune-pool"
    try:
        rows = coating_tune.run(tune_args(history, tmp_path, pool))
        assert sorted(r["kind"] for r in rows) == ["greybox", "model1"] and len({r["cycle_id"] for r in rows}) == 1
        assert all(r["trials"] == 2 and r["errors"] == 0 for r in rows)
        for r in rows:
            model = registry.load(tmp_path / "models", r["cycle_id"], r["kind"])
            assert model.registry_meta["metrics"]["val_loss"] == pytest.approx(r["val_loss"])
        assert (tmp_path / "models" / "tune_summary.csv").exists()
        # The same command again restores the finished sweeps instead of re-running them.
        again = coating_tune.run(tune_args(history, tmp_path, pool))
        assert sorted(r["val_loss"] for r in again) == pytest.approx(sorted(r["val_loss"] for r in rows))
    finally:
        stop_pool(pool)


def test_appending_runs_refits_only_the_sweeps_whose_rows_changed(ray_local, tmp_path, capsys):
    """The engineers' routine: append runs, run the same command. A new cycle is fitted, the
    unchanged cycle is reused (its registry entry untouched), a changed cycle gets a new sweep."""
    import dataclasses
    import os

    from coating.line import plant
    from coating.line.history_rows import select_rows
    from coating.line.schema import history_from_measurements, write_history
    from coating.models import registry
    from ray_jobs import coating_tune

    params = plant.PlantParams(cycle_runs_min=10, cycle_runs_max=10)
    full = history_from_measurements(plant.simulate(params, 2, seed=7))
    hist, models, runs = tmp_path / "H.csv", tmp_path / "models", tmp_path / "runs"
    write_history(select_rows(full, full.cycle_id == 1), hist)
    args = ["--history", str(hist), "--models", str(models), "--num-samples", "1", "--max-concurrent", "1",
            "--smoke-test", "--kinds", "greybox", "--storage-path", str(runs)]
    entry = lambda c: registry.cycle_dir(models, c, "greybox") / "model.json"  # noqa: E731

    first = coating_tune.run(args)
    assert [(r["cycle_id"], r["fitted"]) for r in first] == [(1, True)]
    ino1, sweeps1 = os.stat(entry(1)).st_ino, set(os.listdir(runs))

    write_history(full, hist)                                   # cycle 2's runs appended
    capsys.readouterr()
    second = coating_tune.run(args)
    out = capsys.readouterr().out
    assert [(r["cycle_id"], r["fitted"]) for r in second] == [(1, False), (2, True)], out
    assert "cycle 1 greybox: inputs unchanged" in out and "cycle 2 greybox: starting a new sweep" in out, out
    assert os.stat(entry(1)).st_ino == ino1, "cycle 1's registry entry was written again (re-fitted)"
    assert second[0]["val_loss"] == first[0]["val_loss"]
    new = set(os.listdir(runs)) - sweeps1
    assert new and all("-cycle2-" in n for n in new), new
    m2 = registry.load(models, 2, "greybox")
    assert m2.registry_meta["last_run_in_cycle"] <= 10 and m2.registry_meta["n_train"] >= 5

    # One of cycle 1's rows changed: its old sweep must not be resumed on the new data.
    changed = dataclasses.replace(full, std=full.std.copy())
    changed.std[0, 0] *= 1.5
    write_history(changed, hist)
    third = coating_tune.run(args)
    out = capsys.readouterr().out
    assert [(r["cycle_id"], r["fitted"]) for r in third] == [(1, True), (2, False)], out
    assert "inputs changed since" in out and "the cycle's rows" in out, out
    assert os.stat(entry(1)).st_ino != ino1
    assert registry.load(models, 1, "greybox").registry_meta["data_sha256"] != \
        registry.data_sha256(time_split_train(full, 1)), "cycle 1's model was not fitted on the changed rows"


def time_split_train(history, cycle_id):
    from coating.line.history_rows import time_split
    return time_split(history, cycle_id)[0]


def test_sevi_training_and_coating_sweep_share_one_pool(ray_local, history, tmp_path):
    from ray_jobs import coating_tune, sevi_train
    from ray_jobs.pool import PoolSpec, get_or_create_pool

    pool = "test-shared-pool"
    get_or_create_pool(PoolSpec(pool, actors=1, cpus_per_actor=0.5, device="cpu"))
    tiny = ["--batch_size", "2", "--val_images", "2", "--eval_every", "3", "--checkpoint_every", "3",
            "--target_stats_draws", "50", "--width", "4", "--grid", "32", "--n_r", "16", "--n_theta", "8",
            "--electrons", "2000,3000", "--steps", "3"]
    errors = []

    def train():
        try:
            sevi_train.run(["--name", "shared", "--storage-path", str(tmp_path / "train"), "--num-workers", "1",
                            "--pool", pool, *tiny])
        except BaseException as e:  # noqa: BLE001 - reported below
            errors.append(e)

    t = threading.Thread(target=train)
    try:
        t.start()
        coating_tune.run(["--history", str(history), "--models", str(tmp_path / "m"), "--num-samples", "1",
                          "--smoke-test", "--kinds", "model1", "--storage-path", str(tmp_path / "runs"),
                          "--pool", pool, "--pretrain-runs", "32"])
        t.join(timeout=600)
        assert not errors, errors
        served = [r for s in pool_stats(find_pool(pool)) for r in s["recipes"]]  # any actor may serve any recipe
        assert "sevi-images" in served and "coating-spectra" in served, served
    finally:
        stop_pool(pool)


SEVI_TINY = ["--preset", "tiny", "--steps", "2", "--batch_size", "2", "--val_images", "2", "--eval_every", "2",
             "--checkpoint_every", "2", "--num-workers", "1", "--wait-s", "60"]


def test_both_jobs_share_one_pool_in_both_orders_on_two_cpus(two_free_cpus, history, tmp_path):
    """The deadlock: the pool once held 1 or 0.5 CPU per actor depending on which job made it, and
    on 2 CPUs the second job's workers waited for ever. Now both jobs make the same pool and fit."""
    from ray_jobs import coating_tune, sevi_train

    pool = "test-order-pool"

    def coating(tag):  # a file:// URI storage path: Tune writes through pyarrow, never abspath
        return coating_tune.run(["--history", str(history), "--models", str(tmp_path / f"m{tag}"), "--num-samples",
                                 "1", "--smoke-test", "--kinds", "model1", "--storage-path",
                                 f"file://{tmp_path}/tune{tag}", "--pool", pool, "--pretrain-runs", "16",
                                 "--wait-s", "60"])

    def sevi(tag):
        return sevi_train.run([*SEVI_TINY, "--name", f"order{tag}", "--storage-path", str(tmp_path / "train"),
                               "--pool", pool]).return_value

    try:
        for order in ("coating-first", "sevi-first"):
            stop_pool(pool)
            first = coating(order) if order == "coating-first" else sevi(order)
            pids = [s["pid"] for s in pool_stats(find_pool(pool))]
            second = sevi(order) if order == "coating-first" else coating(order)
            stats = pool_stats(find_pool(pool))
            assert [s["pid"] for s in stats] == pids, f"{order}: the second job made its own pool"
            assert sum(s["cpus"] for s in stats) == 1.0, f"{order}: {stats}"
            train, tune_rows = (second, first) if order == "coating-first" else (first, second)
            assert train["step"] == 2 and tune_rows[0]["errors"] == 0, order
            assert (tmp_path / f"tune{order}").is_dir(), "the file:// URI was written as the path it names"
    finally:
        stop_pool(pool)


def test_a_job_without_room_fails_in_bounded_time_with_one_line(two_free_cpus, history, tmp_path, capsys):
    import time

    from ray_jobs import coating_tune, sevi_train
    from ray_jobs.pool import PoolSpec, get_or_create_pool

    pool = "test-full-pool"
    # The old `pool start` default: 2 actors x 1 CPU, all of a 2-CPU machine.
    get_or_create_pool(PoolSpec(pool, actors=2, cpus_per_actor=1.0, device="cpu"), timeout_s=60)
    try:
        t0 = time.monotonic()
        rc = sevi_train.main([*SEVI_TINY, "--wait-s", "2", "--name", "full", "--storage-path", str(tmp_path),
                              "--pool", pool])
        err = capsys.readouterr().err.strip()
        assert rc == 2 and "\n" not in err, err
        assert err.startswith("sevi_train: could not get its resources within 2 s: it asks for 1 x {CPU: 1}; "
                              f"pool '{pool}' holds 2 actors = {{CPU: 2}}; the cluster has {{CPU: 4"), err
        rc = coating_tune.main(["--history", str(history), "--models", str(tmp_path / "m"), "--smoke-test",
                                "--kinds", "greybox", "--storage-path", str(tmp_path / "runs"), "--pool", pool,
                                "--wait-s", "2"])
        err = capsys.readouterr().err.strip()
        assert rc == 2 and err.startswith("coating_tune: could not get its resources within 2 s: it asks for "
                                          "1 x {CPU: 1}"), err
        assert time.monotonic() - t0 < 60
    finally:
        stop_pool(pool)


def test_the_best_trial_is_chosen_among_those_that_finished_with_a_checkpoint():
    """ASHA can stop a trial at an early rung with a lower reported loss than any finished trial's;
    it saved no model, so it cannot be the sweep's best (the bug seen with --num-samples 2)."""
    from types import SimpleNamespace

    from ray_jobs.coating_tune import best_finished

    stopped = SimpleNamespace(error=None, checkpoint=None, metrics={"val_loss": 0.01})
    done = SimpleNamespace(error=None, checkpoint="ck", metrics={"val_loss": 0.05})
    better = SimpleNamespace(error=None, checkpoint="ck2", metrics={"val_loss": 0.04})
    nan = SimpleNamespace(error=None, checkpoint="ck3", metrics={"val_loss": float("nan")})
    failed = SimpleNamespace(error=RuntimeError("x"), checkpoint="ck4", metrics={"val_loss": 0.0})
    assert best_finished([stopped, done, better, nan, failed]) is better
    with pytest.raises(RuntimeError, match="no trial finished"):
        best_finished([stopped, nan, failed], "s")


def _interrupted(runs, models):
    """Make a finished sweep look like one whose driver was killed: its record unfinished, no
    registry model yet (as when the kill came before Tune returned)."""
    import json
    import shutil

    for rec in runs.glob("*.inputs.json"):
        d = json.loads(rec.read_text())
        d.pop("result", None)
        rec.write_text(json.dumps(d))
    shutil.rmtree(models)


def test_an_interrupted_sweep_resumes_or_restarts_and_says_which(ray_local, history, tmp_path, capsys):
    """A driver killed mid-write can leave the experiment state cut off. Tune, given one, silently
    'restarts' with a single trial of an empty config; the job checks the state first, deletes the
    experiment and starts the sweep again, and says so. A readable one is resumed, and said so."""
    from coating.models import registry
    from ray_jobs import coating_tune

    runs, models = tmp_path / "runs", tmp_path / "models"
    args = ["--history", str(history), "--models", str(models), "--num-samples", "2", "--max-concurrent", "1",
            "--smoke-test", "--kinds", "greybox", "--storage-path", str(runs)]
    assert coating_tune.main(args) == 0
    capsys.readouterr()

    _interrupted(runs, models)
    assert coating_tune.main(args) == 0
    out = capsys.readouterr().out
    assert "greybox: resuming sweep" in out and "sweep coating-tune-cycle1-greybox-" in out and " resumed\n" in out, out

    _interrupted(runs, models)
    (state,) = [max(d.glob("experiment_state-*.json")) for d in runs.iterdir() if d.is_dir()]
    state.write_text(state.read_text()[:100])              # cut off mid-write
    assert coating_tune.main(args) == 0
    out = capsys.readouterr().out
    assert "restarted (the interrupted experiment could not be restored: JSONDecodeError" in out, out
    row = [ln.split() for ln in out.splitlines() if ln.split()[:2] == ["1", "greybox"]]
    assert row and row[0][2:4] == ["2", "0"], "the restarted sweep ran all its trials: " + out
    assert registry.load(models, 1, "greybox") is not None


@pytest.mark.slow  # test_an_interrupted_sweep_resumes_or_restarts_and_says_which covers the same code in-process
def test_a_sweep_whose_driver_is_killed_is_resumed_by_the_same_command(history, tmp_path):
    """kill -9 of the job's driver while trials run (the issue's time-out), then the same command:
    it ends with exit 0, a model in the registry, and a line saying what became of the sweep."""
    import os
    import signal
    import subprocess
    import sys
    import time

    cmd = [sys.executable, "-m", "ray_jobs.coating_tune", "--history", str(history), "--models",
           str(tmp_path / "models"), "--storage-path", str(tmp_path / "runs"), "--num-samples", "4",
           "--max-concurrent", "1", "--smoke-test", "--kinds", "greybox", "--num-cpus", "2"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    p = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and p.poll() is None and \
            len(list((tmp_path / "runs").glob("coating-tune-*/trial_*"))) < 2:
        time.sleep(0.2)
    os.kill(p.pid, signal.SIGKILL)
    p.wait()
    again = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert again.returncode == 0, again.stderr[-3000:]
    assert "resuming sweep" in again.stdout and any(w in again.stdout for w in (" resumed\n", " restarted (",
                                                                                  " started again (")), again.stdout
    assert (tmp_path / "models" / "tune_summary.csv").exists()


@pytest.mark.parametrize("extra, line", [
    (["--history", "{d}/nope.csv"], "coating_tune: {d}/nope.csv: no such file"),
    (["--history", "{d}/text.h5"], "coating_tune: {d}/text.h5: not a readable HDF5 file"),
    (["--history", "{d}/semi.csv"], "coating_tune: {d}/semi.csv: line 1: the header is semicolon-separated"),
    (["--cycles", "first"], "coating_tune: --cycles first: expected 'all' or a comma list of cycle ids"),
    (["--num-samples", "0"], "coating_tune: --num-samples: got 0; expected >= 1 trials per sweep"),
    (["--max-concurrent", "0"], "coating_tune: --max-concurrent: got 0; expected >= 1 trials at once"),
    (["--models", "{d}/text.h5"], "coating_tune: --models {d}/text.h5: is a file; expected the registry folder"),
    (["--gpus-per-trial", "-1"], "coating_tune: --gpus-per-trial: got -1.0"),
    (["--pretrain-runs", "0"], "coating_tune: --pretrain-runs: got 0"),
    (["--cycles", "9"], "coating_tune: {h}: no runs of cycle(s) [9]"),
])
def test_every_bad_option_is_one_line_and_exit_2(history, tmp_path, capsys, extra, line):
    """The issue's cases: a traceback each (--max-concurrent 0: exit 0 after one)."""
    from ray_jobs import coating_tune

    (tmp_path / "text.h5").write_text("cycle_id\n1\n")
    (tmp_path / "semi.csv").write_text(history.read_text().replace(",", ";"))
    argv = ["--history", str(history), "--models", str(tmp_path / "m"), "--storage-path", str(tmp_path / "runs"),
            "--smoke-test", "--kinds", "greybox"] + [x.format(d=tmp_path) for x in extra]
    assert coating_tune.main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith(line.format(d=tmp_path, h=history)) and err.count("\n") == 1, err
    assert not (tmp_path / "m").exists() and not (tmp_path / "runs").exists()
