"""Atomic file writes: write to a temporary file beside the target, then rename it over the target.

A crash (or an exception) mid-write leaves the old file, or none, never half a file: ``os.replace``
is atomic on POSIX within one file system, and the temporary file sits in the target's directory.
"""
from __future__ import annotations

import contextlib
import json
import os
import tempfile
from pathlib import Path
from typing import Iterator

__all__ = ["atomic_path", "atomic_bytes", "atomic_text", "atomic_folder", "write_json"]


def _umask() -> int:
    """The process's umask (it can only be read by setting it, so it is set back at once)."""
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside ``path`` (its directory created if need be); on success
    rename it over ``path``, on any exception delete it and re-raise."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        # mkstemp makes the file 0600; the result is for others on shared storage and for other
        # workers too, so give it the mode a plain open() would: 0666 less the user's umask.
        os.fchmod(fd, 0o666 & ~_umask())
    finally:
        os.close(fd)
    try:
        yield Path(tmp)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def write_json(path: str | os.PathLike, obj, indent: int = 1) -> None:
    """``obj`` as JSON to ``path``, atomically (numpy scalars become floats)."""
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(obj, indent=indent, default=float))


def atomic_bytes(path: str | os.PathLike, data: bytes, fsync: bool = False) -> None:
    """Write ``data`` to ``path`` atomically; ``fsync`` flushes it to disk before the rename."""
    with atomic_path(path) as tmp, open(tmp, "wb") as f:
        f.write(data)
        if fsync:
            f.flush()
            os.fsync(f.fileno())


def atomic_text(path: str | os.PathLike, text: str) -> None:
    """Write ``text`` (UTF-8) to ``path`` atomically."""
    atomic_bytes(path, text.encode("utf-8"))


def atomic_folder(path: str | os.PathLike, files: dict[str, bytes]) -> None:
    """Make ``path`` a folder holding exactly ``files`` (file name -> bytes), all or nothing.

    Every file is written into a temporary folder beside ``path``; then the old folder (if any)
    is renamed aside, the new one renamed to ``path`` and the old one deleted. An exception
    before the swap leaves ``path`` as it was; between the two renames (microseconds) ``path``
    is briefly absent, never half-written. The caller decides whether an existing ``path`` may
    be replaced: everything in it is removed.
    """
    import shutil

    path = Path(path)
    for name in files:
        if not name or name in (".", "..") or Path(name).name != name:
            raise ValueError(f"atomic_folder: {name!r} is not a plain file name")
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent))
    old = tmp.with_name(tmp.name[:-len(".tmp")] + ".old")
    moved = False
    try:
        os.chmod(tmp, 0o777 & ~_umask())  # mkdtemp makes 0700; the folder is for other readers too
        for name, data in files.items():
            with open(tmp / name, "xb") as f:
                f.write(data)
        if path.exists():
            os.rename(path, old)
            moved = True
        os.rename(tmp, path)
    except BaseException:
        if moved and not path.exists():
            os.rename(old, path)     # put the old folder back
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    if moved:
        shutil.rmtree(old, ignore_errors=True)
