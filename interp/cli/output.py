"""Printing frames the way every command does: an aligned table, CSV or JSON."""

from __future__ import annotations

import argparse

import pandas as pd


def add_format_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--format", choices=["table", "csv", "json"], default="table")


def print_frame(frame: pd.DataFrame, fmt: str = "table", float_digits: int = 3) -> None:
    if fmt == "csv":
        print(frame.to_csv(index=False), end="")
    elif fmt == "json":
        print(frame.to_json(orient="records", indent=1))
    else:
        with pd.option_context("display.width", 200, "display.max_columns", 50):
            print(frame.to_string(index=False, float_format=lambda x: f"{x:.{float_digits}f}"))
