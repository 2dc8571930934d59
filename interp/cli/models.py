"""`interp models`: the embedded models and their shapes."""

from __future__ import annotations

import argparse

from interp.cli.output import add_format_option, print_frame


def add_parser(sub) -> argparse.ArgumentParser:
    parser = sub.add_parser("models", help="list the embedded models")
    add_format_option(parser)
    return parser


def run(args: argparse.Namespace) -> int:
    import pandas as pd

    from interp.models.info import COLUMNS, describe
    from interp.models.zoo import ZOO

    frame = pd.DataFrame([describe(entry) for entry in ZOO.values()], columns=COLUMNS)
    counts = ["layers", "heads", "kv_heads", "experts", "top_k", "d_model", "vocab", "params"]
    frame[counts] = frame[counts].astype("Int64")
    print_frame(frame, args.format)
    return 0
