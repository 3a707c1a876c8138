"""The SEVI Ray Train job: a real 2-worker TorchTrainer run (gloo, CPU) and its resume."""

import pytest
import torch

TINY = ["--batch_size", "2", "--val_images", "4", "--eval_every", "2", "--checkpoint_every", "2",
        "--target_stats_draws", "100", "--width", "4", "--grid", "32", "--n_r", "16", "--n_theta", "8",
        "--electrons", "2000,3000"]


def test_two_workers_then_resume(ray_local, tmp_path):
    from ray_jobs import sevi_train
    from ray_jobs.pool import stop_pool

    argv = ["--preset", "cpu-smoke", "--name", "tiny", "--storage-path", str(tmp_path), "--num-workers", "2",
            "--pool", "test-train-pool", *TINY]
    try:
        first = sevi_train.run(argv + ["--steps", "2"]).return_value
        assert first["resumed_from"] == 0 and first["step"] == 2
        # The same command with more steps continues from the step-2 checkpoint.
        second = sevi_train.run(argv + ["--steps", "4"]).return_value
        assert second["resumed_from"] == 2 and second["step"] == 4
    finally:
        stop_pool("test-train-pool")
    final = tmp_path / "tiny" / "final" / "model.pt"
    assert first["final_model"] == second["final_model"] == str(final)
    ck = torch.load(final, map_location="cpu", weights_only=True)
    assert ck["config"]["steps"] == 4
    assert (final.parent / "config.json").exists()
    assert any((tmp_path / "tiny" / "tensorboard").iterdir()), "rank 0 writes TensorBoard events"
    assert "val/distance" in second["metrics"]


def test_bad_override_is_refused_before_ray_starts():
    from ray_jobs import sevi_train

    with pytest.raises(ValueError, match="unknown TrainConfig field 'stpes'"):
        sevi_train.run(["--stpes", "3"])


def test_gpu_workers_leave_room_for_pool_actors():
    from ray_jobs.sevi_train import worker_resources

    assert worker_resources(False, 0.25) is None
    assert worker_resources(True, 0.0) is None
    # 8 workers x 0.75 GPU + 8 actors x 0.25 GPU = 8 GPUs.
    assert worker_resources(True, 0.25) == {"CPU": 1, "GPU": 0.75}
    with pytest.raises(ValueError, match="no GPU share"):
        worker_resources(True, 1.0)


def test_a100_preset_refuses_to_run_without_gpus(ray_local, tmp_path, capsys):
    from ray_jobs import sevi_train

    rc = sevi_train.main(["--preset", "a100", "--wait-s", "1", "--storage-path", str(tmp_path), "--pool", "no-such"])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and "\n" not in err, err
    assert err.startswith("sevi_train: preset 'a100' needs GPUs and the cluster has none after 1 s (it has {CPU: 4"), err
    assert not (tmp_path / "sevi-a100").exists()


def test_relative_storage_is_refused_in_a_submitted_job(monkeypatch, tmp_path, capsys):
    import json

    from ray_jobs import sevi_train
    from ray_jobs.storage import JOB_CONFIG_ENV

    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv(JOB_CONFIG_ENV, json.dumps({"runtime_env": {"working_dir": "gcs://_ray_pkg_x.zip"}}))
    assert sevi_train.main(["--preset", "tiny"]) == 2  # default --storage-path runs: relative
    assert "--storage-path 'runs' is relative" in capsys.readouterr().err
    assert not (tmp_path / "runs").exists()


def test_file_uri_storage_and_a_finished_run_is_reported_not_rerun(ray_local, tmp_path, capsys):
    from ray_jobs import sevi_train

    uri = f"file://{tmp_path}/store"
    argv = ["--preset", "tiny", "--name", "uri", "--storage-path", uri, "--num-workers", "0", "--no-pool",
            *TINY, "--steps", "2"]
    first = sevi_train.run(argv).return_value
    final = tmp_path / "store" / "uri" / "final" / "model.pt"
    assert first["final_model"] == f"{uri}/uri/final/model.pt"
    assert torch.load(final, map_location="cpu", weights_only=True)["config"]["steps"] == 2
    assert any((tmp_path / "store" / "uri" / "tensorboard").iterdir()), "TensorBoard events copied to the URI"
    assert not (tmp_path / "file:").exists()
    capsys.readouterr()
    assert sevi_train.main(argv) == 0
    out = capsys.readouterr().out.strip()
    assert out == f"sevi_train: already finished at step 2; final model at {uri}/uri/final/model.pt", out


