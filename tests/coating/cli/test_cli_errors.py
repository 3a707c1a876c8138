"""Reliability of the ``coating`` CLI on bad input: every case below is a mistake a user makes
(a spreadsheet export in the wrong encoding, a folder for a file, a typo'd material, a file that
is not ours...). Each must end with exit status 2, one line on stderr that names the file or
the flag, no traceback, and every file as it was (nothing written, nothing lost).

The count of cases is the reliability table's "cases tried" for the coating side.
"""
import hashlib
import json
import shutil

import numpy as np
import pytest

from coating.cli import main as cli
from coating.line import plant, schema
from coating.models import fit_cycles, registry
from coating.optics.stacks import INCIDENT_FIRST, RECIPE_FRONT_NM, RECIPE_MATERIALS


@pytest.fixture(scope="module")
def base(tmp_path_factory, operator_runs):
    """Valid inputs of every command: H.csv, H.h5, STD.csv, a grey-box registry, NEW.csv, stack.json."""
    d = tmp_path_factory.mktemp("base")
    _, _, runs, std = operator_runs(41, 42, 10, plant.PlantParams())
    hist = schema.history_from_measurements(runs)
    schema.write_history(hist, d / "H.csv")
    schema.write_history(hist, d / "H.h5")
    schema.write_standard(schema.Standard(schema.WAVELENGTHS_NM.astype(float), std[0], std[1]), d / "STD.csv")
    fit_cycles.fit_all(hist, d / "models", kinds=("greybox",), log=lambda s: None,
                       hparams={"greybox": {"epochs": 1, "inner_steps": 4, "width": 0}})
    (d / "NEW.csv").write_text("furnace_no,cycle_id\nN1,1\n")
    layers = [{"material": RECIPE_MATERIALS[i], "thickness_nm": RECIPE_FRONT_NM[i]} for i in INCIDENT_FIRST]
    (d / "stack.json").write_text(json.dumps({"incident": 1.0, "substrate": "lens", "layers": layers}))
    return d


def _recommend(d, **over):
    a = {"--history": d / "H.csv", "--runs": d / "NEW.csv", "--standard": d / "STD.csv",
         "--models": d / "models", "--out": d / "OUT"}
    a.update({k: d / v if isinstance(v, str) and not v.startswith("-") else v for k, v in over.items()
              if not k.startswith("+")})
    argv = ["recommend"] + [str(x) for kv in a.items() for x in kv] + ["--robust", "0", "--no-fine-tune"]
    return argv + [str(x) for k, v in over.items() if k.startswith("+") for x in v]


def _with_refit(argv):
    return [a for a in argv if a != "--no-fine-tune"]


def _edit_csv(path, fn):
    lines = path.read_text().splitlines()
    path.write_text("\n".join(fn(lines)) + "\n")


def _stack(d, doc=None, raw=None):
    if raw is not None:
        (d / "stack.json").write_bytes(raw)
    else:
        (d / "stack.json").write_text(json.dumps(doc))
    return ["spectrum", "--stack", str(d / "stack.json")]


def _stack_doc(**over):
    layers = [{"material": RECIPE_MATERIALS[i], "thickness_nm": RECIPE_FRONT_NM[i]} for i in INCIDENT_FIRST]
    return {"incident": 1.0, "substrate": "lens", "layers": layers, **over}


def _fake_model_pt(d, data: bytes):
    e = registry.cycle_dir(d / "models", 1, "greybox")
    (e / "model.pt").write_bytes(data)
    meta = json.loads((e / "model.json").read_text())
    meta["model_sha256"] = hashlib.sha256(data).hexdigest()  # passes the pair check: torch.load sees it
    (e / "model.json").write_text(json.dumps(meta))


def _h5_short_column(d):
    import h5py
    with h5py.File(d / "H.h5", "a") as f:
        v = f["runs/set_F2"][()]
        del f["runs/set_F2"]
        f["runs"].create_dataset("set_F2", data=v[:-3])


def _h5_bytes():
    import io

    import h5py
    buf = io.BytesIO()
    with h5py.File(buf, "w") as f:
        f["x"] = np.zeros(3)
    return buf.getvalue()


