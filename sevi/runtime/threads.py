"""The project's one thread policy: how many CPU threads a command, a job or a worker uses.

Measured on the project's 2-core box (BENCHMARKS.md, "Busy machine"): torch's default of one
intra-op thread per core, with OpenMP threads that spin while they wait, made a small problem (a
grey-box refit: tensors of a few thousand elements) 5-12x slower beside two other CPU-bound
processes, because every small op waits at a barrier for a thread the kernel has given to
someone else. So:

* **The budget** is what the process may run on: its CPU affinity (``os.sched_getaffinity``)
  and a cgroup CPU quota where one is set; a user's ``--threads N`` (or ``OMP_NUM_THREADS``,
  which Ray sets for its workers and Tune trials) chooses fewer, never more.
* **Small work** (``work="small"``: per-run models, optimisers, simulators; tensors of 1e3-1e5
  elements) gets **one intra-op thread**; its parallelism is across independent pieces (runs,
  images), in up to ``workers`` processes, never inside one small op.
* **Large work** (``work="large"``: image batches, training) gets the budget as intra-op
  threads, and OpenMP is told not to spin (``OMP_WAIT_POLICY=PASSIVE``, unless the user set
  it): an idle thread sleeps instead of taking a core another process needs. The wait policy
  takes effect only when set before torch is first imported, which is why commands call
  ``apply_thread_policy`` before their heavy imports.

No project environment variable is exported to child processes except the wait policy: a Ray
worker gets its thread count from Ray (``OMP_NUM_THREADS`` = its CPUs) and applies this policy
itself.
"""

from __future__ import annotations

import math
import os
import sys
import warnings
from dataclasses import dataclass

from sevi.runtime.errors import InputError, InputWarning

__all__ = ["WORK_KINDS", "ThreadPolicy", "usable_cores", "thread_policy", "apply_thread_policy"]

WORK_KINDS = ("small", "large")


@dataclass(frozen=True)
class ThreadPolicy:
    """``cores``: CPUs the process may run on; ``budget``: CPUs it will use (``source``: where
    that number came from: ``--threads``, ``OMP_NUM_THREADS`` or ``cores``); ``intra_op``: torch
    threads inside one op; ``workers``: processes for independent pieces side by side;
    ``wait_policy``: OpenMP's (``PASSIVE``: waiting threads sleep) and whether it could still
    take effect (``wait_policy_applied``: False when torch was loaded before the policy)."""
    cores: int
    budget: int
    source: str
    work: str
    intra_op: int
    workers: int
    wait_policy: str | None = None
    wait_policy_applied: bool = False

    def describe(self) -> str:
        return (f"{self.cores} usable core(s), budget {self.budget} ({self.source}), {self.work} work: "
                f"{self.intra_op} intra-op thread(s), up to {self.workers} worker(s)")


def _cgroup_quota_cores(path: str = "/sys/fs/cgroup/cpu.max") -> int | None:
    """CPUs allowed by a cgroup v2 quota (``cpu.max``: ``QUOTA PERIOD`` or ``max PERIOD``)."""
    try:
        with open(path) as f:
            quota, period = f.read().split()[:2]
        if quota == "max":
            return None
        return max(1, math.ceil(int(quota) / int(period)))
    except (OSError, ValueError):
        return None


def usable_cores() -> int:
    """CPUs this process may run on: its affinity mask, capped by a cgroup quota if any."""
    try:
        n = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # not Linux
        n = os.cpu_count() or 1
    quota = _cgroup_quota_cores()
    return max(1, min(n, quota) if quota else n)


def _env_threads(env) -> int | None:
    try:
        v = int(str(env.get("OMP_NUM_THREADS", "")).strip())
    except ValueError:
        return None
    return v if v >= 1 else None


def thread_policy(requested: int | None = None, work: str = "small", items: int | None = None,
                  cores: int | None = None, env=None, option: str = "--threads") -> ThreadPolicy:
    """The policy for ``work`` (``"small"`` or ``"large"``) with ``items`` independent pieces
    (None: not known yet; the caller caps its workers later). ``requested``: the user's
    ``option`` value, or None (then ``OMP_NUM_THREADS`` from ``env``, else every usable core).
    Pure: nothing is set (``apply_thread_policy`` sets it)."""
    if work not in WORK_KINDS:
        raise ValueError(f"thread policy: work {work!r}; expected one of {WORK_KINDS}")
    cores = usable_cores() if cores is None else int(cores)
    env = os.environ if env is None else env
    if requested is not None:
        if isinstance(requested, bool) or not isinstance(requested, int) or requested < 1:
            raise InputError(f"{option} {requested}: expected a number of threads >= 1")
        wanted, source = requested, option
    elif _env_threads(env) is not None:
        wanted, source = _env_threads(env), "OMP_NUM_THREADS"
    else:
        wanted, source = cores, "cores"
    budget = max(1, min(wanted, cores))
    if requested is not None and requested > cores:
        warnings.warn(f"{option} {requested}: this process may run on {cores} CPU(s); using {cores}",
                      InputWarning, stacklevel=3)
    n_items = budget if items is None else max(1, int(items))
    if work == "small":
        intra, workers = 1, min(budget, n_items)
    else:
        intra, workers = budget, 1
    return ThreadPolicy(cores, budget, source, work, intra, workers, env.get("OMP_WAIT_POLICY"))


def apply_thread_policy(requested: int | None = None, work: str = "small", items: int | None = None,
                        option: str = "--threads") -> ThreadPolicy:
    """Decide (``thread_policy``) and set: torch's intra-op threads, and OpenMP's wait policy
    (``PASSIVE`` unless the user chose one; effective only if torch is not loaded yet). Call it
    before the command's heavy imports. Returns the policy, with ``wait_policy_applied``."""
    policy = thread_policy(requested, work, items, option=option)
    loaded = "torch" in sys.modules
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")   # also for the processes this one starts
    import torch

    if torch.get_num_threads() != policy.intra_op:
        torch.set_num_threads(policy.intra_op)
    return ThreadPolicy(policy.cores, policy.budget, policy.source, policy.work, policy.intra_op, policy.workers,
                        os.environ["OMP_WAIT_POLICY"], not loaded)
