"""sevi.cli.policy: one error policy for every command (sevi, coating, the Ray entry points)."""
import errno
import sys
import warnings

import pytest

from sevi.cli.policy import EXIT_INTERRUPTED, EXIT_USAGE, error_line, run_command
from sevi.runtime.errors import InputError, InputWarning


def _signal_self(sig, wait_s: float = 5.0):
    """Send ``sig`` to this process, as a terminal or ``kill`` does, and give the handler time to run.

    A process-directed signal may be taken by any thread that does not block it (torch's, h5py's,
    a Ray client's): Python then runs its handler in the main thread at the next check, which may
    come a few bytecodes later. In CI the test's next line ran first (an AssertionError), once."""
    import os
    import time

    os.kill(os.getpid(), sig)
    for _ in range(int(wait_s / 0.01)):  # the handler raises out of sleep
        time.sleep(0.01)


@pytest.fixture(autouse=True, scope="module")
def _no_ray_in_this_process():
    """These tests send real signals to the pytest process. A Ray instance an earlier test left
    running in it (its SIGTERM handler, its core-worker threads) turned them into a failed assertion
    and a SIGABRT of the whole run, so it is shut down first."""
    ray = sys.modules.get("ray")
    if ray is not None and ray.is_initialized():
        ray.shutdown()
    if ray is not None:
        import signal

        signal.signal(signal.SIGTERM, signal.SIG_DFL)  # ray.init's C handler aborts the process after a SIGTERM
    yield


def test_an_input_error_is_one_line_and_exit_2(capsys):
    def bad():
        raise InputError("data.h5: counts: image 3 is 5 x 4 pixels; expected a square image")
    assert run_command("sevi", "predict", bad) == EXIT_USAGE
    err = capsys.readouterr().err
    assert err == "sevi predict: data.h5: counts: image 3 is 5 x 4 pixels; expected a square image\n"


def test_os_errors_name_the_file(capsys):
    def missing():
        raise FileNotFoundError(errno.ENOENT, "No such file or directory", "x.h5")
    assert run_command("coating", "recommend", missing) == EXIT_USAGE
    assert capsys.readouterr().err == "coating recommend: x.h5: no such file\n"


def test_ctrl_c_is_exit_130_with_what_was_kept(capsys):
    def interrupted():
        raise KeyboardInterrupt("finished chunks kept in E.h5.parts, re-run to resume")
    assert run_command("sevi", "frames", interrupted) == EXIT_INTERRUPTED
    assert capsys.readouterr().err == "sevi frames: interrupted; finished chunks kept in E.h5.parts, re-run to resume\n"

    def plain():
        raise KeyboardInterrupt
    assert run_command("sevi", "predict", plain) == EXIT_INTERRUPTED
    assert capsys.readouterr().err == "sevi predict: interrupted\n"


def test_user_warnings_are_one_line_and_developer_warnings_are_hidden(capsys):
    def warns():
        warnings.warn("frames.h5: FinalImage.ImageId 7 is used by 2 frames", InputWarning)
        warnings.warn("invalid value encountered in power", RuntimeWarning)  # scipy's, meant for developers
        return 0
    assert run_command("sevi", "frames", warns) == 0
    assert capsys.readouterr().err == "sevi frames: warning: frames.h5: FinalImage.ImageId 7 is used by 2 frames\n"
    assert run_command("sevi", "frames", warns, debug=True) == 0
    assert "RuntimeWarning" in capsys.readouterr().err, "--debug shows developer warnings too"


def test_a_defect_keeps_its_traceback():
    import pytest

    def defect():
        raise ZeroDivisionError("a bug")
    with pytest.raises(ZeroDivisionError):
        run_command("sevi", "predict", defect)


def test_error_line_does_not_repeat_the_prefix_and_joins_lines():
    assert error_line("sevi", "predict", "sevi predict: a\nb") == "sevi predict: a; b"
    assert error_line("coating", None, ValueError("bad")) == "coating: bad"


