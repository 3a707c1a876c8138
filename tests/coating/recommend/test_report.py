"""``coating recommend``'s output folder: quoted CSV, refused duplicates and colliding report
names, all-or-nothing replacement of OUT, and no non-finite plan ever written."""
import csv

import numpy as np
import pytest

from coating.cli import main as cli
from coating.line import plant, schema
from coating.models import fit_cycles
from coating.recommend import optimise_settings, plan, report

P = plant.PlantParams()


@pytest.fixture(scope="module")
def files(tmp_path_factory, operator_runs):
    """A one-cycle history, its standard and a small grey-box registry (fitted once)."""
    d = tmp_path_factory.mktemp("rec")
    _, _, runs, std = operator_runs(31, 32, 12, P)
    hist = schema.history_from_measurements(runs)
    schema.write_history(hist, d / "H.csv")
    schema.write_standard(schema.Standard(schema.WAVELENGTHS_NM.astype(float), std[0], std[1]), d / "STD.csv")
    fit_cycles.fit_all(hist, d / "models", kinds=("greybox",), log=lambda s: None,
                       hparams={"greybox": {"epochs": 2, "inner_steps": 8, "width": 0}})
    return d


def recommend_cmd(files, runs_text, out, *extra):
    runs = out.parent / f"{out.name}_runs.csv"
    runs.write_text(runs_text, encoding="utf-8")
    # Nominal design, registry model as it is: the output logic is under test, not the optimiser.
    return cli.main(["recommend", "--history", str(files / "H.csv"), "--runs", str(runs), "--standard",
                     str(files / "STD.csv"), "--models", str(files / "models"), "--out", str(out),
                     "--robust", "0", "--no-fine-tune", *extra])


def snapshot(folder):
    return {p.name: (p.read_bytes(), p.stat().st_ino) for p in sorted(folder.iterdir())}


def test_a_furnace_number_with_a_comma_is_quoted(files, tmp_path):
    out = tmp_path / "out"
    assert recommend_cmd(files, 'furnace_no,cycle_id\n"A,1",1\n', out) == 0
    with open(out / "recommendations.csv", newline="") as f:
        rows = list(csv.reader(f))
    assert rows[0] == report.REPORT_COLUMNS and len(rows) == 2
    assert rows[1][0] == "A,1" and len(rows[1]) == len(rows[0]) == 24
    assert np.all(np.isfinite(np.array(rows[1][1:13], dtype=float)))
    # The next run's interval and the gain's (front + back), each median inside its interval.
    nxt = dict(zip(rows[0], rows[1]))
    for lo, mid, hi in (("next_dE00_F_lo", "next_dE00_F", "next_dE00_F_hi"), ("gain_lo", "gain", "gain_hi")):
        assert float(nxt[lo]) <= float(nxt[mid]) <= float(nxt[hi]), (lo, nxt)
    text = (out / "A_1.txt").read_text(encoding="utf-8")
    assert f"gain over the current settings, front + back, on the same draws: dE00 {float(nxt['gain']):+.3f}" in text
    assert (float(nxt["gain_lo"]) <= 0) == ("the predicted gain's 90 % interval reaches zero" in text)
    assert f"worse than keeping the settings: {100 * float(nxt['p_worse']):.0f} %" in text
    assert sorted(p.name for p in out.iterdir()) == ["A_1.txt", "recommendations.csv"]
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")], "temporary folder left beside OUT"


@pytest.mark.parametrize("runs_text, message", [
    ("furnace_no,cycle_id\nA1,1\nA2,1\nA1,1\n", "row 3: column 'furnace_no': duplicate furnace number 'A1' (first at row 1)"),
    ("furnace_no,cycle_id\nA/1,1\nA_1,1\n", "'A/1' and 'A_1' would both be reported in A_1.txt"),
    ("furnace_no,cycle_id\nab,1\nAB,1\n", "'ab' and 'AB' would both be reported in AB.txt"),
])
def test_duplicate_and_colliding_furnace_numbers_are_refused(files, tmp_path, capsys, runs_text, message):
    out = tmp_path / "out"
    assert recommend_cmd(files, "furnace_no,cycle_id\nOLD,1\n", out) == 0
    before = snapshot(out)
    capsys.readouterr()
    assert recommend_cmd(files, runs_text, out) == 2
    err = capsys.readouterr().err
    assert message in err and "out_runs.csv" in err, err
    assert snapshot(out) == before, "OUT changed although the command was refused"