def test_resume_takes_the_newest_complete_checkpoint_not_the_last_registered(tmp_path):
    # A worker killed just after reporting step 100 leaves a checkpoint the controller never
    # registered; resuming from the registered step-80 one would redo 20 steps.
    import ray.train

    from ray_jobs.sevi_train import newest_checkpoint
    from sevi.regressor.checkpoints import checkpoint_step

    def write(name, step=None):
        d = tmp_path / name
        d.mkdir()
        if step is None:
            (d / "model.pt").write_bytes(b"cut off mid-co")
        else:
            torch.save({"step": step}, d / "model.pt")
        return d

    registered = write("checkpoint_2026-01-01_10-00-00.000001", 80)
    write("checkpoint_2026-01-01_10-00-05.000001", 100)
    write("checkpoint_2026-01-01_10-00-09.000001")  # incomplete
    (tmp_path / "final").mkdir()
    got = newest_checkpoint(str(tmp_path), ray.train.Checkpoint(str(registered)))
    with got.as_directory() as d:
        assert checkpoint_step(d) == 100
    uri = newest_checkpoint(f"file://{tmp_path}")
    with uri.as_directory() as d:
        assert checkpoint_step(d) == 100
    assert newest_checkpoint(str(tmp_path / "nothing")) is None


def test_prune_keeps_the_newest_checkpoints_only(tmp_path):
    from ray_jobs.sevi_train import prune_checkpoints

    names = [f"checkpoint_2026-01-01_10-00-0{i}.000001" for i in range(4)]
    for n in names:
        (tmp_path / n).mkdir()
        (tmp_path / n / "model.pt").write_bytes(b"x")
    (tmp_path / "final").mkdir()
    deleted = prune_checkpoints(f"file://{tmp_path}", 2)
    assert sorted(p.rsplit("/", 1)[1] for p in deleted) == names[:2]
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(names[2:] + ["final"])


def _job(tmp_path, name, *extra):
    import sys

    return [sys.executable, "-m", "ray_jobs.sevi_train", "--preset", "tiny", "--num-workers", "1", "--no-pool",
            "--num-cpus", "2", "--steps", "200", "--checkpoint_every", "20", "--eval_every", "100",
            "--name", name, "--storage-path", str(tmp_path), *extra]


