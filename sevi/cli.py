"""`sevi`: the SEVI command-line front door. Heavy imports live inside the subcommands."""

from __future__ import annotations

import argparse
import importlib
import sys

# Subcommand modules; each has add_parser(subparsers) that sets ``func``.
SUBCOMMANDS = ("sevi.simulate",)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="sevi", description="SEVI / velocity-map imaging tools")
    sub = parser.add_subparsers(dest="command", required=True)
    for name in SUBCOMMANDS:
        importlib.import_module(name).add_parser(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return int(args.func(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
