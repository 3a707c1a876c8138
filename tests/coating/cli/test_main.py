import json
import subprocess
import sys

import numpy as np
import pytest
from numpy.testing import assert_allclose

from coating.cli import main as cli
from coating.line import schema
from coating.optics.stacks import INCIDENT_FIRST, RECIPE_FRONT_NM, RECIPE_MATERIALS


def test_simulate_writes_a_valid_history_and_standard(tmp_path, capsys):
    out, std = tmp_path / "history.h5", tmp_path / "std.csv"
    assert cli.main(["simulate", "--cycles", "1", "--seed", "3", "--out", str(out), "--standard-out", str(std)]) == 0
    h = schema.read_history(out)
    assert 60 <= len(h) <= 160 and set(h.cycle_id) == {1}
    s = schema.read_standard(std)
    assert s.R_F.shape == (81,)
    assert "wrote" in capsys.readouterr().out


def test_simulate_csv_is_deterministic(tmp_path):
    a, b = tmp_path / "a.csv", tmp_path / "b.csv"
    cli.main(["simulate", "--cycles", "1", "--seed", "4", "--out", str(a)])
    cli.main(["simulate", "--cycles", "1", "--seed", "4", "--out", str(b)])
    assert a.read_text() == b.read_text()


def test_simulate_refuses_bad_arguments(tmp_path, capsys):
    assert cli.main(["simulate", "--cycles", "1", "--seed", "1", "--out", str(tmp_path / "h.xlsx")]) == 2
    assert "expected a .csv, .h5 or .hdf5" in capsys.readouterr().err
    assert cli.main(["simulate", "--cycles", "0", "--seed", "1", "--out", str(tmp_path / "h.csv")]) == 2


def test_simulate_checks_every_output_before_writing_any(tmp_path, capsys):
    # It used to replace the history, then crash on a --standard-out that is a folder.
    hist, folder = tmp_path / "H.csv", tmp_path / "stddir"
    hist.write_text("precious history\n")
    folder.mkdir()
    blocker = tmp_path / "file"
    blocker.write_text("x")
    for std, message in ((folder, "is a folder; expected a file name"),
                         (hist, "name the same file"),
                         (blocker / "std.csv", "is a file, not a folder")):
        assert cli.main(["simulate", "--cycles", "1", "--seed", "1", "--out", str(hist),
                         "--standard-out", str(std)]) == 2
        err = capsys.readouterr().err
        assert message in err and err.count("\n") == 1, err
        assert hist.read_text() == "precious history\n", "the history was replaced before the check"


def test_spectrum_refuses_to_write_over_its_stack(tmp_path, capsys):
    stack = _default_stack_json(tmp_path / "stack.json")
    before = stack.read_bytes()
    assert cli.main(["spectrum", "--stack", str(stack), "--out", str(tmp_path / "." / "stack.json")]) == 2
    assert "is the input --stack" in capsys.readouterr().err
    assert stack.read_bytes() == before


def _default_stack_json(path):
    layers = [{"material": RECIPE_MATERIALS[i], "thickness_nm": RECIPE_FRONT_NM[i]} for i in INCIDENT_FIRST]
    path.write_text(json.dumps({"incident": 1.0, "substrate": "lens", "layers": layers}))
    return path


def test_spectrum_of_the_default_stack(tmp_path, capsys):
    stack = _default_stack_json(tmp_path / "stack.json")
    out = tmp_path / "R.csv"
    assert cli.main(["spectrum", "--stack", str(stack), "--angle", "8", "--out", str(out)]) == 0
    text = capsys.readouterr().out
    assert "L*=" in text and "a*=" in text and "b*=" in text
    data = np.loadtxt(out, delimiter=",", skiprows=1)
    assert out.read_text().startswith("wavelength,R\n") and data.shape == (81, 2)
    assert data[:, 1].min() < 1.0  # percent


def test_spectrum_with_explicit_indices_matches_tmm(tmp_path):
    tmm = pytest.importorskip("tmm")
    stack = tmp_path / "s.json"
    stack.write_text(json.dumps({"incident": 1.0, "substrate": [1.52, 0.0],
                                 "layers": [{"n": [1.46, 0.0], "thickness_nm": 94},
                                            {"n": [2.05, 0.01], "thickness_nm": 103}]}))
    out = tmp_path / "R.csv"
    cli.main(["spectrum", "--stack", str(stack), "--out", str(out)])
    data = np.loadtxt(out, delimiter=",", skiprows=1)
    ref = [100 * tmm.coh_tmm("s", [1.0, 1.46, 2.05 + 0.01j, 1.52], [np.inf, 94, 103, np.inf], 0, w)["R"]
           for w in data[:, 0]]
    assert_allclose(data[:, 1], ref, atol=1e-10)


@pytest.mark.parametrize("doc,message", [
    ({"substrate": 1.5, "layers": [{"n": [1.4, 0], "thickness_nm": -3}]}, r"layers\[0\]: field 'thickness_nm'"),
    ({"substrate": 1.5, "layers": [{"material": "kryptonite", "thickness_nm": 3}]}, "unknown material 'kryptonite'"),
    ({"substrate": 1.5, "layers": [{"n": [1.4, -0.1], "thickness_nm": 3}]}, "imaginary part must be >= 0"),
    ({"layers": []}, "expected keys"),
    ({"substrate": 1.5, "layers": [{"thickness_nm": 3}]}, r"layers\[0\]: expected"),
])
def test_spectrum_refuses_bad_stacks(tmp_path, capsys, doc, message):
    p = tmp_path / "s.json"
    p.write_text(json.dumps(doc))
    assert cli.main(["spectrum", "--stack", str(p)]) == 2
    import re
    assert re.search(message, capsys.readouterr().err)


def test_help_does_not_import_torch():
    code = ("import sys; from coating.cli import main as cli\n"
            "try:\n    cli.main(['--help'])\nexcept SystemExit:\n    pass\n"
            "assert 'torch' not in sys.modules, 'torch imported by --help'")
    subprocess.run([sys.executable, "-c", code], check=True, capture_output=True)
