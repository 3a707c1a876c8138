"""Atomic file writes: write to a temporary file beside the target, then rename it over the target.

A crash (or an exception) mid-write leaves the old file, or none, never half a file: ``os.replace``
is atomic on POSIX within one file system, and the temporary file sits in the target's directory.

What happens under the faults users meet:

* **An exception or a signal turned into one** (Ctrl-C; SIGTERM and SIGHUP under
  ``sevi.cli.policy``): the temporary is deleted and the exception goes on; the target is as it was.
* **A full disk** (ENOSPC), a quota (EDQUOT), a file-size limit (EFBIG) or a read-only file system
  (EROFS) while writing: the temporary is deleted and :class:`sevi.runtime.errors.OutputError` is
  raised, one line naming the target and the error (the command ends with exit status 1).
* **A killed process** (``kill -9``, a lost node) cannot clean up: its temporary stays. Temporaries
  are named ``.NAME.PID@HOST.XXXXXXXX.tmp`` (folders: ``.NAME.PID@HOST.XXXXXXXX.tmp`` and, during the
  swap, ``.old``), so a later run recognises one whose writer is gone (:func:`temporaries`,
  :func:`Temporary.stale`: same host, no such process) and removes it (:func:`clean_stale`); one
  whose writer may still run (another host, a live process, or a temporary without an owner from an
  older version) is left and reported. ``sevi.io.paths.check_outputs`` does this for every output
  of every command before it writes.
"""
from __future__ import annotations

import contextlib
import dataclasses
import errno
import json
import os
import re
import shutil
import socket
import tempfile
from pathlib import Path
from typing import Iterator

from sevi.runtime.errors import OutputError

__all__ = ["atomic_path", "atomic_bytes", "atomic_text", "atomic_folder", "write_json", "save_png", "DISK_ERRNOS",
           "disk_errno", "output_error", "Temporary", "temporaries", "clean_stale", "describe_cleanup"]

# Write failures that say nothing about the input: the command ends with a failure (exit 1), not a
# usage error, and names the output.
DISK_ERRNOS = {errno.ENOSPC: "ENOSPC", errno.EDQUOT: "EDQUOT", errno.EFBIG: "EFBIG", errno.EROFS: "EROFS"}


def _umask() -> int:
    """The process's umask (it can only be read by setting it, so it is set back at once)."""
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def disk_errno(err: BaseException) -> int | None:
    """The errno of ``err`` when it is one of :data:`DISK_ERRNOS` (also where HDF5 reports it only in
    its text, ``... errno = 28, ...``, as h5py does in an OSError or, from a flush, a RuntimeError),
    else None."""
    if isinstance(err, OSError) and err.errno in DISK_ERRNOS:
        return err.errno
    if not isinstance(err, (OSError, RuntimeError)):
        return None
    m = re.search(r"errno = (\d+)", str(err))
    return int(m.group(1)) if m and int(m.group(1)) in DISK_ERRNOS else None


def output_error(path: str | os.PathLike, err: OSError, started: bool = True) -> OutputError:
    """The one-line :class:`OutputError` for ``err`` while writing ``path``: the output, the error,
    and what was left (the temporary removed, when one was ``started``; the previous file, if any,
    as it was)."""
    code = disk_errno(err) or err.errno
    path = Path(path)
    left = f"the previous {path.name} is untouched" if path.exists() else f"no {path.name} was written"
    done = "the temporary file was removed and " if started else "nothing was written: "
    return OutputError(f"{path}: cannot write: {os.strerror(code)} ({DISK_ERRNOS.get(code, code)}); {done}{left}")


def _host() -> str:
    return re.sub(r"[^A-Za-z0-9_-]", "-", socket.gethostname())[:40]


