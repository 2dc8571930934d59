"""`interp journey`: follow one token position through every layer to the sampling boundary."""

from __future__ import annotations

import argparse

from interp.cli.output import add_format_option, load_text_model, print_frame
from interp.errors import InterpError
from interp.models.zoo import DEFAULT_MODEL


def add_parser(sub) -> argparse.ArgumentParser:
    parser = sub.add_parser(
        "journey", help="one token's journey: norms, writes, sources, lens, sampling"
    )
    parser.add_argument("prompt")
    parser.add_argument(
        "--position", type=int, default=None, help="token position (default: last prompt token)"
    )
    parser.add_argument("--model", default=DEFAULT_MODEL)
    parser.add_argument(
        "--generate", type=int, default=1, metavar="N",
        help="tokens to generate greedily, so the boundary shows the sampling step (default 1)",
    )  # fmt: skip
    add_format_option(parser)
    return parser


def run(args: argparse.Namespace) -> int:
    import interp
    from interp.analysis.journey import format_journey, journey

    if not args.prompt.strip():
        raise InterpError("the prompt is empty")
    if args.generate < 0:
        raise InterpError("--generate must be >= 0")
    model = load_text_model(args.model)
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
