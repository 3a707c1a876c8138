"""One error policy for every command of the project (``sevi ...``, ``coating ...``, and the Ray
entry points in ``ray_jobs/``): what ends a command, with which line and which exit status.

* Input the user can fix (``sevi.runtime.errors.InputError`` and every ``ValueError``; an
  ``OSError`` such as a missing file, a folder given for a file, permission denied; a file that is
  not what it claims): one line ``<prog> <command>: <file>: <field>: <what is expected>`` on
  stderr, exit status **2** (argparse's own status for a usage error), no traceback.
* An output that cannot be written for want of space, quota or a writable file system
  (``sevi.runtime.errors.OutputError``, raised by ``sevi.io.atomic``; or any ``OSError`` with
  ENOSPC, EDQUOT, EFBIG or EROFS): one line naming the output and the error, exit status **1** (a
  failure, not a usage error). The temporary file is gone and a previous output is untouched
  (``sevi.io.atomic``).
* Ctrl-C (``KeyboardInterrupt``), and SIGTERM and SIGHUP, which this policy turns into the same
  exception while the command runs, so every temporary file is deleted on the way out
  (``sevi.io.atomic``): ``<prog> <command>: interrupted`` (with the signal's name when it was not
  SIGINT, and what was kept, when the library says so in the exception), exit status **128 +
  the signal** (130 for Ctrl-C, 143 for SIGTERM: the shell's convention). ``ray.init`` replaces
  the SIGTERM handler with ``sys.exit(15)``; that exit is reported the same way.
* Warnings for the user (``sevi.runtime.errors.InputWarning``): one line each,
  ``<prog> <command>: warning: <text>``, and the command goes on. Warnings meant for developers
  (a library's RuntimeWarning, DeprecationWarning) are not shown; ``--debug`` shows them.
* Anything else is a defect of ours: it raises with its traceback, which is the useful report.

Temporaries a killed process (``kill -9``) left behind are the third part of the same policy:
``sevi.io.paths.check_outputs``, which every command calls before it writes, removes those whose
writer is gone and reports the others.

``--debug`` re-raises every error, so its traceback shows. Libraries never print or exit; only
this module and the command modules that call it do.
"""

from __future__ import annotations

import json
import os
import pickle
import signal
import sys
import threading
import warnings
from typing import Callable

from sevi.runtime.errors import InputWarning, OutputError

__all__ = ["EXIT_USAGE", "EXIT_FAILURE", "EXIT_INTERRUPTED", "USER_ERRORS", "error_line", "run_command",
           "reinstall_signal_handlers"]

EXIT_FAILURE = 1        # the command could not do its work for a reason outside the input (a full disk)
EXIT_USAGE = 2         # bad input or options (argparse uses 2 for usage errors)
EXIT_INTERRUPTED = 130  # 128 + SIGINT, as a shell reports a command ended by Ctrl-C

# What the user can fix: the project's typed input errors are ValueErrors (sevi.runtime.errors);
# json.JSONDecodeError is one too; OSError covers missing files, folders given for files, h5py's
# "unable to open" on a file that is not HDF5; UnpicklingError a .pt file that is not one.
USER_ERRORS = (ValueError, OSError, pickle.UnpicklingError)

# Signals that end a command as Ctrl-C does (through KeyboardInterrupt, so clean-up runs).
_CAUGHT = tuple(s for s in (getattr(signal, "SIGTERM", None), getattr(signal, "SIGHUP", None)) if s is not None)

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


_ACTIVE: list["_Signals"] = []  # the running commands' handlers, innermost last


def reinstall_signal_handlers() -> None:
    """Put the running command's handlers back on SIGINT, SIGTERM and SIGHUP after a library
    replaced them: ``ray.init`` puts ``sys.exit(15)`` on SIGTERM. (Call it from the main thread,
    right after such a library call; outside a command it does nothing.)"""
    if _ACTIVE and threading.current_thread() is threading.main_thread():
        _ACTIVE[-1].install()


