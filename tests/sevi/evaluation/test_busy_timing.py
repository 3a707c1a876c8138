"""Timing a command beside busy processes: the busy processes run and are gone afterwards; a
command's wall and CPU time and the load are reported; a command past its timeout is killed."""
import os
import sys

from sevi.evaluation.busy_timing import busy, time_command


def _alive(pid):
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def test_busy_processes_run_during_the_block_and_are_gone_after():
    with busy(1) as pids:
        assert len(pids) == 1 and _alive(pids[0])
        r = time_command([sys.executable, "-c", "import time; t = time.process_time()\nwhile time.process_time() - t < 0.3: pass"])
    assert not _alive(pids[0])
    assert r["rc"] == 0 and not r["timed_out"]
    assert 0.25 <= r["cpu_s"] <= r["wall_s"] + 0.5      # the command's own CPU, not the busy loop's
    assert r["load_before"] >= 0 and r["load_during_max"] >= r["load_during_mean"] >= 0


def test_a_command_past_its_timeout_is_killed():
    r = time_command([sys.executable, "-c", "import time; time.sleep(30)"], timeout=1.0)
    assert r["timed_out"] and r["rc"] is None and r["wall_s"] < 10
