import numpy as np
import pytest
from numpy.testing import assert_allclose

from coating.line import schema
from coating.line.schema import COLUMNS, read_history, read_standard, write_history


def _history(n=5):
    rng = np.random.default_rng(0)
    return schema.History(
        furnace_no=np.array([f"FN{i:04d}" for i in range(n)], dtype=object),
        cycle_id=np.array([1] * (n - 2) + [2] * 2), run_in_cycle=np.array(list(range(1, n - 1)) + [1, 2]),
        date=np.array([f"2024-01-{i + 1:02d}T06:00:00" for i in range(n)], dtype=object),
        settings=25 + rng.random((n, 10)), std=rng.random((n, 14)),
        R_F=1 + rng.random((n, 81)), R_B=1 + rng.random((n, 81)),
        lab_F=np.tile([8.7, -3.5, -18.0], (n, 1)), lab_B=np.tile([8.9, -3.0, -17.0], (n, 1)))


def _csv(tmp_path, edit=None, name="h.csv"):
    p = tmp_path / name
    write_history(_history(), p)
    if edit:
        lines = p.read_text().splitlines()
        header, rows = lines[0].split(","), [r.split(",") for r in lines[1:]]
        header, rows = edit(header, rows)
        p.write_text("\n".join(",".join(r) for r in [header, *rows]) + "\n")
    return p


@pytest.mark.parametrize("suffix", [".csv", ".h5"])
def test_round_trip(tmp_path, suffix):
    h = _history()
    p = tmp_path / f"h{suffix}"
    write_history(h, p)
    g = read_history(p)
    for c in COLUMNS:
        a, b = h.columns()[c], g.columns()[c]
        if a.dtype == object:
            assert list(a) == list(b), c
        else:
            assert_allclose(b, a, rtol=0, atol=0, err_msg=c)
    assert not list(tmp_path.glob(".*tmp")), "temporary file left behind"


def _set(col, row, value):
    def edit(header, rows):
        rows[row][header.index(col)] = value
        return header, rows
    return edit


CASES = [
    ("missing column", lambda h, r: ([c for c in h if c != "std_B7"], [x[:h.index("std_B7")] + x[h.index("std_B7") + 1:] for x in r]),
     r"missing column\(s\): \['std_B7'\]"),
    ("extra column", lambda h, r: (h + ["operator"], [x + ["bob"] for x in r]), r"unexpected column\(s\): \['operator'\]"),
    ("NaN", _set("R_F_550", 2, "nan"), r"column 'R_F_550', row 3 \(furnace_no FN0002\): missing value"),
    ("empty cell", _set("L_B", 1, ""), r"column 'L_B', row 2 .*expected a number"),
    ("negative thickness", _set("set_F2", 0, "-12.4"), r"column 'set_F2', row 1 .*> 0 and <= 500"),
    ("absurd thickness", _set("set_B4", 4, "10420"), r"column 'set_B4', row 5 .*<= 500, got 10420"),
    ("negative std", _set("std_F3", 3, "-0.1"), r"column 'std_F3', row 4 .*non-negative"),
    ("duplicate furnace", _set("furnace_no", 3, "FN0001"), r"row 4: duplicate furnace number 'FN0001' \(first at row 2\)"),
    ("date order", _set("date", 2, "2023-12-31T00:00:00"), r"column 'date', row 3 .*out of date order"),
    ("bad date", _set("date", 1, "01/02/2024"), r"column 'date', row 2 .*ISO 8601.*'01/02/2024'"),
    ("non-integer cycle", _set("cycle_id", 0, "1.5"), r"column 'cycle_id', row 1 .*an integer"),
    ("cycle 0", _set("cycle_id", 0, "0"), r"column 'cycle_id', row 1 .*an integer >= 1"),
    ("reflectance over 100", _set("R_B_700", 0, "140"), r"column 'R_B_700', row 1 .*percent"),
    ("wavelength grid", lambda h, r: ([c.replace("R_F_780", "R_F_790") for c in h], r),
     r"wavelength grid of R_F_\* columns does not match: expected 380..780 nm in 5 nm steps"),
    ("L out of range", _set("L_F", 0, "130"), r"column 'L_F', row 1 .*0..100"),
    ("ragged row", lambda h, r: (h, [r[0][:-1], *r[1:]]), r"row 1: expected 196 comma-separated fields \(as in the header\), got 195"),
]


@pytest.mark.parametrize("label,edit,message", CASES, ids=[c[0] for c in CASES])
def test_bad_input_is_rejected_with_a_clear_message(tmp_path, label, edit, message):
    p = _csv(tmp_path, edit)
    with pytest.raises(ValueError, match=message) as e:
        read_history(p)
    assert str(p) in str(e.value), "the message names the file"


