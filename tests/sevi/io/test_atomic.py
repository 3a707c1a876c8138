"""``sevi.io.atomic``: a failed write leaves the old file or folder exactly as it was."""
import os

import pytest

from sevi.io.atomic import atomic_folder, atomic_text


def test_atomic_text_replaces_or_leaves_the_old_file(tmp_path):
    p = tmp_path / "a.txt"
    atomic_text(p, "one")
    assert p.read_text() == "one"
    atomic_text(p, "two")
    assert p.read_text() == "two" and os.listdir(tmp_path) == ["a.txt"]


def test_atomic_folder_swaps_the_whole_folder(tmp_path):
    out = tmp_path / "out"
    atomic_folder(out, {"a.txt": b"1", "b.csv": b"2"})
    assert sorted(os.listdir(out)) == ["a.txt", "b.csv"]
    atomic_folder(out, {"c.txt": b"3"})
    assert os.listdir(out) == ["c.txt"] and (out / "c.txt").read_bytes() == b"3"
    assert os.listdir(tmp_path) == ["out"], "temporary or old folders left beside OUT"
    umask = os.umask(0o022)
    os.umask(umask)
    assert (out.stat().st_mode & 0o777) == 0o777 & ~umask, "the folder should follow the umask, not 0700"


def test_a_failed_folder_write_leaves_the_old_folder(tmp_path, monkeypatch):
    out = tmp_path / "out"
    atomic_folder(out, {"a.txt": b"1"})
    with pytest.raises(ValueError, match="not a plain file name"):
        atomic_folder(out, {"b.txt": b"2", "../evil.txt": b"3"})
    real = os.rename
    calls = []

    def failing_second_rename(a, b):
        calls.append((a, b))
        if len(calls) == 2:
            raise OSError("disk gone")
        return real(a, b)
    monkeypatch.setattr(os, "rename", failing_second_rename)
    with pytest.raises(OSError, match="disk gone"):
        atomic_folder(out, {"b.txt": b"2"})
    monkeypatch.undo()
    assert os.listdir(out) == ["a.txt"] and (out / "a.txt").read_bytes() == b"1"
    assert os.listdir(tmp_path) == ["out"]


@pytest.mark.parametrize("umask", [0o022, 0o077])
def test_atomic_files_get_the_users_umask_not_0600(tmp_path, umask):
    old = os.umask(umask)
    try:
        atomic_text(tmp_path / "a.txt", "x")
    finally:
        os.umask(old)
    assert ((tmp_path / "a.txt").stat().st_mode & 0o777) == 0o666 & ~umask


# -- faults: a full disk, a killed writer ------------------------------------------------------
def test_a_full_disk_is_an_output_error_naming_the_target_and_leaves_the_old_file(tmp_path):
    import errno

    from sevi.io.atomic import atomic_path
    from sevi.runtime.errors import OutputError

    p = tmp_path / "out.h5"
    p.write_text("previous")
    with pytest.raises(OutputError) as e:
        with atomic_path(p) as tmp:
            tmp.write_text("half")
            raise OSError(errno.ENOSPC, "No space left on device")
    assert str(e.value) == (f"{p}: cannot write: No space left on device (ENOSPC); the temporary file was removed "
                            f"and the previous out.h5 is untouched")
    assert os.listdir(tmp_path) == ["out.h5"] and p.read_text() == "previous"
    with pytest.raises(OutputError, match="no new.h5 was written"):
        with atomic_path(tmp_path / "new.h5"):
            raise OSError(errno.EDQUOT, "Disk quota exceeded")
    assert os.listdir(tmp_path) == ["out.h5"]


def test_a_full_disk_in_hdf5_is_caught_by_its_text_too(tmp_path):
    """h5py puts errno 28 in its text (and not always in .errno); atomic_h5 closes the file safely."""
    import h5py

    from sevi.io.atomic import disk_errno
    from sevi.io.tables import atomic_h5
    from sevi.runtime.errors import OutputError

    assert disk_errno(OSError("Can't write data (file write failed: ..., errno = 28, error message = 'x')")) == 28
    assert disk_errno(RuntimeError("Unable to flush file (file write failed: ..., errno = 28, ...)")) == 28
    assert disk_errno(OSError("errno = 2")) is None and disk_errno(ValueError("errno = 28")) is None

    def full(self):  # what h5py raises when HDF5's flush cannot write
        raise RuntimeError("Unable to flush file (file write failed: errno = 28, error message = 'No space left')")
    real = h5py.File.flush
    h5py.File.flush = full
    try:
        with pytest.raises(OutputError, match="out.h5: cannot write: No space left on device"):
            with atomic_h5(tmp_path / "out.h5", stream=True) as f:
                f["x"] = [1, 2, 3]
    finally:
        h5py.File.flush = real
    assert os.listdir(tmp_path) == []


