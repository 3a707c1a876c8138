"""One error policy for every command of the project (``sevi ...``, ``coating ...``, and the Ray
entry points in ``ray_jobs/``): what ends a command, with which line and which exit status.

* Input the user can fix (``sevi.runtime.errors.InputError`` and every ``ValueError``; an
  ``OSError`` such as a missing file, a folder given for a file, permission denied; a file that is
  not what it claims): one line ``<prog> <command>: <file>: <field>: <what is expected>`` on
  stderr, exit status **2** (argparse's own status for a usage error), no traceback.
* Ctrl-C (``KeyboardInterrupt``): ``<prog> <command>: interrupted`` (and what was kept, when the
  library says so in the exception), exit status **130** (128 + SIGINT, the shell's convention).
* Warnings for the user (``sevi.runtime.errors.InputWarning``): one line each,
  ``<prog> <command>: warning: <text>``, and the command goes on. Warnings meant for developers
  (a library's RuntimeWarning, DeprecationWarning) are not shown; ``--debug`` shows them.
* Anything else is a defect of ours: it raises with its traceback, which is the useful report.

``--debug`` re-raises every error, so its traceback shows. Libraries never print or exit; only
this module and the command modules that call it do.
"""

from __future__ import annotations

import json
import pickle
import sys
import warnings
from typing import Callable

from sevi.runtime.errors import InputWarning

__all__ = ["EXIT_USAGE", "EXIT_INTERRUPTED", "USER_ERRORS", "error_line", "run_command"]

EXIT_USAGE = 2         # bad input or options (argparse uses 2 for usage errors)
EXIT_INTERRUPTED = 130  # 128 + SIGINT, as a shell reports a command ended by Ctrl-C

# What the user can fix: the project's typed input errors are ValueErrors (sevi.runtime.errors);
# json.JSONDecodeError is one too; OSError covers missing files, folders given for files, h5py's
# "unable to open" on a file that is not HDF5; UnpicklingError a .pt file that is not one.
USER_ERRORS = (ValueError, OSError, pickle.UnpicklingError)

_OS_WHAT = {FileNotFoundError: "no such file", IsADirectoryError: "is a directory; expected a file",
            NotADirectoryError: "a parent of this path is not a directory", PermissionError: "permission denied"}


def error_line(prog: str, command: str | None, err: BaseException | str) -> str:
    """One line ``<prog> <command>: <what is wrong / expected>`` for a user error (the message's
    own lines joined by '; ', and the prefix not repeated when the message already carries it)."""
    if isinstance(err, str):
        text = err
    elif isinstance(err, json.JSONDecodeError):
        text = f"not valid JSON ({err.msg}, line {err.lineno} column {err.colno})"
    elif isinstance(err, OSError) and err.filename is not None:
        text = f"{err.filename}: {_OS_WHAT.get(type(err), err.strerror or str(err))}"
    else:
        text = str(err) or type(err).__name__
    text = "; ".join(line.strip() for line in text.splitlines() if line.strip())
    prefix = f"{prog} {command}: " if command else f"{prog}: "
    while text.startswith(prefix):
        text = text[len(prefix):]
    return prefix + text


def run_command(prog: str, command: str | None, func: Callable[[], int | None], debug: bool = False) -> int:
    """Run ``func`` under the policy above; returns the exit status to give the shell."""
    where = f"{prog} {command}" if command else prog

    def show(message, category, filename, lineno, file=None, line=None):
        if issubclass(category, InputWarning):
            print(f"{where}: warning: {message}", file=sys.stderr)
        elif debug:
            print(warnings.formatwarning(message, category, filename, lineno, line), end="", file=sys.stderr)

    with warnings.catch_warnings():
        warnings.simplefilter("always" if debug else "ignore")
        warnings.simplefilter("always", InputWarning)
        warnings.showwarning = show
        try:
            return int(func() or 0)
        except SystemExit as e:
            if not isinstance(e.code, str) or debug:  # a plain exit status (argparse), or --debug
                raise
            err: BaseException | str = e.code
        except KeyboardInterrupt as e:
            if debug:
                raise
            print(f"{where}: interrupted" + (f"; {e}" if str(e) else ""), file=sys.stderr)
            return EXIT_INTERRUPTED
        except USER_ERRORS as e:
            if debug:
                raise
            err = e
    print(error_line(prog, command, err), file=sys.stderr)
    return EXIT_USAGE
