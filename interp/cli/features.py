"""`interp features`: the top features of a token (or of every token) of a prompt, read by
sparse dictionaries (SAEs, transcoders) saved by SAELens or as Gemma Scope's params.npz."""

from __future__ import annotations

import argparse

from interp.cli import args as a
from interp.cli.output import add_format_option, load_text_model, print_frame
from interp.errors import InterpError
from interp.models.zoo import DEFAULT_MODEL


def add_parser(sub) -> argparse.ArgumentParser:
    parser = sub.add_parser(
        "features",
        description="Encode each token's activation with the dictionaries given and print a "
        "token's top features, with the dictionary's reconstruction error there.",
    )
    a.add_prompt(parser)
    parser.add_argument("--features", nargs="+", required=True, metavar="DIR",
                        help="dictionaries: SAELens directories (cfg.json + "
                        "sae_weights.safetensors) or params.npz files")  # fmt: skip
    parser.add_argument("--hook", default=None,
                        help="the hook a params.npz reads (it names none itself)")  # fmt: skip
    parser.add_argument("--position", type=a.integer(), default=None,
                        help="token position, negative from the end (default: last)")  # fmt: skip
    parser.add_argument("--all", action="store_true", help="every token, not one")
    parser.add_argument("--top", type=a.integer(1), default=10, metavar="K",
                        help="features per token (default 10)")  # fmt: skip
    a.add_model_option(parser, DEFAULT_MODEL)
    add_format_option(parser)
    return parser


def run(args: argparse.Namespace) -> int:
    import interp
    from interp.features import load

    if args.all and args.position is not None:
        raise InterpError("give --position or --all, not both")
    dictionaries = [load(path, hook=args.hook) for path in args.features]
    model = load_text_model(args)
    trace = interp.trace(model, args.prompt, capture=[], features=dictionaries,
                         feature_top_k=args.top)  # fmt: skip
    frame, errors = trace.features, trace.feature_error
    if not args.all:
        n = int(errors.pos.max()) + 1
        pos = n - 1 if args.position is None else args.position
        if not -n <= pos < n:
            raise InterpError(f"--position {pos} is outside the prompt's {n} tokens")
        pos %= n
        frame, errors = frame[frame.pos == pos], errors[errors.pos == pos]
    frame = frame.drop(columns="prompt")
    if args.format != "table":
        print_frame(frame, args.format)
        return 0
    for d in dictionaries:
        print(d.describe())
    print_frame(frame)
    print()
    print_frame(errors.drop(columns=["prompt"]))
    return 0