def test_a_train_worker_killed_mid_run_resumes_to_the_same_weights_and_batches(tmp_path):
    """kill -9 of the training worker (the RayTrainWorker actor's process) after its first
    checkpoint: Ray Train restarts it, it resumes from the newest complete checkpoint, and the final
    model and the batch seeds its weights consumed are those of an uninterrupted run."""
    import os
    import signal
    import subprocess
    import time

    env = {**os.environ, "OMP_NUM_THREADS": "1", "RAY_AUTH_MODE": "disabled"}
    ref = subprocess.run(_job(tmp_path, "ref"), env=env, capture_output=True, text=True, timeout=400)
    assert ref.returncode == 0, ref.stderr[-3000:]
    assert "resumed" not in ref.stdout

    p = subprocess.Popen(_job(tmp_path, "killed"), env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline, killed, seen = time.monotonic() + 300, None, None
        while killed is None and time.monotonic() < deadline and p.poll() is None:
            # A complete checkpoint only: one whose model.pt is still being copied would be skipped on
            # the restart (newest_checkpoint), and the run would start over with nothing to resume.
            done = [d for d in (tmp_path / "killed").glob("checkpoint_*")
                    if (d / "model.pt").exists() and checkpoint_step_of(d) > 0]
            workers = [pid for pid, cmd in descendants(p.pid) if "RayTrainWorker" in cmd]
            if done and workers:
                seen = max(checkpoint_step_of(d) for d in done)
                os.kill(workers[0], signal.SIGKILL)
                killed = workers[0]
            time.sleep(0.05)
        out, err = p.communicate(timeout=400)
    finally:
        if p.poll() is None:
            p.kill()
    assert killed is not None, "no checkpoint and worker seen before the run ended: " + err[-2000:]
    assert p.returncode == 0, err[-3000:]
    resumed = int(out.split("resumed from the checkpoint of step ")[1].split()[0])
    assert seen <= resumed < 200 and resumed % 20 == 0, (seen, resumed)

    a = torch.load(tmp_path / "ref" / "final" / "model.pt", map_location="cpu", weights_only=True)
    b = torch.load(tmp_path / "killed" / "final" / "model.pt", map_location="cpu", weights_only=True)
    assert a["stream"] == b["stream"] and a["stream"]["batches"] == 200 and a["stream"]["sha256"], (a["stream"],
                                                                                                    b["stream"])
    assert a["model"].keys() == b["model"].keys()
    differ = [k for k in a["model"] if not torch.equal(a["model"][k], b["model"][k])]
    assert not differ, f"weights differ after the resume: {differ[:5]}"


def descendants(pid: int) -> list[tuple[int, str]]:
    """(pid, command line) of every process below ``pid`` (Linux /proc; Ray's workers are children
    of the raylet that the driver started)."""
    from pathlib import Path

    parent, cmd = {}, {}
    for d in Path("/proc").iterdir():
        if d.name.isdigit():
            try:
                stat = (d / "stat").read_text()
                parent[int(d.name)] = int(stat.rsplit(")", 1)[1].split()[1])
                cmd[int(d.name)] = (d / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            except (OSError, ValueError, IndexError):
                pass
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        kids = [c for c, pp in parent.items() if pp == p]
        out += [(c, cmd.get(c, "")) for c in kids]
        todo += kids
    return out


def checkpoint_step_of(d) -> int:
    try:
        return int(torch.load(d / "model.pt", map_location="cpu", weights_only=True)["step"])
    except Exception:  # noqa: BLE001 - being written
        return 0


@pytest.mark.parametrize("extra, line", [
    (["--preset", "nope"], "sevi_train: unknown preset 'nope'; choose one of a100, cpu-"),
    (["--warp-factor", "9"], "sevi_train: unknown TrainConfig field 'warp_factor'"),
    (["--steps", "abc"], "sevi_train: override steps='abc': expected int"),
    (["--steps", "-5"], "sevi_train: steps must be >= 1, got -5"),
    (["--steps", "0"], "sevi_train: steps must be >= 1, got 0"),
    (["--electrons", "5"], "sevi_train: override electrons='5'"),
    (["--electrons", "4000,2000"], "sevi_train: electrons must satisfy 0 < low <= high, got (4000, 2000)"),
    (["--spot-blur", "-0.1"], "sevi_train: spot_blur must be >= 0"),
    (["--amp", "fp8"], "sevi_train: amp must be 'bf16', 'fp16' or 'none', got 'fp8'"),
    (["--batch-size", "0"], "sevi_train: batch_size must be >= 1, got 0"),
    (["--lr", "-0.01"], "sevi_train: lr must be a finite number > 0 (the peak learning rate), got -0.01"),
    (["--lr", "nan"], "sevi_train: lr must be a finite number > 0"),
    (["--warmup_steps", "-3"], "sevi_train: warmup_steps must be a finite number >= 0, got -3"),
    (["--num-workers", "-1"], "sevi_train: --num-workers: got -1; expected >= 0 training workers"),
    (["--in-flight", "0"], "sevi_train: --in-flight: got 0"),
    (["--wait-s", "-1"], "sevi_train: --wait-s: got -1.0"),
    (["--gpus-per-actor", "1.5"], "sevi_train: --gpus-per-actor: got 1.5"),
    (["--init_from", "/nonexistent/model"], "sevi_train: --init_from /nonexistent/model: no such model file"),
    (["--refine_answer", "/nonexistent/a.h5"], "sevi_train: /nonexistent/a.h5: no such file"),
])
def test_every_bad_option_is_one_line_and_exit_2_before_ray_starts(tmp_path, capsys, extra, line):
    """The issue's cases (and neighbours): each was a raw traceback at this door."""
    import time

    from ray_jobs import sevi_train

    t0 = time.monotonic()
    assert sevi_train.main(["--preset", "tiny", "--storage-path", str(tmp_path), *extra]) == 2
    err = capsys.readouterr().err
    assert err.startswith(line) and err.count("\n") == 1 and "Traceback" not in err, err
    assert time.monotonic() - t0 < 15 and not any(tmp_path.iterdir())


def test_ctrl_c_ends_the_job_in_one_line_and_the_same_command_resumes(tmp_path):
    """Ray Train puts its own SIGINT handler on the main thread (a terminal's Ctrl-C then ended the
    job with exit 1 and no word); the job runs fit off the main thread and answers as every command."""
    import os
    import signal
    import subprocess
    import time

    env = {**os.environ, "OMP_NUM_THREADS": "1", "RAY_AUTH_MODE": "disabled"}
    p = subprocess.Popen(_job(tmp_path, "ctrlc"), env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                         text=True, start_new_session=True)
    deadline = time.monotonic() + 300
    while p.poll() is None and time.monotonic() < deadline and not list((tmp_path / "ctrlc").glob("checkpoint_*")):
        time.sleep(0.05)
    os.killpg(p.pid, signal.SIGINT)                     # as a terminal sends it: to the whole group
    out, err = p.communicate(timeout=120)
    assert p.returncode == 130, err[-3000:]
    assert err.rstrip().splitlines()[-1] == (f"sevi_train: interrupted; checkpoints kept in {tmp_path / 'ctrlc'}; "
                                             f"run the same command to resume")
    again = subprocess.run(_job(tmp_path, "ctrlc"), env=env, capture_output=True, text=True, timeout=400)
    assert again.returncode == 0 and "resumed from the checkpoint of step" in again.stdout, again.stderr[-3000:]