def test_a_small_hdf5_file_is_built_in_memory_and_written_in_one_plain_write(tmp_path, monkeypatch):
    """The default atomic_h5: HDF5 never meets the full disk (after which it can crash)."""
    import builtins
    import errno

    import h5py

    from sevi.io.tables import atomic_h5
    from sevi.runtime.errors import OutputError

    with atomic_h5(tmp_path / "ok.h5") as f:
        f["x"] = [1, 2, 3]
    with h5py.File(tmp_path / "ok.h5") as f:
        assert f["x"][()].tolist() == [1, 2, 3]
    real = builtins.open

    def full(path, mode="r", *a, **k):
        fh = real(path, mode, *a, **k)
        if "w" in mode and ".out.h5." in str(path):
            def write(data):
                raise OSError(errno.ENOSPC, "No space left on device")
            fh.write = write
        return fh
    monkeypatch.setattr(builtins, "open", full)
    with pytest.raises(OutputError, match="out.h5: cannot write: No space left on device"):
        with atomic_h5(tmp_path / "out.h5") as f:
            f["x"] = [1, 2, 3]
    monkeypatch.undo()
    assert sorted(os.listdir(tmp_path)) == ["ok.h5"]


def test_temporaries_name_their_writer_and_a_dead_ones_are_removed(tmp_path):
    import subprocess
    import sys

    from sevi.io.atomic import atomic_path, clean_stale, temporaries

    target = tmp_path / "out.h5"
    with atomic_path(target) as tmp:
        assert tmp.name.startswith(f".out.h5.{os.getpid()}@") and tmp.name.endswith(".tmp")
        (t,) = temporaries(target)
        assert t.pid == os.getpid() and not t.stale, "a live writer's temporary is never stale"
        tmp.write_text("x")
    # a process that has ended: its pid is free
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True,
                          text=True).stdout.strip()
    (tmp_path / f".out.h5.{dead}@{t.host}.abcd1234.tmp").write_text("left by kill -9")
    (tmp_path / f".out.h5.{dead}@other-host.abcd1234.tmp").write_text("another node's")
    (tmp_path / ".out.h5.zz12yy34.tmp").write_text("an older version's, no owner")
    (tmp_path / f".other.h5.{dead}@{t.host}.abcd1234.tmp").write_text("another target's")
    found = temporaries(target)
    assert sorted(x.stale for x in found) == [False, False, True]
    done, left = clean_stale(found)
    assert done == [f"removed .out.h5.{dead}@{t.host}.abcd1234.tmp"]
    assert sorted(x.path.name for x in left) == sorted([".out.h5.zz12yy34.tmp",
                                                        f".out.h5.{dead}@other-host.abcd1234.tmp"])
    assert (tmp_path / f".other.h5.{dead}@{t.host}.abcd1234.tmp").exists()
    assert len(temporaries(folder=tmp_path)) == 3


def test_a_folder_swap_cut_off_by_kill_is_put_back(tmp_path):
    """atomic_folder renames the old folder aside, then the new one in: a kill between the two
    leaves OUT missing and the old folder as .OUT.PID@HOST.*.old, which a later run puts back."""
    import subprocess
    import sys

    from sevi.io.atomic import _host, clean_stale, temporaries

    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True,
                          text=True).stdout.strip()
    old = tmp_path / f".out.{dead}@{_host()}.abcd1234.old"
    old.mkdir()
    (old / "a.txt").write_text("previous")
    half = tmp_path / f".out.{dead}@{_host()}.abcd1234.tmp"
    half.mkdir()
    done, left = clean_stale(temporaries(tmp_path / "out"))
    assert sorted(done) == [f"put back out from {old.name}", f"removed {half.name}"] and not left
    assert os.listdir(tmp_path) == ["out"] and (tmp_path / "out" / "a.txt").read_text() == "previous"


def test_save_png_writes_a_png_atomically_and_closes_the_figure(tmp_path):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from sevi.io.atomic import save_png

    path = tmp_path / "f.png"
    fig, ax = plt.subplots()
    ax.plot([0, 1], [1, 0])
    save_png(fig, path)
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and not plt.fignum_exists(fig.number)
    assert [p.name for p in tmp_path.iterdir()] == ["f.png"]  # no temporary left

    broken, _ = plt.subplots()  # a figure whose rendering fails: the old PNG stays, nothing else is left

    def fail(*a, **k):
        raise RuntimeError("render failed")

    broken.savefig = fail
    old = path.read_bytes()
    with pytest.raises(RuntimeError, match="render failed"):
        save_png(broken, path)
    assert path.read_bytes() == old and [p.name for p in tmp_path.iterdir()] == ["f.png"]
    assert not plt.fignum_exists(broken.number)
