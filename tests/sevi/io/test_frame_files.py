"""sevi.io.frame_files: the course's FinalImage layout, streaming, clear errors, atomic writes."""
import os

import h5py
import numpy as np
import pytest

from sevi.io.frame_files import (
    EVENT_DTYPE,
    FRAME_DTYPE,
    TRUTH_DTYPE,
    FrameFileError,
    FrameWriter,
    frame_count,
    iter_frame_chunks,
    read_events,
    read_frames,
    read_truth,
    write_events,
    write_frames,
)


def frames(n, seed=0):
    rng = np.random.default_rng(seed)
    return rng.integers(0, 256, size=(n, 1024, 1024), dtype=np.uint8)


def test_round_trip_through_the_course_dtypes(tmp_path):
    p = tmp_path / "f.h5"
    imgs = frames(3)
    ids = np.array([7, 3, 11], np.int32)
    truth = np.zeros(2, TRUTH_DTYPE)
    truth["ImageId"], truth["ElectronId"], truth["x"], truth["z"] = [7, 11], [0, 5], [0.1, -0.2], [0.3, 0.9]
    write_frames(p, ids, imgs, truth)
    with h5py.File(p, "r") as f:
        ds = f["FinalImage"]
        assert ds.dtype == FRAME_DTYPE
        assert ds.dtype["ImageId"] == np.dtype("<i4") and ds.dtype["Image"].base == np.dtype("u1")
        assert ds.dtype["Image"].shape == (1024, 1024)
    got_ids, got = read_frames(p, 0, 3)
    np.testing.assert_array_equal(got_ids, ids)
    np.testing.assert_array_equal(got, imgs)
    np.testing.assert_array_equal(read_truth(p), truth)


def test_streaming_reads_chunks_in_order(tmp_path):
    p = tmp_path / "f.h5"
    imgs = frames(5, seed=1)
    write_frames(p, np.arange(5, dtype=np.int32), imgs)
    assert frame_count(p) == 5
    got = list(iter_frame_chunks(p, 2))
    assert [(a, len(i)) for a, i, _ in got] == [(0, 2), (2, 2), (4, 1)]
    np.testing.assert_array_equal(np.concatenate([im for _, _, im in got]), imgs)


def test_missing_table_and_wrong_dtypes_name_the_file_and_field(tmp_path):
    p = tmp_path / "nothing.h5"
    with h5py.File(p, "w") as f:
        f.create_dataset("Other", data=np.zeros(3))
    with pytest.raises(FrameFileError, match=r"nothing\.h5.*'FinalImage'"):
        frame_count(p)
    p2 = tmp_path / "wrong_id.h5"
    with h5py.File(p2, "w") as f:
        f.create_dataset("FinalImage", shape=(1,), dtype=[("ImageId", "<i8"), ("Image", "u1", (1024, 1024))])
    with pytest.raises(FrameFileError, match=r"wrong_id\.h5.*FinalImage/ImageId.*'<i4'"):
        frame_count(p2)
    p3 = tmp_path / "small.h5"
    with h5py.File(p3, "w") as f:
        f.create_dataset("FinalImage", shape=(1,), dtype=[("ImageId", "<i4"), ("Image", "u1", (64, 64))])
    with pytest.raises(FrameFileError, match=r"small\.h5.*FinalImage/Image.*\(64, 64\)"):
        frame_count(p3)
    with pytest.raises(FrameFileError, match="no such file"):
        frame_count(tmp_path / "absent.h5")


def test_truncated_file_stops_with_a_clear_message(tmp_path):
    p = tmp_path / "cut.h5"
    write_frames(p, np.arange(3, dtype=np.int32), frames(3))
    size = os.path.getsize(p)
    with open(p, "r+b") as f:
        f.truncate(size // 2)
    with pytest.raises(FrameFileError, match=r"cut\.h5.*truncated or corrupt"):
        frame_count(p)


def test_a_damaged_frame_is_reported_not_read_as_noise(tmp_path):
    p = tmp_path / "bad.h5"
    write_frames(p, np.arange(3, dtype=np.int32), frames(3))
    with h5py.File(p, "r") as f:
        off = f["FinalImage"].id.get_chunk_info(1).byte_offset
    with open(p, "r+b") as f:
        f.seek(off + 1000)
        f.write(b"\xff" * 64)
    read_frames(p, 0, 1)                               # frame 0 is intact
    with pytest.raises(FrameFileError, match=r"bad\.h5: frames 1\.\.1 .*truncated or corrupt"):
        read_frames(p, 1, 2)


def test_failed_write_leaves_no_file(tmp_path):
    p = tmp_path / "half.h5"
    with pytest.raises(RuntimeError):
        with FrameWriter(p) as w:
            w.append(np.zeros(1, np.int32), frames(1))
            raise RuntimeError("simulated crash")
    assert not p.exists() and list(tmp_path.iterdir()) == [], "no partial or temporary file may remain"


def test_events_file_round_trip_and_accumulated_image(tmp_path):
    p = tmp_path / "ev.h5"
    x = np.array([-0.999, 0.0, 0.5, 0.5]); z = np.array([0.0, 0.0, -0.25, -0.25])
    write_events(p, np.array([1, 1, 2, 3]), x, z, grid=4, n_frames=3)
    rows, img = read_events(p)
    assert rows.dtype == EVENT_DTYPE
    np.testing.assert_array_equal(rows["x"], x)
    expected = np.zeros((4, 4), np.int64)
    expected[0, 2] += 1; expected[2, 2] += 1; expected[3, 1] += 2
    np.testing.assert_array_equal(img, expected, err_msg="bins of histogram2d, axis 0 = x")
