"""`interp coverage`: which prompt tokens the answer read, with a blocking check.

The numbers come from `interp.runs.coverage.measure` (the report calls the same code); this
module parses and prints.
"""

from __future__ import annotations

import argparse
import json
import sys

from interp.cli import args as a
from interp.cli.output import add_format_option, load_text_model, print_frame
from interp.models.zoo import DEFAULT_MODEL

BAR = 20  # characters of the longest per-token bar when not shading a terminal


def add_parser(sub) -> argparse.ArgumentParser:
    from interp.analysis.coverage import TAU

    parser = sub.add_parser("coverage")
    a.add_prompt(parser)
    parser.add_argument("--generate", type=a.integer(0), default=1, metavar="N",
                        help="greedy tokens to generate and check (default 1)")  # fmt: skip
    a.add_model_option(parser, DEFAULT_MODEL)
    parser.add_argument("--value-weighted", action="store_true",
                        help="weight attention by |v W_O| (Kobayashi et al. 2020)")  # fmt: skip
    parser.add_argument("--tau", type=a.number(low=0, low_open=True), default=TAU,
                        help=f"covered: peak weight >= tau x uniform (default {TAU})")  # fmt: skip
    add_format_option(parser)
    return parser


def shade(rows: list[tuple[str, float | None]], tty: bool) -> str:
    """The prompt with each token's background shaded by its mass (brightest = most), or one
    line per token with a bar when not writing to a terminal. Sinks are underlined / marked."""
    top = max((m for _, m in rows if m is not None), default=0.0) or 1.0
    if tty:
        out = []
        for token, mass in rows:
            text = token.replace("\n", "\u23ce\n")
            if mass is None:
                out.append(f"\x1b[4m{text}\x1b[0m")
                continue
            level = round(23 * mass / top)  # 256-colour grey ramp 232..255
            fg = 30 if level > 12 else 97
            out.append(f"\x1b[48;5;{232 + level}m\x1b[{fg}m{text}\x1b[0m")
        return "".join(out)
    lines = []
    for pos, (token, mass) in enumerate(rows):
        cell = repr(token)  # quoted, so leading spaces and blank tokens show
        if mass is None:
            lines.append(f"{pos:>5} {cell:<16}   sink")
        else:
            lines.append(f"{pos:>5} {cell:<16} {mass:6.3f} {'#' * round(BAR * mass / top)}")
    return "\n".join(lines)


def run(args: argparse.Namespace) -> int:
    from interp.analysis.coverage import TOP_MIN, UNCOVERED_MAX, token_masses
    from interp.runs.coverage import measure

    model = load_text_model(args)
    result = measure(model, args.prompt, generate=args.generate,
                     value_weighted=args.value_weighted, tau=args.tau)  # fmt: skip
    cov, causal = result["coverage"], result["causal"]
    if args.format == "csv":
        print_frame(cov.keys, "csv")
        return 0
    if args.format == "json":
        frames = {"summary": cov.summary, "causal": causal, "keys": cov.keys,
                  "layers": cov.layers, "heads": cov.heads}  # fmt: skip
        out = {name: json.loads(f.to_json(orient="records")) for name, f in frames.items()}
        out["continuation"] = result["continuation"]
        print(json.dumps(out, indent=1))
        return 0
    print(f"continuation: {result['continuation']!r}  (queries: last prompt token + generated "
          "tokens but the last; heads counted per query head)")  # fmt: skip
    print_frame(cov.summary.drop(columns="prompt"), "table")
    print()
    print(shade(token_masses(cov), sys.stdout.isatty()))
    print("\nper layer:")
    print_frame(cov.layers.drop(columns="prompt"), "table")
    print("\ncausal check (teacher-forced log-prob of the continuation, nats):")
    shown = causal.drop(columns="trustworthy").assign(
        greedy_when_blocked=causal["blocked"].map(result["blocked_text"]).map(repr)
    )
    print_frame(shown, "table")
    if causal.set_index("blocked").loc["uncovered", "n_keys"] == 0:
        print("coverage is untested: every key is covered, so there is nothing to block")
        return 0
    verdict = "trustworthy" if causal["trustworthy"].iloc[0] else "not trustworthy"
    print(f"coverage is {verdict}: needs |uncovered delta| <= {UNCOVERED_MAX} and top delta <= "
          f"-{TOP_MIN} nats per continuation token (and some uncovered key to block)")  # fmt: skip
    return 0
