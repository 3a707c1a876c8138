"""`sevi`: the SEVI command-line front door. Heavy imports live inside the subcommands.

Errors end a command as ``sevi.cli.policy`` says, the same for every command of the project: what
the user gave is wrong (a missing or malformed file, a bad option value, an output that would
overwrite an input): one line on stderr, ``sevi <command>: <file>: <field>: <what is expected>``,
and exit status 2; Ctrl-C: exit status 130. ``--debug`` (before or after the subcommand) re-raises,
so the traceback shows. Anything else (a defect of ours) raises with its traceback.
"""

from __future__ import annotations

import argparse
import sys

from sevi.cli import analyze, fit, frames, predict, simulate, simulate_frames, train
from sevi.cli.policy import run_command

# Each subcommand's module has add_parser(subparsers), which sets ``func``; their heavy imports
# (torch, h5py; Ray only for `sevi frames` without --no-ray) happen inside ``func``.
SUBCOMMANDS = (simulate, simulate_frames, frames, predict, analyze, fit, train)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="sevi", description="SEVI / velocity-map imaging tools")
    parser.add_argument("--debug", action="store_true", help="show the traceback of an input error")
    sub = parser.add_subparsers(dest="command", required=True)
    for module in SUBCOMMANDS:
        module.add_parser(sub)
    for p in sub.choices.values():  # --debug also after the subcommand; SUPPRESS keeps the global value
        p.add_argument("--debug", action="store_true", default=argparse.SUPPRESS, help=argparse.SUPPRESS)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args, rest = parser.parse_known_args(argv)
    if rest:  # only `sevi train` takes free --field value pairs (TrainConfig fields)
        if not getattr(sys.modules[args.func.__module__], "ACCEPTS_FIELDS", False):
            parser.error(f"unrecognized arguments: {' '.join(rest)}")
        args.fields = rest
    from sevi.runtime.threads import apply_thread_policy  # before a subcommand imports torch

    def run():  # the project's thread policy (large work: image batches), then the subcommand
        apply_thread_policy(getattr(args, "threads", None) or None, work="large")
        return args.func(args)
    return run_command("sevi", args.command, run, args.debug, exiting=argv is None)


if __name__ == "__main__":
    sys.exit(main())