class _Signals:
    """While a command runs: SIGTERM and SIGHUP raise KeyboardInterrupt as SIGINT does, and the
    signal that ended the command is remembered (only in the main thread, where Python runs
    signal handlers; elsewhere nothing changes)."""

    def __init__(self, ignore_after: bool = False):
        self.received: int | None = None
        self._old: dict[int, object] = {}
        self.ignore_after = ignore_after  # on exit, ignore these signals instead of restoring (``run_command``)

    def install(self) -> None:
        for s in self._old:
            signal.signal(s, self._sigint if s == signal.SIGINT else self._handler)

    def _handler(self, signum, frame):
        self.received = signum
        raise KeyboardInterrupt

    def _sigint(self, signum, frame):
        self.received = signum
        raise KeyboardInterrupt

    def __enter__(self) -> "_Signals":
        if threading.current_thread() is not threading.main_thread():
            return self
        # Every handler but SIG_IGN is taken over for the command's duration and put back after it:
        # one a library left behind (ray.init's sys.exit on SIGTERM stays after ray.shutdown; Ray
        # Train's and Tune's SIGINT handlers stay after their runs) would otherwise decide how the
        # command ends. An ignored signal stays ignored (nohup's SIGHUP, a background job's SIGINT).
        for s in _CAUGHT + (signal.SIGINT,):
            if signal.getsignal(s) is not signal.SIG_IGN:
                self._old[s] = signal.signal(s, self._sigint if s == signal.SIGINT else self._handler)
        _ACTIVE.append(self)
        return self

    def replaced_sigterm(self) -> bool:
        """Whether someone else (``ray.init``) put its own handler on SIGTERM since."""
        s = getattr(signal, "SIGTERM", None)
        return s in self._old and signal.getsignal(s) != self._handler

    def __exit__(self, *exc) -> None:
        if self in _ACTIVE:
            _ACTIVE.remove(self)
        for s, old in self._old.items():
            if self.ignore_after:  # the process ends with the command: a late signal interrupts nothing
                signal.signal(s, signal.SIG_IGN)
            else:
                signal.signal(s, signal.SIG_DFL if old is None else old)  # None: a handler set from C


def _interrupted_line(where: str, signum: int | None, err: BaseException | None) -> str:
    name = "" if signum in (None, signal.SIGINT) else f" ({signal.Signals(signum).name})"
    kept = str(err) if err is not None and str(err) else ""
    return f"{where}: interrupted{name}" + (f"; {kept}" if kept else "")


def run_command(prog: str, command: str | None, func: Callable[[], int | None], debug: bool = False,
                exiting: bool = False) -> int:
    """Run ``func`` under the policy above; returns the exit status to give the shell.

    ``exiting``: the process ends when the command does (a command-line entry point, called with no
    argv). Ctrl-C, SIGTERM and SIGHUP that arrive after the command has ended are then ignored: its
    outputs are written (or its temporaries removed) and its line printed, so there is nothing left to
    interrupt, and the interpreter's exit (thread joins, Ray's shutdown, finalisation, where Python
    puts its default handlers back) would otherwise end in a KeyboardInterrupt traceback or a death
    by the signal. In-process callers (tests) get their own handlers back."""
    where = f"{prog} {command}" if command else prog

    def show(message, category, filename, lineno, file=None, line=None):
        if issubclass(category, InputWarning):
            print(f"{where}: warning: {message}", file=sys.stderr)
        elif debug:
            print(warnings.formatwarning(message, category, filename, lineno, line), end="", file=sys.stderr)

    with warnings.catch_warnings(), _Signals(ignore_after=exiting) as signals:
        warnings.simplefilter("always" if debug else "ignore")
        warnings.simplefilter("always", InputWarning)
        warnings.showwarning = show
        try:
            return int(func() or 0)
        except SystemExit as e:
            if e.code == getattr(signal, "SIGTERM", None) and signals.replaced_sigterm() and not debug:
                print(_interrupted_line(where, signal.SIGTERM, None), file=sys.stderr)  # ray.init's handler
                return 128 + signal.SIGTERM
            if not isinstance(e.code, str) or debug:  # a plain exit status (argparse), or --debug
                raise
            err: BaseException | str = e.code
        except KeyboardInterrupt as e:
            if debug:
                raise
            signum = signals.received or signal.SIGINT
            print(_interrupted_line(where, signum, e), file=sys.stderr)
            return 128 + signum
        except OutputError as e:
            if debug:
                raise
            print(error_line(prog, command, e), file=sys.stderr)
            return EXIT_FAILURE
        except USER_ERRORS as e:
            if debug:
                raise
            from sevi.io.atomic import DISK_ERRNOS, disk_errno, output_error

            code = disk_errno(e)
            if code:  # a write that did not go through sevi.io.atomic (a library's own file)
                text = output_error(e.filename, e) if e.filename else \
                    f"cannot write an output: {os.strerror(code)} ({DISK_ERRNOS[code]})"
                print(error_line(prog, command, text if isinstance(text, str) else str(text)), file=sys.stderr)
                return EXIT_FAILURE
            err = e
    print(error_line(prog, command, err), file=sys.stderr)
    return EXIT_USAGE