# (id, setup(d) -> argv, substring the one line must contain)
CASES = [
    # --- the plant history (coating recommend --history) ---
    ("history missing", lambda d: _recommend(d, **{"--history": "nothere.csv"}), "nothere.csv: no such file"),
    ("history is a folder", lambda d: ((d / "hdir.csv").mkdir(), _recommend(d, **{"--history": "hdir.csv"}))[1],
     "hdir.csv: is a folder"),
    ("history latin-1 byte", lambda d: ((d / "H.csv").write_bytes((d / "H.csv").read_bytes().replace(b"FN", b"F\xe9", 1)
                                                                  if b"FN" in (d / "H.csv").read_bytes() else
                                                                  (d / "H.csv").read_bytes()[:-1] + b"\xe9\n"),
                                        _recommend(d))[1], "H.csv: line"),
    ("history semicolons", lambda d: (_edit_csv(d / "H.csv", lambda ls: [x.replace(",", ";") for x in ls]),
                                      _recommend(d))[1], "semicolon-separated"),
    ("history UTF-16", lambda d: ((d / "H.csv").write_bytes((d / "H.csv").read_text().encode("utf-16")),
                                  _recommend(d))[1], "H.csv: UTF-16 text; expected UTF-8"),
    ("history .xlsx", lambda d: (shutil.copy(d / "H.csv", d / "H.xlsx"), _recommend(d, **{"--history": "H.xlsx"}))[1],
     "H.xlsx: unknown history format"),
    ("history HDF5 short column", lambda d: (_h5_short_column(d), _recommend(d, **{"--history": "H.h5"}))[1],
     "'set_F2' has"),
    ("history .h5 that is not HDF5", lambda d: ((d / "H.h5").write_bytes(b"not hdf5 at all" * 10),
                                                _recommend(d, **{"--history": "H.h5"}))[1], "H.h5: not a readable HDF5"),
    ("history cycle_id 0", lambda d: (_edit_csv(d / "H.csv", lambda ls: [ls[0]] + [
        ",".join(x.split(",")[:1] + ["0"] + x.split(",")[2:]) for x in ls[1:]]), _recommend(d))[1],
     "column 'cycle_id'"),
    ("history short row", lambda d: (_edit_csv(d / "H.csv", lambda ls: ls[:2] + [",".join(ls[2].split(",")[:-1])] + ls[3:]),
                                     _recommend(d))[1], "H.csv: row 2: expected"),
    ("history NaN setting", lambda d: (_edit_csv(d / "H.csv", lambda ls: ls[:1] + [
        ",".join(x.split(",")[:4] + ["nan"] + x.split(",")[5:]) for x in ls[1:2]] + ls[2:]), _recommend(d))[1],
     "column 'set_F1', row 1"),
    ("history empty", lambda d: ((d / "H.csv").write_text(""), _recommend(d))[1], "H.csv: empty file"),
    # --- the runs file (NEW.csv) ---
    ("runs missing", lambda d: _recommend(d, **{"--runs": "gone.csv"}), "gone.csv: no such file"),
    ("runs duplicate furnace_no", lambda d: ((d / "NEW.csv").write_text("furnace_no,cycle_id\nA,1\nA,1\n"),
                                             _recommend(d))[1], "duplicate furnace number 'A'"),
    ("runs colliding report names", lambda d: ((d / "NEW.csv").write_text("furnace_no,cycle_id\nA/1,1\nA_1,1\n"),
                                               _recommend(d))[1], "would both be reported in A_1.txt"),
    ("runs semicolons", lambda d: ((d / "NEW.csv").write_text("furnace_no;cycle_id\nA;1\n"), _recommend(d))[1],
     "NEW.csv: line 1: the header is semicolon-separated"),
    ("runs latin-1", lambda d: ((d / "NEW.csv").write_bytes(b"furnace_no,cycle_id\nOK,1\nM\xfcller,1\n"),
                                _recommend(d))[1], "NEW.csv: line 3: byte 0xfc is not UTF-8"),
    ("runs cycle_id 0", lambda d: ((d / "NEW.csv").write_text("furnace_no,cycle_id\nA,0\n"), _recommend(d))[1],
     "column 'cycle_id': expected an integer >= 1"),
    ("runs too many fields", lambda d: ((d / "NEW.csv").write_text("furnace_no,cycle_id\nA,1,3\n"), _recommend(d))[1],
     "NEW.csv: row 1: expected 2 comma-separated fields"),
    ("runs unknown column", lambda d: ((d / "NEW.csv").write_text("furnace_no,cylce_id\nA,1\n"), _recommend(d))[1],
     "unexpected column(s) ['cylce_id']"),
    ("runs cycle without a model", lambda d: ((d / "NEW.csv").write_text("furnace_no,cycle_id\nA,1\nB,4\n"),
                                              _recommend(d))[1], "furnace_no B: no model for cycle 4"),
    # (with the default refit: refused before any fit)
    ("history cycle of one run", lambda d: (_edit_csv(d / "H.csv", lambda ls: ls[:2]), _with_refit(_recommend(d)))[1],
     "H.csv: cycle 1 has 1 run(s) (furnace_no N1); the grey box's refit needs at least 2"),
    ("history shorter than the model's training", lambda d: (_edit_csv(d / "H.csv", lambda ls: ls[:5]),
                                                             _with_refit(_recommend(d)))[1],
     "H.csv: cycle 1 has 4 run(s), fewer than the 8 its model was fitted on"),
    ("--threads 0", lambda d: _recommend(d, **{"+": ["--threads", "0"]}), "--threads 0: expected a number of threads >= 1"),
    # --- the standard ---
    ("standard semicolons", lambda d: (_edit_csv(d / "STD.csv", lambda ls: [x.replace(",", ";") for x in ls]),
                                       _recommend(d))[1], "STD.csv: line 1: the header is semicolon-separated"),
    ("standard short grid", lambda d: (_edit_csv(d / "STD.csv", lambda ls: ls[:-5]), _recommend(d))[1],
     "STD.csv: column 'wavelength': grid does not match"),
    # --- the model registry ---
    ("registry missing", lambda d: _recommend(d, **{"--models": "nomodels"}), "nomodels: no such model registry"),
    ("model.json not JSON", lambda d: ((registry.cycle_dir(d / "models", 1, "greybox") / "model.json").write_text("{oops"),
                                       _recommend(d))[1], "model.json: not JSON"),
    ("model.pt random bytes", lambda d: (_fake_model_pt(d, bytes(range(256)) * 4), _recommend(d))[1],
     "model.pt: not a model file written by coating"),
    ("model.pt an HDF5 file", lambda d: (_fake_model_pt(d, _h5_bytes()), _recommend(d))[1],
     "model.pt: not a model file written by coating"),
    ("model.pt swapped (hash differs)", lambda d: ((registry.cycle_dir(d / "models", 1, "greybox") / "model.pt")
                                                   .write_bytes(b"x"), _recommend(d))[1], "SHA-256 differs"),
    # --- recommend's options and output ---
    ("--robust -3", lambda d: _recommend(d, **{"+": ["--robust", "-3"]}), "--robust -3: expected 0"),
    ("--bound-rel negative", lambda d: _recommend(d, **{"+": ["--bound-rel", "-0.1"]}), "--bound-rel -0.1"),
    ("--max-step-rel NaN", lambda d: _recommend(d, **{"+": ["--max-step-rel", "nan"]}), "--max-step-rel nan"),
    ("out is a file", lambda d: _recommend(d, **{"--out": "H.csv"}), "H.csv: exists and is not a folder"),
    ("out holds other files", lambda d: _recommend(d, **{"--out": "models"}), "which coating recommend did not write"),
    # --- spectrum: the stack file ---
    ("stack missing", lambda d: ["spectrum", "--stack", str(d / "nostack.json")], "nostack.json: no such file"),
    ("stack unknown material", lambda d: _stack(d, _stack_doc(layers=[{"material": "Unobtainium", "thickness_nm": 10}])),
     "stack.json: layers[0]: unknown material 'Unobtainium'"),
    ("stack UTF-16", lambda d: _stack(d, raw=json.dumps(_stack_doc()).encode("utf-16")), "stack.json: UTF-16 text"),
    ("stack latin-1", lambda d: _stack(d, raw=b'{"substrate": "l\xe9ns", "layers": []}'), "stack.json: line 1: byte 0xe9"),
    ("stack not JSON", lambda d: _stack(d, raw=b"layers: [1, 2]"), "stack.json: not valid JSON"),
    ("stack index 0", lambda d: _stack(d, _stack_doc(layers=[{"n": [0, 0], "thickness_nm": 10}])),
     "layers[0]: expected [n, k] with a finite real part n > 0"),
    ("stack index negative", lambda d: _stack(d, _stack_doc(layers=[{"n": [-1.5, 0], "thickness_nm": 10}])),
     "layers[0]: expected [n, k]"),
    ("stack substrate 0", lambda d: _stack(d, _stack_doc(substrate=0)), "field 'substrate': expected a refractive index > 0"),
    ("stack negative thickness", lambda d: _stack(d, _stack_doc(layers=[{"material": "SiO2", "thickness_nm": -5}])),
     "field 'thickness_nm': expected a finite number >= 0"),
    ("spectrum out over its stack", lambda d: _stack(d, _stack_doc()) + ["--out", str(d / "stack.json")],
     "is the input --stack"),
    # --- simulate's outputs ---
    ("simulate --standard-out folder", lambda d: ["simulate", "--cycles", "1", "--seed", "1", "--out", str(d / "H.csv"),
                                                  "--standard-out", str(d / "models")], "models: is a folder"),
    ("simulate --out .xlsx", lambda d: ["simulate", "--cycles", "1", "--seed", "1", "--out", str(d / "H.xlsx")],
     "H.xlsx: expected a .csv, .h5 or .hdf5"),
    ("simulate --out under a file", lambda d: ["simulate", "--cycles", "1", "--seed", "1", "--out",
                                               str(d / "H.csv" / "x.csv")], "H.csv is a file, not a folder"),
    ("simulate --seed -1", lambda d: ["simulate", "--cycles", "1", "--seed", "-1", "--out", str(d / "new.csv")],
     "--seed: got -1; expected a whole number >= 0"),
]


