"""`interp patch CLEAN CORRUPT --answer " Paris" --wrong " Rome"`: activation patching grids.

The numbers come from `interp.runs.patching.patching` (`interp.patching`); this module parses,
prints and writes.
"""

from __future__ import annotations

import argparse
import json

from interp import validate
from interp.cli import args as a
from interp.cli.output import add_format_option, load_text_model, print_frame
from interp.errors import InterpError
from interp.models.zoo import DEFAULT_MODEL

GRIDS = ("resid", "heads", "mlp")
COLUMNS = {"resid": "pos", "heads": "head", "mlp": None}  # the grid's second axis
DISAGREEMENTS = 3  # cells listed where attribution patching strays most from the exact score


def add_parser(sub) -> argparse.ArgumentParser:
    parser = sub.add_parser("patch")
    parser.add_argument("clean", type=a.prompt, help="the prompt whose answer is right")
    parser.add_argument("corrupt", type=a.prompt,
                        help="as many tokens as CLEAN, answering otherwise")  # fmt: skip
    parser.add_argument("--answer", required=True, help='the clean answer token, e.g. " Paris"')
    parser.add_argument("--wrong", default=None,
                        help="the corrupted answer token: the metric is logit(answer) - "
                        "logit(wrong); without it, log p(answer)")  # fmt: skip
    parser.add_argument("--grid", nargs="+", choices=GRIDS, default=list(GRIDS))
    parser.add_argument("--batch-size", type=a.integer(1), default=32,
                        help="patched copies per forward (default 32)")  # fmt: skip
    a.add_model_option(parser, DEFAULT_MODEL)
    parser.add_argument("-o", "--output", default=None, metavar="PATH",
                        help="write every grid as one long frame (.csv or .json)")  # fmt: skip
    add_format_option(parser)
    return parser


def long_frame(frames: dict):
    """Every grid in one tidy frame, with a `grid` column (pos / head empty where not an axis)."""
    import pandas as pd

    parts = [frame.assign(grid=grid) for grid, frame in frames.items()]
    out = pd.concat(parts, ignore_index=True)
    columns = ["grid", "method", "layer", "pos", "token", "head", "score"]
    return out.reindex(columns=[c for c in columns if c in out.columns])


def run(args: argparse.Namespace) -> int:
    from interp.analysis.patching import compare
    from interp.runs.patching import METHODS, patching

    output = None
    if args.output is not None:  # checked before the model loads
        output = validate.output_path(args.output)
        if output.suffix.lower() not in (".csv", ".json"):
            raise InterpError(f"{args.output} must end in .csv or .json")
    model = load_text_model(args)
    result = patching(model, args.clean, args.corrupt, args.answer, args.wrong,
                      grids=args.grid, batch_size=args.batch_size)  # fmt: skip
    tidy = long_frame(result.frames)
    if output is not None:
        from interp.files import write_atomic

        text = (tidy.to_json(orient="records", indent=1) if output.suffix.lower() == ".json"
                else tidy.to_csv(index=False))  # fmt: skip
        write_atomic(output, text)
        print(f"wrote {len(tidy)} rows to {output}")
        return 0
    if args.format == "csv":
        print_frame(tidy, "csv")
        return 0
    if args.format == "json":
        grids = json.loads(tidy.to_json(orient="records"))
        out = {"metric": result.metric, "clean": result.clean, "corrupt": result.corrupt,
               "seconds": result.seconds, "grids": grids}  # fmt: skip
        print(json.dumps(out, indent=1))
        return 0
    print(f"metric: {result.metric}; clean {result.clean:.3f}, corrupted {result.corrupt:.3f}")
    print("scores: 0 = corrupted run, 1 = clean run; tokens:",
          " ".join(repr(t) for t in result.tokens))  # fmt: skip
    for grid, frame in result.frames.items():
        for method in METHODS:
            print(f"\n{grid}, {method} patching (rows: layer):")
            print_frame(grid_view(frame[frame["method"] == method], grid), "table", 2)
        pair, pearson = compare(frame)
        print(f"{grid}: attribution vs activation patching, Pearson {pearson:.3f}; activation "
              f"patching took {result.seconds[grid]:.2f} s; largest gaps:")  # fmt: skip
        print_frame(pair.head(DISAGREEMENTS), "table", float_digits=2)
    print(f"\nattribution patching, every grid (one forward and one backward): "
          f"{result.seconds['attribution']:.2f} s")  # fmt: skip
    return 0


def grid_view(frame, grid: str):
    """One method's scores as the grid: a row per layer, a column per position / head."""
    column = COLUMNS[grid]
    if column is None:
        return frame[["layer", "score"]]
    view = frame.pivot(index="layer", columns=column, values="score")
    view.columns = [f"{column} {c}" for c in view.columns]
    return view.reset_index()
