"""The thread policy: the budget from the affinity mask, --threads and OMP_NUM_THREADS; one intra-op
thread for small work; the wait policy set before torch loads."""
import json
import os
import shutil
import subprocess
import sys
import warnings

import pytest

from sevi.runtime.errors import InputError, InputWarning
from sevi.runtime.threads import _cgroup_quota_cores, thread_policy, usable_cores


def test_small_work_gets_one_intra_op_thread_and_workers_up_to_the_budget():
    p = thread_policy(None, "small", items=10, cores=4, env={})
    assert (p.budget, p.source, p.intra_op, p.workers) == (4, "cores", 1, 4)
    assert thread_policy(None, "small", items=3, cores=4, env={}).workers == 3   # no more than the work
    assert thread_policy(2, "small", items=10, cores=4, env={}).workers == 2
    assert thread_policy(None, "small", items=None, cores=2, env={}).workers == 2


def test_large_work_gets_the_budget_as_intra_op_threads():
    p = thread_policy(None, "large", cores=4, env={})
    assert (p.intra_op, p.workers) == (4, 1)
    assert thread_policy(3, "large", cores=4, env={}).intra_op == 3


def test_omp_num_threads_is_the_budget_when_no_option_is_given():
    p = thread_policy(None, "large", cores=4, env={"OMP_NUM_THREADS": "1"})
    assert (p.budget, p.source, p.intra_op) == (1, "OMP_NUM_THREADS", 1)
    assert thread_policy(None, "large", cores=4, env={"OMP_NUM_THREADS": "x"}).budget == 4  # unreadable: ignored
    assert thread_policy(3, "large", cores=4, env={"OMP_NUM_THREADS": "1"}).budget == 3     # the option wins


def test_more_threads_than_cores_is_capped_with_one_warning():
    with warnings.catch_warnings(record=True) as w:
        warnings.simplefilter("always")
        p = thread_policy(8, "large", cores=2, env={})
    assert p.budget == 2 and p.intra_op == 2
    assert len(w) == 1 and issubclass(w[0].category, InputWarning) and "--threads 8" in str(w[0].message)


@pytest.mark.parametrize("bad", [0, -1, True, 1.5])
def test_bad_thread_counts_are_refused_naming_the_option(bad):
    with pytest.raises(InputError, match=r"--threads .*: expected a number of threads >= 1"):
        thread_policy(bad, "small", cores=2, env={})
    with pytest.raises(ValueError, match="work"):
        thread_policy(None, "medium", cores=2, env={})


def test_usable_cores_follow_the_affinity_mask():
    assert usable_cores() == min(len(os.sched_getaffinity(0)), _cgroup_quota_cores() or 10**6)
    if shutil.which("taskset") is None:
        pytest.skip("taskset not installed")
    out = subprocess.run(["taskset", "-c", "0", sys.executable, "-c",
                          "from sevi.runtime.threads import usable_cores; print(usable_cores())"],
                         capture_output=True, text=True, check=True).stdout
    assert out.strip() == "1"


def test_cgroup_quota(tmp_path):
    f = tmp_path / "cpu.max"
    f.write_text("150000 100000\n")
    assert _cgroup_quota_cores(str(f)) == 2
    f.write_text("max 100000\n")
    assert _cgroup_quota_cores(str(f)) is None
    assert _cgroup_quota_cores(str(tmp_path / "none")) is None


_PROBE = """
import json, os, sys
if sys.argv[1] == "torch-first":
    import torch
from sevi.runtime.threads import apply_thread_policy
p = apply_thread_policy(None, sys.argv[2])
import torch
print(json.dumps({"threads": torch.get_num_threads(), "intra": p.intra_op, "wait": os.environ.get("OMP_WAIT_POLICY"),
                  "applied": p.wait_policy_applied}))
"""


@pytest.mark.parametrize("order,work", [("policy-first", "small"), ("policy-first", "large"), ("torch-first", "small")])
def test_apply_sets_torch_threads_and_the_wait_policy_before_torch_loads(order, work):
    env = {k: v for k, v in os.environ.items() if k not in ("OMP_NUM_THREADS", "OMP_WAIT_POLICY")}
    out = json.loads(subprocess.run([sys.executable, "-c", _PROBE, order, work], env=env, capture_output=True,
                                    text=True, check=True).stdout)
    assert out["threads"] == out["intra"] == (1 if work == "small" else usable_cores())
    assert out["wait"] == "PASSIVE" and out["applied"] == (order == "policy-first")
    env["OMP_WAIT_POLICY"] = "ACTIVE"   # the user's choice is kept
    out = json.loads(subprocess.run([sys.executable, "-c", _PROBE, order, work], env=env, capture_output=True,
                                    text=True, check=True).stdout)
    assert out["wait"] == "ACTIVE"
