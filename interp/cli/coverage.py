"""`interp coverage`: which prompt tokens carried the answer (key attribution, checked by
blocking), then which the answer read (attention mass), with a blocking check.

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
TOP_SHOWN = 10  # prompt tokens listed by attribution


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


def print_attribution(keys, summary) -> None:
    """The headline: the log p each prompt token supplies through attention, estimated for all
    by attribution patching and checked by blocking each of the top ones alone."""
    from interp.analysis.key_attribution import MOVES

    print("\nkey attribution: log p of the continuation each prompt token supplies through "
          "attention (gradient x blocked attention edges, one forward + one backward); exact: "
          "measured by blocking that token alone from the answering positions")  # fmt: skip
    ranked = keys.dropna(subset=["rank"]).sort_values("rank").head(TOP_SHOWN)
    shown = ranked.assign(token=ranked["token"].map(repr))
    print_frame(shown[["rank", "pos", "token", "attribution", "exact", "covered"]], "table")
    print(f"Spearman rank correlation, attribution vs exact, over the {summary['checked']} "
          f"blocked tokens: {summary['spearman']:.3f}")  # fmt: skip
    if not summary["covered"]:
        print(f"no single token's block moves log p by {MOVES} nats: no covered keys")
        return
    covered = keys[keys["covered"]]
    names = " ".join(f"{t!r}@{p}" for p, t in zip(covered["pos"], covered["token"]))
    change = "changes" if summary["flipped"] else "keeps"
    print(f"covered keys (blocking one alone moves log p by >= {MOVES} nats): {names}")
    print(f"blocking them all: log p {summary['baseline']:.3f} -> "
          f"{summary['blocked_logprob']:.3f}; greedy continuation "
          f"{summary['greedy_when_blocked']!r}, which {change} the answer")  # fmt: skip


def run(args: argparse.Namespace) -> int:
    from interp.analysis.coverage import TOP_MIN, UNCOVERED_MAX, token_masses
    from interp.runs.coverage import measure

    model = load_text_model(args)
    result = measure(model, args.prompt, generate=args.generate,
                     value_weighted=args.value_weighted, tau=args.tau)  # fmt: skip
    cov, causal = result["coverage"], result["causal"]
    attribution, att_summary = result["attribution"], result["attribution_summary"]
    if args.format == "csv":  # one row per prompt position: attribution, then attention mass
        merged = attribution.merge(cov.keys.drop(columns=["token", "sink", "covered"]),
                                   on=["prompt", "pos"])  # fmt: skip
        print_frame(merged, "csv")
        return 0
    if args.format == "json":
        frames = {"attribution": attribution, "attribution_summary": att_summary,
                  "summary": cov.summary, "causal": causal, "keys": cov.keys,
                  "layers": cov.layers, "heads": cov.heads}  # fmt: skip
        out = {name: json.loads(f.to_json(orient="records")) for name, f in frames.items()}
        out["continuation"] = result["continuation"]
        print(json.dumps(out, indent=1))
        return 0
    print(f"continuation: {result['continuation']!r}  (queries: last prompt token + generated "
          "tokens but the last; heads counted per query head)")  # fmt: skip
    print_attribution(attribution, att_summary.iloc[0])
    print("\nattention mass (a secondary view: attention is not explanation):")
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