def test_fractions_instead_of_percent_are_rejected(tmp_path):
    h = _history()
    h = schema.History(**{**h.__dict__, "R_F": h.R_F / 100})
    p = tmp_path / "h.csv"
    write_history(h, p)
    with pytest.raises(ValueError, match="look like fractions; expected percent"):
        read_history(p)


def test_every_problem_is_listed_not_only_the_first(tmp_path):
    p = _csv(tmp_path, lambda h, r: _set("set_F1", 0, "-1")(*_set("std_F1", 2, "nan")(h, r)))
    with pytest.raises(ValueError, match=r"2 problem\(s\)") as e:
        read_history(p)
    assert "set_F1" in str(e.value) and "std_F1" in str(e.value)


def test_hdf5_missing_dataset_is_named(tmp_path):
    import h5py
    p = tmp_path / "h.h5"
    write_history(_history(), p)
    with h5py.File(p, "a") as f:
        del f["runs/R_B_380"]
    with pytest.raises(ValueError, match="R_B_"):
        read_history(p)


@pytest.mark.parametrize("column", ["set_F3", "R_F_500", "furnace_no"])
def test_hdf5_columns_of_different_lengths_are_named(tmp_path, column):
    # A short column used to leave NaN rows unflagged (and a NaN recommendation downstream).
    import h5py
    p = tmp_path / "h.h5"
    write_history(_history(), p)
    with h5py.File(p, "a") as f:
        v = f["runs"][column][()]
        dtype = f["runs"][column].dtype
        del f["runs"][column]
        f["runs"].create_dataset(column, data=v[:-2], dtype=dtype)
    before = p.read_bytes()
    with pytest.raises(ValueError, match="columns differ in length") as e:
        read_history(p)
    assert str(p) in str(e.value) and ("'furnace_no' has 3" in str(e.value) if column == "furnace_no"
                                       else f"{column!r} has 3" in str(e.value)), str(e.value)
    assert p.read_bytes() == before


def test_hdf5_column_that_is_not_1d_is_named(tmp_path):
    import h5py
    p = tmp_path / "h.h5"
    write_history(_history(), p)
    with h5py.File(p, "a") as f:
        del f["runs/std_B7"]
        f["runs"].create_dataset("std_B7", data=np.zeros((5, 2)))
    with pytest.raises(ValueError, match=r"/runs/std_B7: expected a 1-D dataset .* shape \(5, 2\)"):
        read_history(p)


def test_cycles_derived_from_a_cleaning_log(tmp_path):
    def drop(header, rows):
        keep = [i for i, c in enumerate(header) if c not in ("cycle_id", "run_in_cycle")]
        return [header[i] for i in keep], [[r[i] for i in keep] for r in rows]
    p = _csv(tmp_path, drop)
    log = tmp_path / "cleanings.csv"
    log.write_text("cleaning_date\n2024-01-02T12:00:00\n2024-01-04\n")
    h = read_history(p, cleaning_log=log)
    assert h.cycle_id.tolist() == [1, 1, 2, 3, 3] and h.run_in_cycle.tolist() == [1, 2, 1, 1, 2]
    with pytest.raises(ValueError, match="missing column.*cycle_id"):
        read_history(p)


def test_standard_file(tmp_path):
    wl = schema.WAVELENGTHS_NM.astype(float)
    p = tmp_path / "std.csv"
    schema.write_standard(schema.Standard(wl, np.full(81, 1.0), np.full(81, 1.2)), p)
    s = read_standard(p)
    assert_allclose(s.R_B, 1.2)
    p.write_text("wavelength,R_F,R_B\n" + "".join(f"{w},1,1\n" for w in range(400, 701, 10)))
    with pytest.raises(ValueError, match="grid does not match"):
        read_standard(p)
    p.write_text("wavelength,R_F\n380,1\n")
    with pytest.raises(ValueError, match=r"expected columns \['wavelength', 'R_F', 'R_B'\]"):
        read_standard(p)


def test_unknown_format_and_missing_file(tmp_path):
    with pytest.raises(ValueError, match="unknown history format"):
        write_history(_history(), tmp_path / "h.xlsx")
    with pytest.raises(ValueError, match="no such file"):
        read_history(tmp_path / "nope.csv")


def test_atomic_writers_replace_whole_or_not_at_all(tmp_path):
    from sevi.io.atomic import atomic_bytes, atomic_text
    target = tmp_path / "r.csv"
    atomic_text(target, "a,b\n")
    atomic_bytes(target, b"c,d\n", fsync=True)
    assert target.read_text() == "c,d\n"
    import pytest
    with pytest.raises(TypeError):
        atomic_bytes(target, "not bytes")            # fails inside the write
    assert target.read_text() == "c,d\n" and len(list(tmp_path.iterdir())) == 1
