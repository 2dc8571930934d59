"""What every command shares: loading a model that reads text, and printing frames as an
aligned table, CSV or JSON."""

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


def load_text_model(name: str):
    """`interp.load(name)`, refusing a token-only model (the command was given text)."""
    import interp

    model = interp.load(name)
    if model.tokenizer is None:
        raise InterpError(f"{name} has no tokenizer: it takes token ids, not text")
    return model
