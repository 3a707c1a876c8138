"""Both jobs through Ray's own job client on a real 2-CPU head, in both orders, sharing one pool.

    python tools/cluster_check.py [--keep-dir DIR]

What it does, as a user on a cluster would (``ray job submit`` is this client underneath):

1. starts its own head (``ray start --head --num-cpus 2``) with its own ``--temp-dir``, so it
   never touches another Ray instance on the machine (``ray stop`` would stop them all);
2. submits, with ``working_dir`` = this repository: the pool (``ray_jobs.pool start`` through the
   dashboard address, idle timeout 30 s), the coating sweep, then the SEVI training job; stops the
   pool; then the SEVI job first and the coating sweep second. Every job must SUCCEED, and the
   second job of each order must find the pool the first one left (same actor pids);
3. submits a job whose ``--storage-path`` is relative: it must FAIL with the line saying why;
4. waits out the pool's idle timeout and checks that all the head's CPUs are free again;
5. stops its head by ending the processes that name its temp dir.

Prints one line per step and a verdict; exit status 0 when every check held. About 3-4 minutes
on an idle 2-core machine.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
IDLE_S = 30


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def head_pids(temp_dir: str) -> list[int]:
    """Processes whose command line names this head's temp dir (Linux /proc)."""
    pids = []
    for d in Path("/proc").iterdir():
        if d.name.isdigit() and int(d.name) != os.getpid():
            try:
                if temp_dir in (d / "cmdline").read_bytes().decode(errors="replace"):
                    pids.append(int(d.name))
            except OSError:
                pass
    return pids


