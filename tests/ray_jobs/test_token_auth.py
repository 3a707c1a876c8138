"""Token authentication on a real local head (``RAY_AUTH_MODE=token``), the README's steps as
written, and the job entry points through ``ray job submit``.

A head is started with ``ray start --head`` under token auth, in its own HOME (its
``~/.ray/auth_token``), temp dir and ports, so no other Ray on the machine is touched; the
"laptop" is a second HOME. Checked:

* a submission without the cluster's token is refused with Ray's message, and so is one with the
  token a local ``ray.init()`` would have written instead; copying the head's token to the
  laptop's ``~/.ray/auth_token`` and submitting with ``RAY_AUTH_MODE=token`` (the README) works;
* both jobs (``ray_jobs.sevi_train``, ``ray_jobs.coating_tune``), small, submitted with the
  token, succeed;
* a bad option to each entry point fails the job with the one line of ``sevi.cli.policy`` as the
  last line of the job's log, and ``pool inspect --address 127.0.0.1:1 --wait-s 20`` ends at once.
"""

import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from types import SimpleNamespace

import pytest

ROOT = Path(__file__).resolve().parents[2]
RAY = str(Path(sys.executable).with_name("ray"))
PORT_FLAGS = ("--port", "--dashboard-port", "--dashboard-agent-listen-port", "--dashboard-agent-grpc-port",
              "--metrics-export-port", "--runtime-env-agent-port", "--node-manager-port", "--object-manager-port",
              "--ray-client-server-port")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def head_pids(temp_dir: str) -> list[int]:
    pids = []
    for d in Path("/proc").iterdir():
        if d.name.isdigit() and int(d.name) != os.getpid():
            try:
                if temp_dir in (d / "cmdline").read_bytes().decode(errors="replace"):
                    pids.append(int(d.name))
            except OSError:
                pass
    return pids


def base_env(home: Path, **extra) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith("RAY_AUTH") and k != "RAY_ADDRESS"}
    env.update({"HOME": str(home), "RAY_memory_monitor_refresh_ms": "0", "RAY_ENABLE_UV_RUN_RUNTIME_ENV": "0",
                "RAY_USAGE_STATS_ENABLED": "0", "OMP_NUM_THREADS": "1"}, **extra)
    return env


@pytest.fixture(scope="module")
def head(tmp_path_factory):
    root = tmp_path_factory.mktemp("auth")
    head_home, laptop = root / "head", root / "laptop"
    head_home.mkdir()
    laptop.mkdir()
    temp_dir = tempfile.mkdtemp(prefix="rayau-", dir="/tmp")  # short: Ray's socket paths have a length limit
    env = base_env(head_home, RAY_AUTH_MODE="token")
    subprocess.run([RAY, "get-auth-token", "--generate"], env=env, check=True, capture_output=True, timeout=60)
    ports = {flag: free_port() for flag in PORT_FLAGS}
    start = subprocess.run([RAY, "start", "--head", "--num-cpus", "2", "--include-dashboard", "true",
                            "--dashboard-host", "127.0.0.1", "--temp-dir", temp_dir, "--disable-usage-stats",
                            *(x for flag, port in ports.items() for x in (flag, str(port)))],
                           env=env, capture_output=True, text=True, timeout=180)
    assert start.returncode == 0, start.stderr[-3000:]
    try:
        yield SimpleNamespace(address=f"http://127.0.0.1:{ports['--dashboard-port']}", home=head_home,
                              laptop=laptop, root=root, token=(head_home / ".ray" / "auth_token").read_text())
    finally:
        for sig in (signal.SIGTERM, signal.SIGKILL):  # this head's processes only (never `ray stop`)
            for pid in head_pids(temp_dir):
                try:
                    os.kill(pid, sig)
                except OSError:
                    pass
            deadline = time.monotonic() + 10
            while head_pids(temp_dir) and time.monotonic() < deadline:
                time.sleep(0.3)
        shutil.rmtree(temp_dir, ignore_errors=True)


