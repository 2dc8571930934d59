"""The `interp` command: parses arguments and calls the library; user mistakes exit 2."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from interp.errors import InterpError

# Each module defines `add_parser(subparsers)` and `run(args) -> int`.
COMMANDS = ["models", "generate", "journey", "coverage", "induction", "experts", "survey", "report"]


def build_parser() -> argparse.ArgumentParser:
    import importlib

    parser = argparse.ArgumentParser(
        prog="interp", description="Follow a token through a transformer and measure each step."
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name in COMMANDS:
        module = importlib.import_module(f"interp.cli.{name}")
        module.add_parser(sub).set_defaults(run=module.run)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return args.run(args)
    except InterpError as exc:
        print(f"interp: error: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print("interp: interrupted", file=sys.stderr)
        return 130
