"""`interp journey`: follow one token position through every layer to the sampling boundary."""

from __future__ import annotations

import argparse

from interp.cli import args as a
from interp.cli.output import add_format_option, load_text_model, print_frame
from interp.models.zoo import DEFAULT_MODEL


def add_parser(sub) -> argparse.ArgumentParser:
    parser = sub.add_parser("journey")
    a.add_prompt(parser)
    parser.add_argument("--position", type=a.integer(), default=None,
                        help="token position (default: last prompt token)")  # fmt: skip
    a.add_model_option(parser, DEFAULT_MODEL)
    parser.add_argument(
        "--generate", type=a.integer(0), default=1, metavar="N",
        help="tokens to generate greedily, so the boundary shows the sampling step (default 1)",
    )  # fmt: skip
    add_format_option(parser)
    return parser


def run(args: argparse.Namespace) -> int:
    import interp
    from interp.analysis.journey import format_journey, journey

    model = load_text_model(args)
    trace = interp.trace(
        model,
        args.prompt,
        max_new_tokens=args.generate,
        capture=("residual", "attention", "routing"),
    )
    frame = journey(trace, position=args.position)
    if args.format == "table":
        print(format_journey(frame))
    else:
        print_frame(frame, args.format)
    return 0
