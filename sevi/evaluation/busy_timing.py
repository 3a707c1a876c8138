"""Timing a command as a user runs it, on a quiet or a busy machine (``tools/bench_busy.py``).

``busy(n)`` starts ``n`` CPU-bound processes (``python -c "while True: pass"``, the load the
busy-machine targets are set under) and ends them on exit; ``time_command`` runs a command line
in a subprocess and returns its wall time, the CPU time it and its children used, and the load
average before and sampled every half second while it ran, so every figure states the load it was
measured under.
"""

from __future__ import annotations

import contextlib
import os
import resource
import subprocess
import sys
import threading
import time

__all__ = ["BUSY_LOOP", "busy", "time_command", "load_now"]

BUSY_LOOP = [sys.executable, "-c", "while True: pass"]


def load_now() -> float:
    """The 1-minute load average."""
    return os.getloadavg()[0]


@contextlib.contextmanager
def busy(n: int):
    """``n`` CPU-bound processes for the duration of the block (killed, by their own pids, on exit)."""
    procs = [subprocess.Popen(BUSY_LOOP, stdin=subprocess.DEVNULL) for _ in range(n)]
    try:
        time.sleep(0.5 if n else 0.0)       # let them get onto the cores
        yield [p.pid for p in procs]
    finally:
        for p in procs:
            p.kill()
        for p in procs:
            p.wait()


def _children_cpu() -> float:
    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime


def time_command(cmd: list[str], env: dict | None = None, cwd=None, timeout: float | None = None) -> dict:
    """Run ``cmd``; ``{"wall_s", "cpu_s", "rc", "load_before", "load_during_mean", "load_during_max",
    "stdout_tail", "stderr_tail", "timed_out"}``. ``cpu_s`` is the user + system time of the command
    and its children (the busy processes of ``busy`` are not waited for until later, so they do
    not count). A command past ``timeout`` is killed (``timed_out``; its wall time is the timeout)."""
    samples: list[float] = []
    stop = threading.Event()

    def sample():
        while not stop.wait(0.5):
            samples.append(load_now())

    before = load_now()
    cpu0 = _children_cpu()
    t0 = time.perf_counter()
    th = threading.Thread(target=sample, daemon=True)
    th.start()
    timed_out = False
    try:
        res = subprocess.run(cmd, env=env, cwd=cwd, capture_output=True, text=True, timeout=timeout)
        rc, out, err = res.returncode, res.stdout, res.stderr
    except subprocess.TimeoutExpired as e:
        timed_out, rc = True, None
        out = e.stdout.decode() if isinstance(e.stdout, bytes) else (e.stdout or "")
        err = e.stderr.decode() if isinstance(e.stderr, bytes) else (e.stderr or "")
    wall = time.perf_counter() - t0
    stop.set()
    th.join()
    during = samples or [load_now()]
    return {"wall_s": wall, "cpu_s": _children_cpu() - cpu0, "rc": rc, "timed_out": timed_out,
            "load_before": before, "load_during_mean": sum(during) / len(during), "load_during_max": max(during),
            "stdout_tail": out[-2000:], "stderr_tail": err[-2000:]}