def _prefix(path: Path) -> str:
    """``.NAME.PID@HOST.``: what a temporary of ``path`` written by this process starts with (the
    owner dropped where the name would pass 255 bytes)."""
    owner = f"{os.getpid()}@{_host()}"
    prefix = f".{path.name}.{owner}."
    return prefix if len(prefix.encode()) + 12 <= 255 else f".{path.name}."


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside ``path`` (its directory created if need be); on success
    rename it over ``path``, on any exception delete it and re-raise (a disk error as
    :class:`OutputError` naming ``path``)."""
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=_prefix(path), suffix=".tmp", dir=path.parent)
    except OSError as e:
        if disk_errno(e):
            raise output_error(path, e, started=False) from e
        raise
    try:
        # mkstemp makes the file 0600; the result is for others on shared storage and for other
        # workers too, so give it the mode a plain open() would: 0666 less the user's umask.
        os.fchmod(fd, 0o666 & ~_umask())
    finally:
        os.close(fd)
    try:
        yield Path(tmp)
        os.replace(tmp, path)
    except BaseException as e:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        if disk_errno(e):
            raise output_error(path, e) from e
        raise


def write_json(path: str | os.PathLike, obj, indent: int = 1) -> None:
    """``obj`` as JSON to ``path``, atomically (numpy scalars become floats)."""
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(obj, indent=indent, default=float))


def save_png(fig, path: str | os.PathLike, dpi: int = 110) -> None:
    """A matplotlib figure as a PNG at ``path``, atomically; the figure is closed afterwards."""
    import matplotlib.pyplot as plt

    try:
        with atomic_path(path) as tmp:
            fig.savefig(tmp, dpi=dpi, format="png")
    finally:
        plt.close(fig)


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
    is briefly absent, never half-written (a process killed just then leaves the old folder as
    ``.NAME.PID@HOST.XXXXXXXX.old``, which :func:`clean_stale` puts back). The caller decides whether
    an existing ``path`` may be replaced: everything in it is removed.
    """
    path = Path(path)
    for name in files:
        if not name or name in (".", "..") or Path(name).name != name:
            raise ValueError(f"atomic_folder: {name!r} is not a plain file name")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=_prefix(path), suffix=".tmp", dir=path.parent))
    except OSError as e:
        if disk_errno(e):
            raise output_error(path, e, started=False) from e
        raise
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
    except BaseException as e:
        if moved and not path.exists():
            os.rename(old, path)     # put the old folder back
        shutil.rmtree(tmp, ignore_errors=True)
        if disk_errno(e):
            raise output_error(path, e) from e
        raise
    if moved:
        shutil.rmtree(old, ignore_errors=True)


# -- temporaries left behind ---------------------------------------------------------------------
_OWNED = re.compile(r"^\.(?P<name>.+)\.(?P<pid>\d+)@(?P<host>[A-Za-z0-9_-]*)\.[A-Za-z0-9_]+\.(?P<kind>tmp|old)$")
_UNOWNED = re.compile(r"^\.(?P<name>.+)\.[A-Za-z0-9_]{8}\.(?P<kind>tmp|old)$")  # before writers named themselves


@dataclasses.dataclass(frozen=True)
class Temporary:
    """A temporary file or folder of this module found beside its target."""
    path: Path
    target: Path
    pid: int | None     # the writer's process id (None: a temporary of an older version, no owner)
    host: str | None    # the writer's host name
    kind: str           # "tmp": a file or folder being written; "old": atomic_folder's old folder mid-swap

    @property
    def stale(self) -> bool:
        """True when its writer is gone for certain: written on this host by a process that no
        longer exists. A temporary from another host, of a live process, or without an owner may
        belong to a run still writing: not stale."""
        if self.pid is None or self.host != _host():
            return False
        if self.pid == os.getpid():
            return False
        try:
            os.kill(self.pid, 0)
        except ProcessLookupError:
            return True
        except PermissionError:   # a live process of another user
            return False
        return False

    def owner(self) -> str:
        return f"pid {self.pid} on {self.host or 'an unnamed host'}" if self.pid is not None else "no recorded writer"


def temporaries(target: str | os.PathLike | None = None, *, folder: str | os.PathLike | None = None) -> list[Temporary]:
    """The temporaries of ``target`` beside it, or (``folder``) every temporary in ``folder``."""
    where = Path(folder) if folder is not None else Path(target).parent
    want = None if folder is not None else Path(target).name
    try:
        names = os.listdir(where)
    except OSError:
        return []
    found = []
    for n in sorted(names):
        m = _OWNED.match(n)
        pid = host = None
        if m:
            pid, host = int(m["pid"]), m["host"]
        else:
            m = _UNOWNED.match(n)
            if not m:
                continue
        if want is not None and m["name"] != want:
            continue
        found.append(Temporary(where / n, where / m["name"], pid, host, m["kind"]))
    return found


def clean_stale(found: list[Temporary]) -> tuple[list[str], list[Temporary]]:
    """Remove the stale ones of ``found`` (an ``.old`` folder whose target is missing is put back
    instead: it is the previous output of a swap that was cut off). Returns (what was done, one
    short text per temporary; the temporaries left because their writer may still run)."""
    done, left = [], []
    for t in found:
        if not t.stale:
            left.append(t)
            continue
        try:
            if t.kind == "old" and not os.path.lexists(t.target):
                os.rename(t.path, t.target)
                done.append(f"put back {t.target.name} from {t.path.name}")
            elif t.path.is_dir() and not t.path.is_symlink():
                shutil.rmtree(t.path)
                done.append(f"removed {t.path.name}")
            else:
                t.path.unlink()
                done.append(f"removed {t.path.name}")
        except FileNotFoundError:
            continue
        except OSError:
            left.append(t)
    return done, left


def describe_cleanup(where: str | os.PathLike, done: list[str], left: list[Temporary]) -> str | None:
    """One line for the user about stale temporaries handled and others left, or None."""
    parts = []
    if done:
        parts.append(f"cleaned up after a killed run ({'; '.join(done)})")
    if left:
        parts.append("left " + ", ".join(f"{t.path.name} ({t.owner()})" for t in left)
                     + ": another run may be writing; delete if none is")
    return f"{where}: " + "; ".join(parts) if parts else None