def test_sigterm_and_sighup_end_a_command_as_ctrl_c_does_and_its_temporary_goes(tmp_path, capsys):
    """A signal is turned into KeyboardInterrupt while the command runs, so sevi.io.atomic deletes
    its temporary; the exit status is 128 + the signal, the line names it."""
    import os
    import signal

    from sevi.io.atomic import atomic_path

    # A run under nohup (as CI may be) ignores SIGHUP, and the policy rightly keeps an ignored signal
    # ignored (the test below): this test is of a terminal's dispositions, so it sets them.
    found = {s: signal.signal(s, signal.SIG_DFL) for s in (signal.SIGTERM, signal.SIGHUP)}
    try:
        before = {s: signal.getsignal(s) for s in (signal.SIGTERM, signal.SIGHUP, signal.SIGINT)}
        for sig, code in ((signal.SIGTERM, 143), (signal.SIGHUP, 129), (signal.SIGINT, 130)):
            def killed():
                with atomic_path(tmp_path / "out.h5") as tmp:
                    tmp.write_text("half")
                    _signal_self(sig)
                    raise AssertionError("the signal should have ended the command")
            assert run_command("sevi", "simulate", killed) == code
            name = "" if sig == signal.SIGINT else f" ({sig.name})"
            assert capsys.readouterr().err == f"sevi simulate: interrupted{name}\n"
            assert os.listdir(tmp_path) == [], "temporary left behind"
        assert {s: signal.getsignal(s) for s in before} == before, "the handlers are put back afterwards"
    finally:
        for s, h in found.items():
            signal.signal(s, h)


def test_rays_own_sigterm_handler_exit_is_reported_as_an_interrupt(capsys):
    """ray.init replaces the SIGTERM handler with sys.exit(15)."""
    import signal
    import sys

    def ray_like():
        signal.signal(signal.SIGTERM, lambda s, f: sys.exit(s))
        signal.raise_signal(signal.SIGTERM)
    assert run_command("python -m ray_jobs.sevi_train", None, ray_like) == 143
    assert capsys.readouterr().err == "python -m ray_jobs.sevi_train: interrupted (SIGTERM)\n"


def test_a_full_disk_is_a_failure_exit_1_naming_the_output(tmp_path, capsys):
    from sevi.cli.policy import EXIT_FAILURE
    from sevi.io.atomic import atomic_text

    (tmp_path / "a.txt").write_text("previous")

    def full():
        import builtins
        real = builtins.open

        def fake_open(path, mode="r", *a, **k):
            f = real(path, mode, *a, **k)
            if "w" in mode:
                def write(data):
                    raise OSError(errno.ENOSPC, "No space left on device")
                f.write = write
            return f
        builtins.open = fake_open
        try:
            atomic_text(tmp_path / "a.txt", "new")
        finally:
            builtins.open = real
    assert run_command("coating", "spectrum", full) == EXIT_FAILURE
    assert capsys.readouterr().err == (f"coating spectrum: {tmp_path / 'a.txt'}: cannot write: No space left on "
                                       f"device (ENOSPC); the temporary file was removed and the previous a.txt is "
                                       f"untouched\n")
    assert (tmp_path / "a.txt").read_text() == "previous" and len(list(tmp_path.iterdir())) == 1

    def library_write():  # a write that does not go through sevi.io.atomic (TensorBoard, Ray's files)
        raise OSError(errno.ENOSPC, "No space left on device", "runs/events.out")
    assert run_command("sevi", "train", library_write) == EXIT_FAILURE
    assert capsys.readouterr().err.startswith("sevi train: runs/events.out: cannot write: No space left on device")


