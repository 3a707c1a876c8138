"""`sevi`: the SEVI command-line front door. Heavy imports live inside the subcommands."""

from __future__ import annotations

import argparse
import importlib
import sys

# "module:function" that adds a subcommand parser setting ``func`` (function default: add_parser).
# Frame processing lives in ray_jobs/ because it fans chunks out as Ray tasks (--no-ray runs in-process).
SUBCOMMANDS = ("sevi.simulate", "ray_jobs.frames_job:add_simulate_frames_parser",
               "ray_jobs.frames_job:add_frames_parser", "sevi.predict", "sevi.analyze")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="sevi", description="SEVI / velocity-map imaging tools")
    sub = parser.add_subparsers(dest="command", required=True)
    for entry in SUBCOMMANDS:
        module, _, function = entry.partition(":")
        getattr(importlib.import_module(module), function or "add_parser")(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return int(args.func(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
