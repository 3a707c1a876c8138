"""`sevi`: the SEVI command-line front door. Heavy imports live inside the subcommands.

Errors in what the user gave (a missing or malformed file, a bad option value, an output that
would overwrite an input) end the command with one line on stderr,
``sevi <command>: <file>: <field>: <what is expected>``, and exit status 2, without a traceback.
``--debug`` (before or after the subcommand) re-raises them, so the traceback shows. Anything
else (a defect of ours) still raises with its traceback.
"""

from __future__ import annotations

import argparse
import sys

from sevi.cli import analyze, frames, predict, simulate, simulate_frames

# Each subcommand's module has add_parser(subparsers), which sets ``func``; their heavy imports
# (torch, h5py; Ray only for `sevi frames` without --no-ray) happen inside ``func``.
SUBCOMMANDS = (simulate, simulate_frames, frames, predict, analyze)

EXIT_USAGE = 2  # bad input or options: argparse's own status for a usage error

# The errors that mean "the input or an option is wrong": the project's own (TableError,
# FrameFileError, OutputIsInputError, ModelFileError are ValueErrors), json.JSONDecodeError (a
# ValueError too), and OSError: missing files, directories given for files, and h5py's "unable to
# open" on a file that is not HDF5.
USER_ERRORS = (ValueError, OSError)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="sevi", description="SEVI / velocity-map imaging tools")
    parser.add_argument("--debug", action="store_true", help="show the traceback of an input error")
    sub = parser.add_subparsers(dest="command", required=True)
    for module in SUBCOMMANDS:
        module.add_parser(sub)
    for p in sub.choices.values():  # --debug also after the subcommand; SUPPRESS keeps the global value
        p.add_argument("--debug", action="store_true", default=argparse.SUPPRESS, help=argparse.SUPPRESS)
    return parser


def error_line(command: str, err: BaseException | str) -> str:
    """One line ``sevi <command>: <file>: <what is wrong / expected>`` for a user error."""
    import json

    if isinstance(err, str):
        text = err
    elif isinstance(err, json.JSONDecodeError):
        text = f"not valid JSON ({err.msg}, line {err.lineno} column {err.colno})"
    elif isinstance(err, OSError) and err.filename is not None:
        what = {FileNotFoundError: "no such file", IsADirectoryError: "is a directory; expected a file",
                NotADirectoryError: "a parent of this path is not a directory",
                PermissionError: "permission denied"}.get(type(err), err.strerror or str(err))
        text = f"{err.filename}: {what}"
    else:
        text = str(err) or type(err).__name__
    text = "; ".join(line.strip() for line in text.splitlines() if line.strip())
    prefix = f"sevi {command}: "
    while text.startswith(prefix):  # messages raised inside the tools often carry it already
        text = text[len(prefix):]
    return prefix + text


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except SystemExit as e:
        if not isinstance(e.code, str) or args.debug:  # a plain exit status, or --debug
            raise
        err: BaseException | str = e.code
    except USER_ERRORS as e:
        if args.debug:
            raise
        err = e
    print(error_line(args.command, err), file=sys.stderr)
    return EXIT_USAGE


if __name__ == "__main__":
    sys.exit(main())
