"""`interp models`: the embedded models and their shapes."""

from __future__ import annotations

import argparse

from interp.cli.output import add_format_option, print_frame


def add_parser(sub) -> argparse.ArgumentParser:
    parser = sub.add_parser("models")
    parser.add_argument("--verify", action="store_true",
                        help="rehash cached conversions in full; remove damaged ones")  # fmt: skip
    add_format_option(parser)
    return parser


def run(args: argparse.Namespace) -> int:
    import pandas as pd

    from interp.models.info import COLUMNS, describe
    from interp.models.zoo import ZOO

    rows = [describe(entry, verify=args.verify) for entry in ZOO.values()]
    frame = pd.DataFrame(rows, columns=COLUMNS + (["verified"] if args.verify else []))
    counts = ["layers", "heads", "kv_heads", "experts", "top_k", "d_model", "vocab", "params"]
    frame[counts] = frame[counts].astype("Int64")
    print_frame(frame, args.format)
    return 0
