"""What every command shares: loading the model its options name (--model, --device, --dtype,
--n-devices), and printing frames as an aligned table, CSV or JSON."""

from __future__ import annotations

import argparse

from interp.errors import InterpError


def add_format_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--format", choices=["table", "csv", "json"], default="table")


def print_frame(frame, fmt: str = "table", float_digits: int = 3) -> None:
    import pandas as pd

    if fmt == "csv":
        print(frame.to_csv(index=False), end="")
    elif fmt == "json":
        print(frame.to_json(orient="records", indent=1))
    else:
        with pd.option_context("display.width", 200, "display.max_columns", 50):
            print(frame.to_string(index=False, float_format=lambda x: f"{x:.{float_digits}f}"))


def load_model(args: argparse.Namespace):
    """`interp.load` with the model options that `args.add_model_option` parsed."""
    import interp

    return interp.load(args.model, device=args.device, dtype=args.dtype, n_devices=args.n_devices)


def load_text_model(args: argparse.Namespace):
    """`load_model(args)`, refusing a token-only model (the command was given text)."""
    model = load_model(args)
    if model.tokenizer is None:
        raise InterpError(f"{args.model} has no tokenizer: it takes token ids, not text")
    return model