def test_one_failing_row_changes_nothing_in_out(files, tmp_path, capsys):
    out = tmp_path / "out"
    assert recommend_cmd(files, "furnace_no,cycle_id\nX1,1\n", out) == 0
    before = snapshot(out)
    # X1 would get a different plan (smaller steps), but X2 asks for a cycle without a model:
    # before the fix X1.txt was replaced while recommendations.csv kept the old settings.
    assert recommend_cmd(files, "furnace_no,cycle_id\nX1,1\nX2,7\n", out, "--max-step-rel", "0.005") == 2
    assert "furnace_no X2: no model for cycle 7" in capsys.readouterr().err
    assert snapshot(out) == before
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")], "temporary folder left beside OUT"
    # The same rows without the failing one replace the folder as a whole (the old report goes).
    assert recommend_cmd(files, "furnace_no,cycle_id\nX3,1\n", out, "--max-step-rel", "0.005") == 0
    assert sorted(p.name for p in out.iterdir()) == ["X3.txt", "recommendations.csv"]


def test_an_out_folder_of_other_files_is_refused_not_emptied(files, tmp_path, capsys):
    out = tmp_path / "mine"
    out.mkdir()
    (out / "notes.docx").write_bytes(b"precious")
    assert recommend_cmd(files, "furnace_no,cycle_id\nX1,1\n", out) == 2
    assert "notes.docx" in capsys.readouterr().err
    assert sorted(p.name for p in out.iterdir()) == ["notes.docx"] and (out / "notes.docx").read_bytes() == b"precious"


def test_a_non_finite_plan_is_an_error_not_a_report(files, tmp_path, capsys, monkeypatch):
    import dataclasses
    real = plan._plan_job

    def nan_plan(*a, **k):
        p = real(*a, **k)
        rec = p.rec
        return dataclasses.replace(p, rec=optimise_settings.Recommendation(
            rec.settings * np.nan, rec.current, rec.change * np.nan, rec.dE00 * 0, rec.dE00_current, rec.rms_R, rec.loss))
    monkeypatch.setattr(plan, "_plan_job", nan_plan)
    out = tmp_path / "out"
    assert recommend_cmd(files, "furnace_no,cycle_id\nN1,1\n", out) == 2
    err = capsys.readouterr().err
    assert "furnace_no N1: the settings came out non-finite" in err, err
    assert not out.exists()


_REAL_PLAN_JOB = plan._plan_job


def _fail_on_x2(model, row, *a):
    """A row that fails inside a worker (module level, so a worker process can run it)."""
    if row.furnace_no == "X2":
        raise ValueError("furnace_no X2: failed in a worker")
    return _REAL_PLAN_JOB(model, row, *a)


@pytest.mark.parametrize("parallel", ["processes", "threads"])
def test_a_row_failing_in_a_worker_leaves_the_good_output(files, tmp_path, capsys, monkeypatch, parallel):
    out = tmp_path / "out"
    assert recommend_cmd(files, "furnace_no,cycle_id\nX1,1\n", out) == 0
    before = snapshot(out)
    monkeypatch.setattr(plan, "_plan_job", _fail_on_x2)
    rc = recommend_cmd(files, "furnace_no,cycle_id,run_in_cycle\nX1,1,13\nX2,1,14\nX3,1,15\n", out,
                       "--threads", "2", "--parallel", parallel)
    assert rc == 2 and "furnace_no X2: failed in a worker" in capsys.readouterr().err
    assert snapshot(out) == before
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")], "temporary folder left beside OUT"
