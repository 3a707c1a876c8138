"""sevi.cli.policy: one error policy for every command (sevi, coating, the Ray entry points)."""
import errno
import warnings

from sevi.cli.policy import EXIT_INTERRUPTED, EXIT_USAGE, error_line, run_command
from sevi.runtime.errors import InputError, InputWarning


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
