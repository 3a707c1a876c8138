"""The typed errors library code raises for what a user gave, and which the command layer alone turns
into one line on stderr and exit status 2 (``sevi.cli.policy``).

A library never prints or exits: it raises. What the user can fix (a file, a field of it, an
option) is an :class:`InputError`, whose text is one line naming the file or option, then the
field, then what is expected: ``FILE: FIELD: what is wrong; expected ...``. The command prefixes
``<prog> <command>: ``. Every typed input error of the project (``TableError``, ``FrameFileError``,
``OutputIsInputError``, ``ModelFileError``, ``RecommendConfigError``, ...) derives from it. It is a
``ValueError``, so code that already catches ``ValueError`` keeps working.
"""

from __future__ import annotations

__all__ = ["InputError", "InputWarning", "OutputError"]


class InputError(ValueError):
    """Something the user gave is wrong: one line ``FILE-OR-OPTION: FIELD: what is expected``."""


class InputWarning(UserWarning):
    """Something the user gave is odd but usable (a repeated ImageId, a replaced input checked by
    content): ``warnings.warn(text, InputWarning)``; the command prints it as one line,
    ``<prog> <command>: warning: <text>``, and goes on."""


class OutputError(Exception):
    """An output could not be written for a reason outside the input: the disk is full (ENOSPC), a
    quota or file-size limit is reached, the file system is read-only. The text is one line naming
    the output and the error, and saying what was left (the temporary removed, a previous output
    untouched); the command ends with exit status 1, a failure, not a usage error."""
