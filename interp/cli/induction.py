"""`interp induction`: which heads are induction heads, by attention and by ablation.

The numbers come from `interp.runs.induction.induction_heads` (the report shows the same); this
module prints them.
"""

from __future__ import annotations

import argparse
import json

from interp.cli import args as a
from interp.cli.output import add_format_option, load_model, print_frame
from interp.models.zoo import DEFAULT_MODEL


def add_parser(sub) -> argparse.ArgumentParser:
    from interp.runs.induction import DEFAULT_SEQ_LEN

    parser = sub.add_parser(
        "induction",
        description="Feed random tokens repeated once, score every head (induction, previous-"
        "token, duplicate-token, copying), then ablate the top heads, each alone and all "
        "together, against random heads, and measure the loss on the repeat.",
    )
    a.add_model_option(parser, DEFAULT_MODEL)
    parser.add_argument("--seq-len", type=a.integer(), default=None, metavar="N",
                        help=f"random tokens per copy (default {DEFAULT_SEQ_LEN}, or as many as "
                        "the context holds)")  # fmt: skip
    parser.add_argument("--batch", type=a.integer(), default=8, help="probe rows (default 8)")
    parser.add_argument("--seed", type=a.seed, default=0, help="probe and draw seed (default 0)")
    parser.add_argument("--top", type=a.integer(), default=10, metavar="N",
                        help="heads to list and to ablate (default 10)")  # fmt: skip
    add_format_option(parser)
    return parser


def run(args: argparse.Namespace) -> int:
    from interp.runs.induction import MIN_DELTA, SET_RATIO, THRESHOLD, induction_heads

    model = load_model(args)
    result = induction_heads(
        model, seq_len=args.seq_len, batch=args.batch, seed=args.seed, top=args.top
    )
    heads, effects = result["heads"], result["effects"]
    if args.format == "csv":
        print_frame(heads, "csv")
        return 0
    if args.format == "json":
        frames = ("heads", "null", "ablation", "effects")
        out = {name: json.loads(result[name].to_json(orient="records")) for name in frames}
        out.update(losses=result["losses"], probe=result["probe"], threshold=THRESHOLD,
                   min_delta=MIN_DELTA, set_ratio=SET_RATIO)  # fmt: skip
        print(json.dumps(out, indent=1))
        return 0
    p, losses = result["probe"], result["losses"]
    sink = f"token {p['sink']} (sink) + " if p["sink"] is not None else ""
    print(f"probe: {p['batch']} rows of {sink}{p['seq_len']} random tokens (ids {p['low']}.."
          f"{p['high'] - 1}) repeated once, seed {p['seed']}")  # fmt: skip
    print(f"loss per token: first copy {losses['first_copy_loss']:.3f}, second copy "
          f"{losses['second_copy_loss']:.3f} nats")  # fmt: skip
    print(f"\ntop {len(heads)} heads by induction score (ablation_delta: second-copy loss rise "
          f"when the head alone is mean-ablated, for scores >= {THRESHOLD}):")  # fmt: skip
    print_frame(heads, "table")
    null = ", ".join(f"{h} {d:+.3f}" for h, d in zip(result["null"]["head"],
                                                     result["null"].ablation_delta))  # fmt: skip
    print(f"random single heads, mean-ablated: {null}")
    ablation = result["ablation"]
    k = ablation.k.iloc[1]
    print(f"\nsecond-copy loss with the top {k} heads ablated vs {k} random heads:")
    print_frame(ablation, "table")
    for row in effects.itertuples():
        verdict = "confirmed" if row.confirmed else "NOT confirmed"
        print(f"{row.mode} ablation: top {k} {row.top_delta:+.3f} vs random max "
              f"{row.random_max:+.3f} (mean {row.random_mean:+.3f}): {verdict} "
              f"(needs > {SET_RATIO:g}x the random max)")  # fmt: skip
    flagged = heads[heads.induction_head]
    found = " ".join(f"{a}.{b}" for a, b in zip(flagged.layer, flagged["head"])) or "none"
    print(f"\ninduction heads: {found}  (score >= {THRESHOLD} and ablation_delta >= "
          f"{MIN_DELTA} and above every random single head)")  # fmt: skip
    return 0
