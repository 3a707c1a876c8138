import h5py
import numpy as np

from sevi import io
from sevi.cli import main


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
