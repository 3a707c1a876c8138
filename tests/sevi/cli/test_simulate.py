import h5py
import numpy as np
import pytest

from sevi.cli.main import main
from sevi.io import tables as io


def test_random_then_truth_reproduces(tmp_path):
    a, b = tmp_path / "a.h5", tmp_path / "b.h5"
    assert main(["simulate", "--random", "3", "--out", str(a), "--grid", "64", "--electrons", "5000",
                 "--seed", "2", "--device", "cpu", "--batch", "2"]) == 0
    with h5py.File(a) as f:
        counts, ids = f["counts"][:], f["image_id"][:]
        assert counts.shape == (3, 64, 64) and ids.tolist() == [0, 1, 2]
        assert (counts.sum((1, 2)) + f["out_of_view"][:] == 10_000).all()
    io.read_sim_truth(a)  # the written Truth validates
    assert main(["simulate", "--truth", str(a), "--out", str(b), "--grid", "64", "--seed", "2",
                 "--device", "cpu", "--batch", "2"]) == 0
    with h5py.File(b) as f:
        np.testing.assert_array_equal(f["counts"][:], counts)


def test_truth_with_negative_density_is_refused(tmp_path, capsys):
    rows = io.sim_truth_rows([0], [[0.4, 0.7]], [[0.005, 0.005]], [[100, 100]], np.zeros((1, 2, 12)))
    rows["beta"][1, 0] = -0.9  # I(1) = 1/2 - 0.9 < 0
    io.write_tables(tmp_path / "t.h5", {"Truth": rows})
    assert main(["simulate", "--truth", str(tmp_path / "t.h5"), "--out", str(tmp_path / "o.h5"), "--device", "cpu"]) == 2
    assert "ImageId 0, SphereId 1" in capsys.readouterr().err
    assert not (tmp_path / "o.h5").exists()


def test_random_images_are_streamed_to_the_file_not_held(tmp_path):
    # The counts of all N images (64 x 256^2 int32 = 16.8 MB) were once held in one numpy array
    # before writing; streamed, numpy holds at most a batch. tracemalloc sees numpy's memory.
    import tracemalloc

    tracemalloc.start()
    try:
        assert main(["simulate", "--random", "64", "--out", str(tmp_path / "s.h5"), "--grid", "256",
                     "--electrons", "20", "--device", "cpu", "--batch", "4"]) == 0
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 8e6, f"numpy peak {peak / 1e6:.1f} MB for 16.8 MB of images: not streamed"
    with h5py.File(tmp_path / "s.h5") as f:
        assert f["counts"].shape == (64, 256, 256) and (f["counts"][:].sum((1, 2)) + f["out_of_view"][:] == 40).all()


@pytest.mark.parametrize("edit, expected", [
    (lambda r: r[:0], "table 'Truth' has no rows"),
    (lambda r: r.__setitem__("R", [0.4, 1.5]) or r, "'Truth.R' = 1.5 in row 1 is out of range; expected 0 < R <= 1"),
    (lambda r: r.__setitem__("sigma_R", [0.005, 2.0]) or r, "expected 0 <= sigma_R < 1"),
    (lambda r: r.__setitem__("n_electrons", 0) or r, "'Truth.n_electrons' is 0 in both rows of ImageId 0"),
    (lambda r: r.__setitem__("R", [0.4, np.nan]) or r, "'Truth.R' is NaN or infinite in row 1"),
])
def test_bad_truth_tables_are_refused(tmp_path, capsys, edit, expected):
    rows = io.sim_truth_rows([0], [[0.4, 0.7]], [[0.005, 0.005]], [[100, 100]], np.zeros((1, 2, 12)))
    io.write_tables(tmp_path / "t.h5", {"Truth": edit(rows)})
    assert main(["simulate", "--truth", str(tmp_path / "t.h5"), "--out", str(tmp_path / "o.h5"), "--device", "cpu"]) == 2
    err = capsys.readouterr().err
    assert f"{tmp_path / 't.h5'}: " in err and expected in err and len(err.strip().splitlines()) == 1, err
    assert not (tmp_path / "o.h5").exists()


def test_wide_shells_and_odd_grids_are_warned_about(tmp_path, capsys):
    rows = io.sim_truth_rows([0], [[0.4, 0.7]], [[0.005, 0.5]], [[100, 100]], np.zeros((1, 2, 12)))
    io.write_tables(tmp_path / "t.h5", {"Truth": rows})
    assert main(["simulate", "--truth", str(tmp_path / "t.h5"), "--out", str(tmp_path / "o.h5"), "--grid", "33",
                 "--device", "cpu"]) == 0
    err = capsys.readouterr().err
    assert "warning: --grid 33 is odd" in err and "'Truth.sigma_R' = 0.5 in row 1" in err, err


@pytest.mark.parametrize("argv, expected", [
    (["--electrons", "0"], "--electrons: got 0; expected >= 1"),
    (["--device", "tpu"], "--device tpu: not a torch device; expected auto, cpu or cuda[:k]"),
])
def test_bad_options_are_refused(tmp_path, capsys, argv, expected):
    assert main(["simulate", "--random", "1", "--out", str(tmp_path / "o.h5"), "--grid", "32"] + argv) == 2
    assert expected in capsys.readouterr().err