def submit(head, entry: list[str], *, token: bool | str = True, timeout: float = 300) -> tuple[str, str, list]:
    """``ray job submit`` from the laptop, as the README says: the head's token in the laptop's
    ``~/.ray/auth_token`` and ``RAY_AUTH_MODE=token`` (``token=False``: neither; a string: that
    token in the file, as a local ``ray.init()`` leaves its own). Returns (status, all output, the
    job's own log lines: those ``ray job submit`` tails between "Tailing logs" and the end)."""
    ray_dir = head.laptop / ".ray"
    shutil.rmtree(ray_dir, ignore_errors=True)
    extra = {}
    if token:
        ray_dir.mkdir()
        (ray_dir / "auth_token").write_text(head.token if token is True else token)
        extra["RAY_AUTH_MODE"] = "token"
    job_id = f"t{time.monotonic_ns()}"
    run = subprocess.run([RAY, "job", "submit", "--address", head.address, "--submission-id", job_id,
                          "--working-dir", str(ROOT), "--runtime-env-json",
                          '{"env_vars": {"OMP_NUM_THREADS": "1", "RAY_ENABLE_UV_RUN_RUNTIME_ENV": "0"}}',
                          "--", *entry], env=base_env(head.laptop, **extra), capture_output=True, text=True,
                         timeout=timeout, cwd=ROOT)
    out = run.stdout + run.stderr
    lines = out.splitlines()
    start = next((i for i, ln in enumerate(lines) if "Tailing logs until the job exits" in ln), len(lines))
    end = next((i for i, ln in enumerate(lines) if i > start and f"Job '{job_id}' " in ln), len(lines))
    log = [ln for ln in lines[start + 1:end] if ln.strip() and "cli.py" not in ln]
    status = "SUCCEEDED" if f"Job '{job_id}' succeeded" in out else "FAILED" if f"Job '{job_id}' failed" in out \
        else f"rc {run.returncode}"
    return status, out, log


def test_a_submission_without_the_clusters_token_is_refused(head):
    status, out, _ = submit(head, ["echo", "hi"], token=False, timeout=120)
    assert status.startswith("rc ") and "Authentication required: Unauthorized: Missing authentication token" in out, out
    # A laptop whose ~/.ray/auth_token was written by its own local ray.init() holds another token.
    status, out, _ = submit(head, ["echo", "hi"], token="0" * 64, timeout=120)
    assert status.startswith("rc ") and "Authentication failed: Forbidden: Invalid authentication token" in out, out
    # The README's fix: copy the head's token over it.
    status, out, _ = submit(head, ["echo", "hi"], timeout=120)
    assert status == "SUCCEEDED", out


def test_both_jobs_submitted_with_the_token_succeed(head):
    hist = head.root / "hist.csv"
    subprocess.run([sys.executable, "-m", "coating.cli.main", "simulate", "--cycles", "1", "--seed", "3", "--out",
                    str(hist)], check=True, capture_output=True, cwd=ROOT)
    status, out, _ = submit(head, ["python", "-m", "ray_jobs.coating_tune", "--history", str(hist), "--models",
                                str(head.root / "models"), "--num-samples", "1", "--smoke-test", "--kinds", "greybox",
                                "--storage-path", str(head.root / "runs")])
    assert status == "SUCCEEDED", out[-3000:]
    assert (head.root / "models" / "tune_summary.csv").exists()
    status, out, _ = submit(head, ["python", "-m", "ray_jobs.sevi_train", "--preset", "tiny", "--steps", "2",
                                "--num-workers", "1", "--no-pool", "--name", "auth",
                                "--storage-path", str(head.root / "runs")])
    assert status == "SUCCEEDED", out[-3000:]
    assert (head.root / "runs" / "auth" / "final" / "model.pt").exists()


@pytest.mark.parametrize("entry, line", [
    (["python", "-m", "ray_jobs.sevi_train", "--preset", "nope"],
     "sevi_train: unknown preset 'nope'; choose one of a100, cpu-"),
    (["python", "-m", "ray_jobs.coating_tune", "--history", "/nonexistent/h.csv", "--models", "/tmp/m"],
     "coating_tune: /nonexistent/h.csv: no such file"),
    (["python", "-m", "ray_jobs.pool", "inspect", "--address", "127.0.0.1:1", "--wait-s", "20"],
     "pool inspect: --address 127.0.0.1:1: no Ray cluster reachable there (connection refused"),
])
def test_a_bad_option_fails_the_job_with_the_one_line_as_its_last_log_line(head, entry, line):
    status, out, log = submit(head, entry, timeout=120)
    assert status == "FAILED" and "failed with exit code 2" in out, out[-3000:]
    assert log and log[-1].startswith(line), log
    assert not any("Traceback" in ln for ln in log), log
