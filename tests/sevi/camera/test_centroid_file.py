"""sevi.camera.centroid_file (`sevi frames` in process): streaming, resume, corrupt input, the merge."""
import argparse

import h5py
import numpy as np
import pytest

from sevi.camera import centroid_file
from sevi.cli import frames, simulate_frames
from sevi.cli.policy import run_command
from sevi.io.frame_files import read_events, read_truth


@pytest.fixture(scope="module")
def frame_file(tmp_path_factory):
    """6 simulated frames, ~30 electrons each (small and fast)."""
    p = tmp_path_factory.mktemp("frames") / "f.h5"
    args = argparse.Namespace(out=str(p), frames=6, per_frame=30.0, hits="disc", seed=3, batch=6, device="cpu")
    assert simulate_frames.run(args) == 0
    return p


@pytest.fixture(scope="module")
def reference(frame_file, tmp_path_factory):
    """Events of one uninterrupted in-process run (chunks of 2 frames)."""
    out = tmp_path_factory.mktemp("ref") / "ref.h5"
    assert run_frames(frames_args(frame_file, out)) == 0
    assert not out.with_name("ref.h5.parts").exists(), "parts must be removed after the merge"
    return read_events(out)


def run_frames(args) -> int:
    """`sevi frames` with these options, under the commands' error policy: the exit status."""
    return run_command("sevi", "frames", lambda: frames.run(args))


def frames_args(frames, out, **kw):
    d = dict(frames=str(frames), out=str(out), chunk=2, grid=64, no_ray=True, device="cpu",
             gpus_per_task=0.25, max_in_flight=None, quiet=True)
    d.update(kw)
    return argparse.Namespace(**d)


def test_cli_parsers_wire_both_subcommands():
    ap = argparse.ArgumentParser()
    sub = ap.add_subparsers()
    frames.add_parser(sub)
    simulate_frames.add_parser(sub)
    a = ap.parse_args(["frames", "F.h5", "--out", "E.h5", "--chunk", "8", "--grid", "256", "--no-ray"])
    assert (a.func, a.chunk, a.grid, a.no_ray) == (frames.run, 8, 256, True)
    b = ap.parse_args(["simulate-frames", "F.h5", "--frames", "3", "--hits", "shells"])
    assert b.func is simulate_frames.run and b.frames == 3


def test_events_match_truth(frame_file, reference):
    rows, img = reference
    truth = read_truth(frame_file)
    assert img.shape == (64, 64) and img.sum() == len(rows)
    assert abs(len(rows) - len(truth)) <= 0.05 * len(truth), f"{len(rows)} events for {len(truth)} electrons"
    # At 30 electrons per frame nearly every true electron has an event of its frame within 1.5 px.
    near = [np.hypot(*(rows[rows["ImageId"] == r["ImageId"]][k] - r[k] for k in ("x", "z"))).min() * 512 <= 1.5
            for r in truth]
    assert np.mean(near) >= 0.95, f"only {np.mean(near):.3f} of the electrons found within 1.5 px"


def test_interrupted_run_resumes_without_redoing_finished_chunks(frame_file, reference, tmp_path, monkeypatch):
    out = tmp_path / "ev.h5"
    real = centroid_file.process_chunk
    calls = []

    def dies_on_second(path, a, b, part, *rest):
        calls.append((a, b))
        if len(calls) == 2:
            raise KeyboardInterrupt          # as if the run were killed mid-chunk
        return real(path, a, b, part, *rest)

    monkeypatch.setattr(centroid_file, "process_chunk", dies_on_second)
    assert run_frames(frames_args(frame_file, out)) == 130
    parts = sorted(p.name for p in (tmp_path / "ev.h5.parts").glob("chunk_*.h5"))
    assert parts == ["chunk_000000000_000000002.h5"], parts
    assert not out.exists()

    calls.clear()
    monkeypatch.setattr(centroid_file, "process_chunk",
                        lambda path, a, b, part, *rest: (calls.append((a, b)), real(path, a, b, part, *rest))[1])
    assert run_frames(frames_args(frame_file, out)) == 0
    assert calls == [(2, 4), (4, 6)], f"resume redid or skipped chunks: {calls}"
    np.testing.assert_array_equal(read_events(out)[0], reference[0],
                                  err_msg="a resumed run must give the uninterrupted run's events")


def test_corrupt_chunk_stops_with_a_message_and_keeps_finished_parts(frame_file, tmp_path, capsys):
    bad = tmp_path / "bad.h5"
    bad.write_bytes(frame_file.read_bytes())
    with h5py.File(bad, "r") as f:
        off = f["FinalImage"].id.get_chunk_info(4).byte_offset       # frame 4: third chunk
    with open(bad, "r+b") as f:
        f.seek(off + 4096)
        f.write(b"\x00\x01" * 100)
    out = tmp_path / "ev.h5"
    assert run_frames(frames_args(bad, out)) == 2
    err = capsys.readouterr().err
    assert "bad.h5: frames 4..5" in err and "corrupt" in err, err
    assert "2 of 3 chunks finished and kept" in err, err
    assert len(list((tmp_path / "ev.h5.parts").glob("chunk_*.h5"))) == 2
    assert not out.exists()


