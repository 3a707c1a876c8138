"""sevi.io.write_behind: writes in order, one at a time, errors raised in the caller, never lost."""

import threading
import time

import pytest

from sevi.io.write_behind import WriteBehind


def test_writes_run_in_order_on_one_other_thread_one_at_a_time():
    done, threads, running = [], set(), []

    def write(i):
        running.append(i)
        assert len(running) == 1, "two writes at once"
        time.sleep(0.01)
        threads.add(threading.get_ident())
        done.append(i)
        running.remove(i)

    with WriteBehind() as w:
        for i in range(6):
            w.submit(write, i)
    assert done == list(range(6))
    assert threads and threading.get_ident() not in threads


def test_submit_overlaps_the_callers_work():
    with WriteBehind() as w:
        t0 = time.perf_counter()
        w.submit(time.sleep, 0.3)
        returned = time.perf_counter() - t0
    assert returned < 0.2 and time.perf_counter() - t0 >= 0.3


def test_a_writes_error_is_raised_at_the_next_submit():
    calls = []
    with pytest.raises(OSError, match="disk full"), WriteBehind() as w:
        w.submit(_fail, "disk full")
        w.submit(calls.append, 1)
    assert calls == []  # nothing after a failed write


def test_a_writes_error_is_raised_when_the_block_ends():
    with pytest.raises(OSError, match="late"), WriteBehind() as w:
        w.submit(_fail, "late")


def test_a_failing_block_waits_for_the_pending_write_and_keeps_its_own_error():
    finished = []

    def slow():
        time.sleep(0.2)
        finished.append(True)
        raise OSError("secondary")

    with pytest.raises(KeyError), WriteBehind() as w:
        w.submit(slow)
        raise KeyError("first")
    assert finished == [True]


def test_submit_outside_the_block_is_refused():
    with pytest.raises(RuntimeError):
        WriteBehind().submit(print)


def _fail(msg):
    raise OSError(msg)
