"""Output paths that would destroy an input are refused before anything is written.

Every ``sevi`` tool writes its output atomically (a temporary file renamed over the target), so an
output path that names one of the tool's inputs would replace that input with the result: the raw
frames of ``sevi frames X --out X`` would be gone. :func:`refuse_output_over_input` compares each
output with each input by identity, not by spelling: two paths are the same file when
``os.path.samefile`` says so (same device and inode, so symlinks, ``./x`` against ``x`` and hard
links are all caught); where one of them does not exist yet, their resolved absolute paths are
compared.
"""
from __future__ import annotations

import os
from pathlib import Path

__all__ = ["OutputIsInputError", "same_file", "refuse_output_over_input"]


class OutputIsInputError(ValueError):
    """An output path names an input file (or another output) of the same command."""


def same_file(a: str | os.PathLike, b: str | os.PathLike) -> bool:
    """True when ``a`` and ``b`` name the same file: same inode where both exist, else the same
    resolved absolute path."""
    try:
        return os.path.samefile(a, b)
    except OSError:  # one of them does not exist (yet), or cannot be stat'ed
        return Path(a).resolve() == Path(b).resolve()


def refuse_output_over_input(outputs: dict[str, str | os.PathLike | None],
                             inputs: dict[str, str | os.PathLike | None]) -> None:
    """Raise :class:`OutputIsInputError` if an output names an input, or two outputs name one file.

    ``outputs`` and ``inputs`` map the option that names the path (``"--out"``, ``"FRAMES"``) to the
    path; ``None`` entries are skipped. A directory input (a model directory) counts with its
    ``model.pt``, the file the tools read from it.
    """
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
