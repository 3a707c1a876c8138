import os

import h5py
import numpy as np
import pytest

from sevi.io import tables as io


def _truth(n=2, L=12):
    rng = np.random.default_rng(0)
    return io.sim_truth_rows(np.arange(n), rng.uniform(0.3, 0.9, (n, 2)), np.full((n, 2), 0.006),
                             np.full((n, 2), 1000), rng.uniform(0, 0.3, (n, 2, L)))


def test_sim_truth_round_trip(tmp_path):
    rows = _truth(3)
    io.write_tables(tmp_path / "t.h5", {"Truth": rows})
    back = io.read_sim_truth(tmp_path / "t.h5")
    assert back.dtype == io.sim_truth_dtype(12)
    arr = io.truth_to_arrays(back)
    assert arr["beta"].shape == (3, 2, 12) and arr["R"].shape == (3, 2)
    np.testing.assert_array_equal(arr["beta"].reshape(6, 12), rows["beta"])


def test_answer_rows_exact_course_dtype_and_order(tmp_path):
    R = np.array([[0.8, 0.4]])
    beta = np.stack([np.full(12, 0.1), np.full(12, 0.2)])[None]
    rows = io.answer_rows(R, beta)
    assert rows.dtype == np.dtype([("SphereId", "<u1"), ("R", "<f8"), ("beta", "<f8", (12,))])
    assert rows["R"].tolist() == [0.4, 0.8] and rows["beta"][0, 0] == 0.2, "smaller radius first"
    io.write_tables(tmp_path / "a.h5", {"Answer": rows})
    assert io.read_answer(tmp_path / "a.h5").dtype == rows.dtype
    multi = io.answer_rows(np.tile(R, (3, 1)), np.tile(beta, (3, 1, 1)), image_ids=[5, 6, 7])
    assert multi["ImageId"].tolist() == [5, 5, 6, 6, 7, 7]


def _write(tmp_path, name, arr):
    p = tmp_path / "bad.h5"
    with h5py.File(p, "w") as f:
        f.create_dataset(name, data=arr)
    return p


def test_missing_file_and_table(tmp_path):
    with pytest.raises(io.TableError, match="no such file"):
        io.read_sim_truth(tmp_path / "nope.h5")
    p = _write(tmp_path, "Other", np.zeros(3))
    with pytest.raises(io.TableError, match=r"bad.h5: no table 'Truth' \(found: Other\)"):
        io.read_sim_truth(p)


def test_wrong_dtype_names_field(tmp_path):
    rows = _truth()
    dt = [(n, "<f4" if n == "R" else rows.dtype.fields[n][0]) for n in rows.dtype.names]
    p = _write(tmp_path, "Truth", rows.astype(dt))
    with pytest.raises(io.TableError, match=r"field 'Truth.R' has dtype <f4, expected <f8"):
        io.read_sim_truth(p)


def test_missing_field(tmp_path):
    rows = _truth()
    keep = [n for n in rows.dtype.names if n != "n_electrons"]
    p = _write(tmp_path, "Truth", rows[keep].copy())
    with pytest.raises(io.TableError, match="no field 'n_electrons'"):
        io.read_sim_truth(p)


def test_nan_and_range_name_the_row(tmp_path):
    rows = _truth()
    rows["beta"][3, 2] = np.nan
    with pytest.raises(io.TableError, match=r"'Truth.beta' is NaN or infinite in row 3"):
        io.read_sim_truth(_write(tmp_path, "Truth", rows))
    rows = _truth()
    rows["R"][1] = -0.2
    with pytest.raises(io.TableError, match=r"'Truth.R' = -0.2 in row 1 is out of range; expected 0 < R <= 1"):
        io.read_sim_truth(_write(tmp_path, "Truth", rows))


def test_two_rows_per_image(tmp_path):
    rows = _truth(2)[:3]
    with pytest.raises(io.TableError, match="has 1 rows for ImageId 1; expected exactly 2"):
        io.read_sim_truth(_write(tmp_path, "Truth", rows))


def test_streaming_reads_chunks(tmp_path):
    rows = np.zeros(10, io.DETECTED_ELECTRONS_DTYPE)
    rows["ElectronId"] = np.arange(10)
    io.write_tables(tmp_path / "d.h5", {"DetectedElectrons": rows})
    chunks = list(io.iter_rows(tmp_path / "d.h5", "DetectedElectrons", io.DETECTED_ELECTRONS_DTYPE, 4))
    assert [s for s, _ in chunks] == [0, 4, 8] and [len(r) for _, r in chunks] == [4, 4, 2]


def test_not_hdf5_and_atomic_write(tmp_path):
    p = tmp_path / "x.h5"
    p.write_text("not hdf5")
    with pytest.raises(io.TableError, match="not a readable HDF5 file"):
        io.read_answer(p)
    # A failed write leaves neither a partial file nor a temporary one behind.
    with pytest.raises(TypeError):
        io.write_tables(tmp_path / "y.h5", {"A": object()})
    assert sorted(q.name for q in tmp_path.iterdir()) == ["x.h5"]


def test_atomic_path_leaves_the_old_file_on_failure(tmp_path):
    from sevi.io.atomic import atomic_path
    target = tmp_path / "sub" / "out.txt"
    with atomic_path(target) as tmp:
        tmp.write_text("first")
    assert target.read_text() == "first"
    with pytest.raises(RuntimeError):
        with atomic_path(target) as tmp:
            tmp.write_text("half")
            raise RuntimeError("crash mid-write")
    assert target.read_text() == "first"
    assert [p.name for p in target.parent.iterdir()] == ["out.txt"], "no temporary file left behind"


def test_write_json_is_atomic_and_takes_numpy_scalars(tmp_path, monkeypatch):
    import json

    import numpy as np

    from sevi.io import atomic
    path = tmp_path / "out" / "r.json"
    atomic.write_json(path, {"a": np.float32(1.5), "b": [1, 2]})
    assert json.loads(path.read_text()) == {"a": 1.5, "b": [1, 2]}

    def boom(*a, **k):
        raise RuntimeError("disk full")
    monkeypatch.setattr(atomic.json, "dumps", boom)
    with pytest.raises(RuntimeError):
        atomic.write_json(path, {"a": 2})
    assert json.loads(path.read_text())["a"] == 1.5 and len(list(path.parent.iterdir())) == 1


@pytest.mark.parametrize("umask", [0o022, 0o027, 0o077])
def test_atomic_outputs_get_the_users_umask_not_0600(tmp_path, umask):
    from sevi.io import atomic
    old = os.umask(umask)
    try:
        atomic.write_json(tmp_path / "r.json", {"a": 1})
        io.write_tables(tmp_path / "t.h5", {"x": np.zeros(2)})
    finally:
        os.umask(old)
    for name in ("r.json", "t.h5"):
        mode = (tmp_path / name).stat().st_mode & 0o777
        assert mode == 0o666 & ~umask, f"{name}: mode {oct(mode)} under umask {oct(umask)}"
