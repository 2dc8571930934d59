"""What every experiment script shares: its common options, the line that reproduces a run, and
a one-line exit on a user mistake."""

from __future__ import annotations

import argparse
import shlex
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

from interp import validate
from interp.errors import InterpError


def parser(doc: str, name: str, *, model: str, seed_help: str,
           quick_help: str = "seconds-long smoke run") -> argparse.ArgumentParser:  # fmt: skip
    """--model (with --device, --dtype, --n-devices), --seed, --quick and --out (default
    reports/NAME.png); the script adds its own."""
    from interp.cli.args import add_model_option

    out = argparse.ArgumentParser(description=doc.splitlines()[0], allow_abbrev=False)
    add_model_option(out, model)
    out.add_argument("--seed", type=int, default=0, help=seed_help)
    out.add_argument("--quick", action="store_true", help=quick_help)
    out.add_argument("--out", type=Path, default=Path("reports") / f"{name}.png")
    return out


QUICK_WINDOWS = 4  # held-out windows per domain under --quick


def add_windows(parser: argparse.ArgumentParser, help: str, default: int = 48) -> None:
    """--windows: held-out windows per domain, for the experiments that compare domains."""
    parser.add_argument("--windows", type=int, default=default, help=help)


def check_windows(args: argparse.Namespace) -> None:
    """--quick takes QUICK_WINDOWS; fewer than 2 leave no halves to measure the noise floor."""
    if args.quick:
        args.windows = QUICK_WINDOWS
    if args.windows < 2:
        raise InterpError("--windows must be >= 2 (the noise floor splits each domain in two)")


def start(args: argparse.Namespace, argv: Sequence[str] | None = None):
    """Print the seed and command that reproduce this run, then load the model (no gradients)."""
    import torch

    from interp.cli.output import load_model

    validate.output_path(args.out)  # before the model loads: a mistake costs nothing
    print(f"seed {args.seed}; command: {shlex.join(sys.argv if argv is None else argv)}")
    torch.set_grad_enabled(False)
    return load_model(args)


def run_script(main: Callable[[], object]) -> None:
    """Run an experiment's `main`; a user mistake prints one line and exits 2."""
    try:
        main()
    except InterpError as exc:
        print(f"{Path(sys.argv[0]).name}: error: {exc}", file=sys.stderr)
        sys.exit(exc.exit_code)
