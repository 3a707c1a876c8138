"""tools/fault_cases.py: the faults no in-process test can make (a real Ctrl-C, SIGTERM or SIGHUP
to a running command, a real full disk on a tmpfs, a read-only folder, kill -9 and a run after it,
an input replaced with cp -p) run through the front doors, every one ending clearly.

The bad options and image files of the same tool are tested in process, faster:
tests/sevi/io/test_image_file.py, tests/sevi/cli/test_cli_errors.py, tests/coating/cli/test_cli_errors.py
and the entry points' own tests in tests/ray_jobs/."""

import pytest

from tools import fault_cases

GROUPS = ("Ctrl-C and SIGTERM", "full disk, read-only, other file system", "kill -9, then run again",
          "replaced input")


@pytest.fixture(scope="module")
def inputs(tmp_path_factory):
    f = tmp_path_factory.mktemp("fault_inputs")
    fault_cases.make_inputs(f)
    fault_cases.F_DIGEST.update(fault_cases.digest_tree(f))
    return f


@pytest.mark.parametrize("case", [c for c in fault_cases.cases() if c.group in GROUPS and not c.slow],
                         ids=lambda c: c.name)
def test_every_fault_ends_clearly_and_loses_nothing(case, inputs, tmp_path):
    row = fault_cases.run_case(case, tmp_path, inputs, 0)
    if row["class"] == "skipped":
        pytest.skip(row["detail"])
    assert row["class"] == "clear", row


def test_the_classes_of_what_goes_wrong(tmp_path):
    """The classifier itself: a traceback, a lost input, debris, a silent acceptance, a hang."""
    from pathlib import Path

    case = fault_cases.Case("g", "n", ["x"], words=("x.h5",))
    r = fault_cases.Result(2, "", "sevi simulate: x.h5: bad\n", 0.1)
    r.dir, r.f = Path(tmp_path), Path(tmp_path)
    assert fault_cases.classify(case, r, {}, {}, [])[0] == "clear"
    r.err = "Traceback (most recent call last):\n  File ...\nValueError: x\n"
    assert fault_cases.classify(case, r, {}, {}, [])[0] == "traceback"
    r.err = "sevi simulate: x.h5: bad\n"
    assert fault_cases.classify(case, r, {"d/in.h5": "a"}, {"d/in.h5": "b"}, [])[0] == "lost"
    assert fault_cases.classify(case, r, {}, {}, [".o.h5.1@h.x.tmp"])[0] == "debris"
    r.rc = 0
    assert fault_cases.classify(case, r, {}, {}, [])[0] == "silent wrong"
    r.hung = True
    assert fault_cases.classify(case, r, {}, {}, [])[0] == "hang"
    r.hung, r.rc, r.err = False, 1, "sevi simulate: something\nand more\n"
    assert fault_cases.classify(case, r, {}, {}, [])[0] == "unclear"