def stop_head(temp_dir: str) -> list[int]:
    """SIGTERM, then SIGKILL after 10 s, to this head's processes only; returns any left."""
    for sig in (signal.SIGTERM, signal.SIGKILL):
        for pid in head_pids(temp_dir):
            try:
                os.kill(pid, sig)
            except OSError:
                pass
        deadline = time.monotonic() + 10
        while head_pids(temp_dir) and time.monotonic() < deadline:
            time.sleep(0.5)
    return head_pids(temp_dir)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--keep-dir", default=None, help="where outputs go (default: a temporary folder, removed)")
    a = ap.parse_args(argv)
    out = Path(a.keep_dir or tempfile.mkdtemp(prefix="cluster-check-")).resolve()
    out.mkdir(parents=True, exist_ok=True)
    temp_dir = tempfile.mkdtemp(prefix="rayck-", dir="/tmp")  # short: Ray's socket paths have a length limit
    env = {**os.environ, "RAY_AUTH_MODE": "disabled", "RAY_memory_monitor_refresh_ms": "0",
           "RAY_ENABLE_UV_RUN_RUNTIME_ENV": "0", "RAY_USAGE_STATS_ENABLED": "0", "OMP_NUM_THREADS": "1"}
    env.pop("RAY_ADDRESS", None)
    gcs, dash = free_port(), free_port()
    ok, t_start = True, time.perf_counter()

    def check(cond: bool, what: str) -> None:
        nonlocal ok
        ok &= bool(cond)
        print(f"{'ok  ' if cond else 'FAIL'} {what}", flush=True)

    subprocess.run([shutil.which("ray") or "ray", "start", "--head", "--num-cpus", "2", "--port", str(gcs),
                    "--dashboard-port", str(dash), "--dashboard-host", "127.0.0.1", "--include-dashboard", "true",
                    "--temp-dir", temp_dir, "--disable-usage-stats"], env=env, check=True, capture_output=True)
    try:
        import logging

        from ray.job_submission import JobStatus, JobSubmissionClient

        logging.getLogger("ray").setLevel(logging.WARNING)  # one "ignoring upload" line per file per job

        address = f"http://127.0.0.1:{dash}"
        client = JobSubmissionClient(address)
        history = out / "hist.csv"
        subprocess.run([sys.executable, "-m", "coating.cli", "simulate", "--cycles", "1", "--seed", "3", "--out",
                        str(history)], env=env, check=True, capture_output=True, cwd=ROOT)

        def submit(entry: str, timeout_s: float = 600) -> tuple[str, str]:
            t0 = time.perf_counter()
            job = client.submit_job(entrypoint=entry, runtime_env={"working_dir": str(ROOT), "env_vars": {
                "OMP_NUM_THREADS": "1", "RAY_ENABLE_UV_RUN_RUNTIME_ENV": "0"}})
            status = client.get_job_status(job)
            while status not in (JobStatus.SUCCEEDED, JobStatus.FAILED, JobStatus.STOPPED):
                if time.perf_counter() - t0 > timeout_s:
                    client.stop_job(job)
                    return "TIMEOUT", client.get_job_logs(job)
                time.sleep(1.0)
                status = client.get_job_status(job)
            print(f"     {entry.split(' --')[0]} -> {status} in {time.perf_counter() - t0:.0f} s", flush=True)
            return str(status), client.get_job_logs(job)

        coating = (f"python -m ray_jobs.coating_tune --history {history} --models {out}/models-{{o}} --num-samples 1 "
                   f"--smoke-test --kinds model1 --pretrain-runs 16 --storage-path {out}/runs")
        sevi = (f"python -m ray_jobs.sevi_train --preset tiny --steps 4 --name sevi-{{o}} --storage-path {out}/runs "
                f"--pool-idle-timeout-s {IDLE_S}")

        def pool_pids() -> list[int]:
            status, logs = submit("python -m ray_jobs.pool inspect")
            return sorted(int(line.split()[2]) for line in logs.splitlines()
                          if line.strip().startswith("gen-"))

        # Order 1: the pool from `pool start` (through the dashboard address), coating, then SEVI.
        rc = subprocess.run([sys.executable, "-m", "ray_jobs.pool", "start", "--idle-timeout-s", str(IDLE_S),
                             "--address", address], env=env, cwd=ROOT, capture_output=True, text=True)
        check(rc.returncode == 0 and "gen-0" in rc.stdout, "pool start --address http://... (runs as a job)")
        for order, jobs in (("pool-coating-sevi", (coating, sevi)), ("sevi-coating", (sevi, coating))):
            if order == "sevi-coating":
                rc = subprocess.run([sys.executable, "-m", "ray_jobs.pool", "stop", "--address", address], env=env,
                                    cwd=ROOT, capture_output=True, text=True)
                check("stopped 2 actors" in rc.stdout, f"pool stop --address http://... ({rc.stdout.strip()!r})")
            pids = []
            for i, job in enumerate(jobs):
                status, logs = submit(job.format(o=order))
                check(status == "SUCCEEDED", f"{order}: job {i + 1} succeeded" +
                      ("" if status == "SUCCEEDED" else "\n" + logs[-2000:]))
                pids.append(pool_pids())
            check(len(pids[0]) == 2 and pids[0] == pids[1], f"{order}: both jobs used one pool (pids {pids})")
        final = out / "runs" / "sevi-sevi-coating" / "final" / "model.pt"
        check(final.exists(), f"final model where the user asked: {final}")

        status, logs = submit("python -m ray_jobs.sevi_train --preset tiny --storage-path runs")
        line = [ln for ln in logs.splitlines() if "is relative" in ln]
        check(status == "FAILED" and bool(line), f"relative --storage-path refused: {line[0] if line else logs[-500:]}")

        import ray

        ray.init(address=f"127.0.0.1:{gcs}", log_to_driver=False)
        t_last = time.monotonic()  # the last job ended just now; the pool's last request was before it
        held_now = 2 - ray.available_resources().get("CPU", 0)
        deadline = t_last + IDLE_S + 60
        while ray.available_resources().get("CPU", 0) < 2 and time.monotonic() < deadline:
            time.sleep(1)
        free = ray.available_resources().get("CPU", 0)
        ray.shutdown()
        check(free == 2, f"after the idle timeout ({IDLE_S} s) the head's CPUs are free: {free} of 2 (the pool "
                         f"held {held_now} when the last job ended; free {time.monotonic() - t_last:.0f} s later)")
    finally:
        left = stop_head(temp_dir)
        if left:
            print(f"FAIL processes of the check's head still running: {left}")
            ok = False
        shutil.rmtree(temp_dir, ignore_errors=True)
        if not a.keep_dir:
            shutil.rmtree(out, ignore_errors=True)
    print(json.dumps({"all_ok": ok, "wall_s": round(time.perf_counter() - t_start, 1)}))
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
