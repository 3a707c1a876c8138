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