def test_truncated_input_is_refused_up_front(frame_file, tmp_path, capsys):
    cut = tmp_path / "cut.h5"
    cut.write_bytes(frame_file.read_bytes()[: frame_file.stat().st_size // 2])
    assert run_frames(frames_args(cut, tmp_path / "ev.h5")) == 2
    assert "cut.h5: not a readable HDF5 file (truncated or corrupt?)" in capsys.readouterr().err


def test_rate_summary_excludes_the_start_up_round():
    from sevi.camera.centroid_file import _rate_summary
    # Two workers: chunks of 64 finish in pairs every 2 s after a 5 s start-up.
    done = [(5.0, 64), (5.1, 64), (7.0, 64), (7.1, 64), (9.0, 64), (9.1, 64)]
    text = _rate_summary(0.0, done, workers=2)
    assert "384 frames" in text and "42.2 frames/s" in text and "steady state 64.0 frames/s" in text
    assert "steady" not in _rate_summary(0.0, done[:2], workers=2)


def test_fast_turns_the_cluster_refit_off():
    from sevi.camera.centroid_file import centroid_config
    assert centroid_config(True).cluster_max == 0 and centroid_config(False).cluster_max >= centroid_config().cluster_min


def interrupt_after_first_chunk(frame_file, out, monkeypatch):
    """Run until the second chunk starts, as if killed then: one finished part is left."""
    real = centroid_file.process_chunk
    calls = []

    def dies_on_second(path, a, b, part, *rest):
        calls.append((a, b))
        if len(calls) == 2:
            raise KeyboardInterrupt
        return real(path, a, b, part, *rest)
    monkeypatch.setattr(centroid_file, "process_chunk", dies_on_second)
    assert run_frames(frames_args(frame_file, out)) == 130
    calls.clear()
    monkeypatch.setattr(centroid_file, "process_chunk",
                        lambda path, a, b, part, *rest: (calls.append((a, b)), real(path, a, b, part, *rest))[1])
    return calls


def test_resume_is_keyed_on_content_not_on_the_files_time(frame_file, reference, tmp_path, monkeypatch, capsys):
    # The input is replaced by an identical copy (new mtime, new inode), as a user told to "fix or
    # replace the input" would: the finished chunk is checked by content and kept.
    x = tmp_path / "x.h5"
    x.write_bytes(frame_file.read_bytes())
    out = tmp_path / "ev.h5"
    calls = interrupt_after_first_chunk(x, out, monkeypatch)
    x.unlink()
    x.write_bytes(frame_file.read_bytes())
    assert run_frames(frames_args(x, out)) == 0
    assert calls == [(2, 4), (4, 6)], f"the unchanged finished chunk was redone or skipped: {calls}"
    assert "1 kept, 0 to centroid again" in capsys.readouterr().err
    np.testing.assert_array_equal(read_events(out)[0], reference[0])


def test_a_finished_chunk_whose_frames_changed_is_redone(frame_file, tmp_path, monkeypatch, capsys):
    x = tmp_path / "x.h5"
    x.write_bytes(frame_file.read_bytes())
    out = tmp_path / "ev.h5"
    calls = interrupt_after_first_chunk(x, out, monkeypatch)
    with h5py.File(x, "r+") as f:      # frame 1 (first chunk) gets a bright spot
        row = f["FinalImage"][1]
        row["Image"][500:505, 500:505] = 255
        f["FinalImage"][1] = row
    assert run_frames(frames_args(x, out)) == 0
    assert calls == [(0, 2), (2, 4), (4, 6)], calls
    assert "0 kept, 1 to centroid again" in capsys.readouterr().err


def test_a_damaged_manifest_is_reported_and_the_run_goes_on(frame_file, reference, tmp_path, monkeypatch, capsys):
    out = tmp_path / "ev.h5"
    calls = interrupt_after_first_chunk(frame_file, out, monkeypatch)
    (tmp_path / "ev.h5.parts" / "manifest.json").write_text('{"n_frames": 6, "chu')
    assert run_frames(frames_args(frame_file, out)) == 0
    err = capsys.readouterr().err
    assert "manifest.json: damaged" in err and "1 kept" in err, err
    assert calls == [(2, 4), (4, 6)]
    np.testing.assert_array_equal(read_events(out)[0], reference[0])


def test_other_settings_in_the_parts_folder_stop_the_run(frame_file, tmp_path, monkeypatch, capsys):
    out = tmp_path / "ev.h5"
    interrupt_after_first_chunk(frame_file, out, monkeypatch)
    assert run_frames(frames_args(frame_file, out, chunk=3)) == 2
    assert "holds parts of a different run" in capsys.readouterr().err


def test_empty_frame_table_and_bad_options_are_refused(tmp_path, capsys):
    from sevi.io.frame_files import FRAME_DTYPE
    empty = tmp_path / "empty.h5"
    with h5py.File(empty, "w") as f:
        f.create_dataset("FinalImage", shape=(0,), dtype=FRAME_DTYPE)
    assert run_frames(frames_args(empty, tmp_path / "ev.h5")) == 2
    assert "'FinalImage' has no rows; expected camera frames" in capsys.readouterr().err
    for kw, text in ((dict(chunk=0), "--chunk: got 0"), (dict(grid=0), "--grid: got 0"),
                     (dict(device="tpu"), "--device tpu: not a torch device"),
                     (dict(max_in_flight=0), "--max-in-flight: got 0")):
        assert run_frames(frames_args(empty, tmp_path / "ev.h5", **kw)) == 2
        assert text in capsys.readouterr().err, kw
    assert not (tmp_path / "ev.h5").exists()


def test_duplicate_image_ids_are_warned_about(frame_file, tmp_path, capsys):
    x = tmp_path / "dup.h5"
    x.write_bytes(frame_file.read_bytes())
    with h5py.File(x, "r+") as f:
        row = f["FinalImage"][4]
        row["ImageId"] = 1
        f["FinalImage"][4] = row
    assert run_frames(frames_args(x, tmp_path / "ev.h5")) == 0
    assert "FinalImage.ImageId 1 is used by 2 frames" in capsys.readouterr().err


def _other_frames(tmp_path, like):
    """Another measurement of the same size (a different seed): the same bytes count, other frames."""
    import os

    p = tmp_path / "other.h5"
    args = argparse.Namespace(out=str(p), frames=6, per_frame=30.0, hits="disc", seed=4, batch=6, device="cpu")
    assert simulate_frames.run(args) == 0
    assert p.stat().st_size == like.stat().st_size
    st = like.stat()
    os.utime(p, ns=(st.st_atime_ns, st.st_mtime_ns))   # the old file's time, as cp -p or touch -r give it
    return p


def test_an_input_replaced_with_the_same_size_and_mtime_is_detected(frame_file, tmp_path, monkeypatch, capsys):
    """`cp -p OTHER X` after an interrupted run: size and mtime as before, other frames. The resume
    must give the uninterrupted run's events of the new content (it gave 3,889 against 3,879)."""
    import shutil

    x = tmp_path / "x.h5"
    shutil.copy2(frame_file, x)
    other = _other_frames(tmp_path, x)
    want = tmp_path / "want.h5"
    assert run_frames(frames_args(other, want)) == 0
    out = tmp_path / "ev.h5"
    calls = interrupt_after_first_chunk(x, out, monkeypatch)
    size, mtime = x.stat().st_size, x.stat().st_mtime_ns
    shutil.copy2(other, x)                              # cp -p: the same size and mtime, other frames
    assert (x.stat().st_size, x.stat().st_mtime_ns) == (size, mtime)
    assert run_frames(frames_args(x, out)) == 0
    assert calls == [(0, 2), (2, 4), (4, 6)], f"the stale chunk was kept: {calls}"
    assert "0 kept, 1 to centroid again" in capsys.readouterr().err
    np.testing.assert_array_equal(read_events(out)[0], read_events(want)[0])


def test_the_sampled_frames_are_checked_even_when_the_file_looks_the_same(frame_file, tmp_path, monkeypatch,
                                                                          capsys):
    """Where a file system keeps no trustworthy ctime or inode (the manifest's identity holds for a
    replaced file), the digest of each finished chunk's first, middle and last frame still catches it."""
    import json
    import shutil

    x = tmp_path / "x.h5"
    shutil.copy2(frame_file, x)
    other = _other_frames(tmp_path, x)
    out = tmp_path / "ev.h5"
    calls = interrupt_after_first_chunk(x, out, monkeypatch)
    shutil.copy2(other, x)
    m = tmp_path / "ev.h5.parts" / "manifest.json"
    st = x.stat()
    m.write_text(json.dumps({**json.loads(m.read_text()), "dev": st.st_dev, "ino": st.st_ino,
                             "ctime_ns": st.st_ctime_ns}))   # as if the replaced file looked identical
    assert run_frames(frames_args(x, out)) == 0
    assert calls == [(0, 2), (2, 4), (4, 6)], calls
    assert "the frames of 1 of 1 finished chunks changed (their sampled frames differ)" in capsys.readouterr().err


def test_a_killed_runs_half_written_part_is_removed(frame_file, reference, tmp_path, monkeypatch, capsys):
    import subprocess
    import sys

    from sevi.io.atomic import _host

    out = tmp_path / "ev.h5"
    interrupt_after_first_chunk(frame_file, out, monkeypatch)
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True,
                          text=True).stdout.strip()
    half = tmp_path / "ev.h5.parts" / f".chunk_000000002_000000004.h5.{dead}@{_host()}.x1y2z3w4.tmp"
    half.write_bytes(b"half a part: its Ray task was killed")
    assert run_frames(frames_args(frame_file, out)) == 0
    assert f"cleaned up after a killed run (removed {half.name})" in capsys.readouterr().err
    assert not (tmp_path / "ev.h5.parts").exists()
    np.testing.assert_array_equal(read_events(out)[0], reference[0])