def test_check_outputs_cleans_up_after_a_killed_run_in_one_warning_line(tmp_path, capsys):
    import subprocess
    import sys

    from sevi.io.atomic import _host
    from sevi.io.paths import check_outputs

    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True,
                          text=True).stdout.strip()
    stale = tmp_path / f".out.h5.{dead}@{_host()}.abcd1234.tmp"
    stale.write_text("left by kill -9")
    assert run_command("sevi", "simulate", lambda: check_outputs({"--out": tmp_path / "out.h5"})) == 0
    assert capsys.readouterr().err == (f"sevi simulate: warning: {tmp_path / 'out.h5'}: cleaned up after a killed "
                                       f"run (removed {stale.name})\n")
    assert not stale.exists()


def test_handlers_a_library_replaced_are_put_back(capsys):
    """ray.init puts sys.exit(15) on SIGTERM; the Ray entry points put the command's handler back."""
    import os
    import signal
    import sys

    from sevi.cli.policy import reinstall_signal_handlers

    before = signal.getsignal(signal.SIGTERM)

    def ray_like_then_reinstalled():
        signal.signal(signal.SIGTERM, lambda s, f: sys.exit(s))
        reinstall_signal_handlers()
        _signal_self(signal.SIGTERM)
        raise AssertionError("the signal should have ended the command")
    assert run_command("coating_tune", None, ray_like_then_reinstalled) == 143
    assert capsys.readouterr().err == "coating_tune: interrupted (SIGTERM)\n"
    reinstall_signal_handlers()  # outside a command: nothing to put back
    assert signal.getsignal(signal.SIGTERM) is before


def test_a_handler_left_before_the_command_does_not_decide_how_it_ends(capsys):
    """ray.init's sys.exit(15) on SIGTERM outlives ray.shutdown, and Ray Train's and Tune's SIGINT
    handlers outlive their runs: a later command in the same process still ends by the policy,
    and the handlers found are put back after it. An ignored signal (nohup's SIGHUP) stays ignored."""
    import os
    import signal
    import sys

    left = lambda s, f: sys.exit(s)  # noqa: E731
    old = {s: signal.signal(s, h) for s, h in ((signal.SIGTERM, left), (signal.SIGINT, left),
                                              (signal.SIGHUP, signal.SIG_IGN))}
    try:
        for sig, code in ((signal.SIGTERM, 143), (signal.SIGINT, 130)):
            def killed():
                _signal_self(sig)
                raise AssertionError("the signal should have ended the command")
            assert run_command("sevi", "simulate", killed) == code
            assert capsys.readouterr().err.startswith("sevi simulate: interrupted")
            assert signal.getsignal(sig) is left

        def hup():
            _signal_self(signal.SIGHUP, wait_s=0.2)  # ignored: the wait runs out
            return 0
        assert run_command("sevi", "simulate", hup) == 0
        assert signal.getsignal(signal.SIGHUP) is signal.SIG_IGN
    finally:
        for s, h in old.items():
            signal.signal(s, h)


@pytest.mark.parametrize("exiting", [True, False])
def test_a_signal_after_the_command_has_ended(tmp_path, exiting):
    """A process entry point (``exiting``): Ctrl-C or SIGTERM that come after the command's work and
    line, while the interpreter exits, are ignored: exit status 0, no traceback. In-process callers get
    their own handlers back (then the late Ctrl-C is theirs: a KeyboardInterrupt)."""
    import subprocess
    import sys

    script = tmp_path / "late.py"
    script.write_text(
        "import os, signal, sys, time\n"
        "from sevi.cli.policy import run_command\n"
        f"code = run_command('prog', 'cmd', lambda: print('done'), exiting={exiting})\n"
        "os.kill(os.getpid(), signal.SIGINT)\n"
        "os.kill(os.getpid(), signal.SIGTERM)\n"
        "time.sleep(0.2)\n"
        "sys.exit(code)\n")
    r = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=60)
    assert r.stdout.strip() == "done"
    if exiting:
        assert r.returncode == 0 and "Traceback" not in r.stderr, (r.returncode, r.stderr)
    else:
        assert r.returncode != 0 and "KeyboardInterrupt" in r.stderr
