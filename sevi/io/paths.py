"""Output paths are checked before anything is written: each must be a file name in a folder the
command can write, and none may name an input (or another output).

Every command of the project (``sevi``, ``coating``) writes its output atomically (a temporary file renamed over the target), so an
output path that names one of the tool's inputs would replace that input with the result: the raw
frames of ``sevi frames X --out X`` would be gone. :func:`check_outputs` compares each
output with each input by identity, not by spelling: two paths are the same file when
``os.path.samefile`` says so (same device and inode, so symlinks, ``./x`` against ``x`` and hard
links are all caught); where one of them does not exist yet, their resolved absolute paths are
compared. A path that is a folder, lies under a file, or in a folder the user cannot write is
refused too, so a command never computes for an hour and then fails to write.

Temporaries that a killed run left beside an output (``sevi.io.atomic``: ``.NAME.PID@HOST.*.tmp``)
are removed when their writer is gone for certain, and reported otherwise, one
``InputWarning`` line per output, before the command writes.
"""
from __future__ import annotations

import os
import warnings
from pathlib import Path

from sevi.runtime.errors import InputError, InputWarning

__all__ = ["OutputIsInputError", "same_file", "check_outputs", "clean_temporaries"]


class OutputIsInputError(InputError):
    """An output path names an input file (or another output) of the same command."""


def same_file(a: str | os.PathLike, b: str | os.PathLike) -> bool:
    """True when ``a`` and ``b`` name the same file: same inode where both exist, else the same
    resolved absolute path."""
    try:
        return os.path.samefile(a, b)
    except OSError:  # one of them does not exist (yet), or cannot be stat'ed
        return Path(a).resolve() == Path(b).resolve()


def check_outputs(outputs: dict[str, str | os.PathLike | None],
                  inputs: dict[str, str | os.PathLike | None] | None = None) -> None:
    """Raise :class:`InputError` for an output that is a folder, lies under a file or in a folder
    that cannot be written, and :class:`OutputIsInputError` if an output names an input, or two
    outputs name one file.

    ``outputs`` and ``inputs`` map the option that names the path (``"--out"``, ``"FRAMES"``) to the
    path; ``None`` entries are skipped. A directory input (a model directory) counts with its
    ``model.pt``, the file the tools read from it.
    """
    for flag, path in outputs.items():
        if path is None:
            continue
        p = Path(path)
        if p.is_dir():
            raise InputError(f"{path}: is a folder; expected a file name ({flag})")
        parent = p.parent
        while not parent.exists() and parent != parent.parent:  # the folders that would be made
            parent = parent.parent
        if not parent.is_dir():
            raise InputError(f"{path}: {parent} is a file, not a folder; expected a file name in a folder ({flag})")
        if not os.access(parent, os.W_OK | os.X_OK):
            why = "a read-only file system" if _read_only(parent) else "permission denied"
            raise InputError(f"{path}: cannot write in {parent} ({why}) ({flag})")
    inputs = inputs or {}
    ins = []
    for flag, path in inputs.items():
        if path is None:
            continue
        ins.append((flag, Path(path)))
        if Path(path).is_dir():
            ins.append((flag, Path(path) / "model.pt"))
    outs = [(flag, Path(p)) for flag, p in outputs.items() if p is not None]
    for i, (oflag, out) in enumerate(outs):
        for iflag, inp in ins:
            if same_file(out, inp):
                raise OutputIsInputError(f"{out}: {oflag} is the input {iflag} ({inp}); expected a new path "
                                         f"(writing there would destroy the input)")
        for oflag2, out2 in outs[i + 1:]:
            if same_file(out, out2):
                raise OutputIsInputError(f"{out}: {oflag} and {oflag2} name the same file; expected two "
                                         f"different paths")
    for _, out in outs:
        clean_temporaries(out)


def clean_temporaries(target: str | os.PathLike, folder: bool = False) -> None:
    """Remove the stale temporaries beside ``target`` (or, with ``folder``, in the folder
    ``target``) that a killed run left (``sevi.io.atomic.clean_stale``); one InputWarning line
    says what was removed and which were left because their writer may still run."""
    from sevi.io.atomic import clean_stale, describe_cleanup, temporaries

    found = temporaries(folder=target) if folder else temporaries(target)
    if found:
        line = describe_cleanup(target, *clean_stale(found))
        if line:
            warnings.warn(line, InputWarning, stacklevel=2)


def _read_only(folder: Path) -> bool:
    try:
        return bool(os.statvfs(folder).f_flag & os.ST_RDONLY)
    except OSError:
        return False