def _snapshot(d):
    return {str(p.relative_to(d)): (p.read_bytes() if p.is_file() else None) for p in sorted(d.rglob("*"))}


@pytest.mark.parametrize("case", CASES, ids=[c[0] for c in CASES])
def test_bad_input_ends_in_one_clear_line(base, tmp_path, capsys, case):
    _, setup, expected = case
    d = tmp_path / "in"
    shutil.copytree(base, d)
    argv = setup(d)
    before = _snapshot(d)
    capsys.readouterr()
    rc = cli.main(argv)
    err = capsys.readouterr().err
    assert rc == 2, f"exit {rc}, stderr {err!r}"
    assert "Traceback" not in err and err.count("\n") == 1, f"not one line: {err!r}"
    assert expected in err, f"{expected!r} not in {err!r}"
    assert _snapshot(d) == before, "a file was written, changed or removed"


def test_debug_shows_the_traceback(base, tmp_path):
    d = tmp_path / "in"
    shutil.copytree(base, d)
    with pytest.raises(ValueError, match="nothere.csv: no such file"):
        cli.main(["--debug"] + _recommend(d, **{"--history": "nothere.csv"}))
    with pytest.raises(ValueError, match="--robust -3"):
        cli.main(_recommend(d, **{"+": ["--robust", "-3", "--debug"]}))


@pytest.mark.parametrize("how", ["bom", "trailing blank lines", "crlf"])
def test_spreadsheet_quirks_are_accepted(base, tmp_path, capsys, how):
    d = tmp_path / "in"
    shutil.copytree(base, d)
    for name in ("H.csv", "NEW.csv", "STD.csv"):
        data = (d / name).read_bytes()
        data = {"bom": b"\xef\xbb\xbf" + data, "trailing blank lines": data + b"\n\n",
                "crlf": data.replace(b"\n", b"\r\n")}[how]
        (d / name).write_bytes(data)
    assert schema.read_history(d / "H.csv").settings.shape == (10, 10)
    assert cli.main(_recommend(d)) == 0, capsys.readouterr().err
    assert (d / "OUT" / "N1.txt").exists()
    raw = json.dumps(_stack_doc()).encode()
    (d / "stack.json").write_bytes(b"\xef\xbb\xbf" + raw if how == "bom" else raw + b"\n\n")
    assert cli.main(["spectrum", "--stack", str(d / "stack.json")]) == 0
