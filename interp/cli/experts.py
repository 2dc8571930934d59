"""`interp experts`: how an MoE model spreads the prompts' tokens over its experts.

The numbers come from `interp.runs.experts.measure` (one trace of the prompts, then
`interp.analysis.experts` on its routing frame).
"""

from __future__ import annotations

import argparse
import json

from interp.cli import args as a
from interp.cli.output import add_format_option, load_model, print_frame


def add_parser(sub) -> argparse.ArgumentParser:
    parser = sub.add_parser(
        "experts",
        description="Trace the prompts through an MoE model and measure, per layer, how evenly "
        "the router spreads tokens over experts, how often consecutive tokens share experts, "
        "and how differently the labelled domains route.",
    )
    a.add_prompts(parser)
    a.add_model_option(parser, "tiny-moe")
    parser.add_argument(
        "--domain", nargs="+", metavar="LABEL",
        help="a label per prompt (default: each prompt its own domain)",
    )  # fmt: skip
    parser.add_argument(
        "--top", type=a.integer(), default=3, help="experts listed per domain (default 3)"
    )
    add_format_option(parser)
    return parser


def run(args: argparse.Namespace) -> int:
    from interp.runs.experts import check, measure

    check(args.prompts, args.domain, args.top)
    model = load_model(args)
    result = measure(model, args.prompts, args.domain, args.top)
    if args.format == "csv":
        print_frame(result["layers"], "csv")
        return 0
    if args.format == "json":
        names = ("layers", "overall", "domains", "divergence")
        out = {n: json.loads(result[n].to_json(orient="records")) for n in names
               if result[n] is not None}  # fmt: skip
        out["labels"] = result["labels"]
        out["tokens"] = {d: int(n) for d, n in result["tokens"].items()}
        print(json.dumps(out, indent=1))
        return 0
    cfg = result["facts"]
    print(f"{args.model}: {cfg.n_experts} experts per layer, top-{cfg.top_k}, MoE layers "
          f"{cfg.moe_layers}; chance overlap of two tokens' sets k/N = "
          f"{cfg.top_k / cfg.n_experts:.3f}")  # fmt: skip
    print("\nper layer (balance 1 and entropy 1 = uniform; overlap: consecutive tokens' shared "
          "experts, ratio = overlap / chance;\nmutual_information: nats shared with the next "
          "layer's choice):")  # fmt: skip
    print_frame(result["layers"], "table")
    print("\nmean over layers (dead: summed; with few tokens, an expert can be unused by chance):")
    print_frame(result["overall"], "table")
    print(f"\ntop {args.top} experts per domain (load = share of the domain's assignments):")
    top = result["domains"]
    picks = [f"{e:>3} ({load:.2f})" for e, load in zip(top.expert, top.load, strict=True)]
    table = top.assign(pick=picks)
    wide = table.groupby(["layer", "domain"])["pick"].agg("  ".join).unstack("domain")
    print(wide.to_string())
    if result["divergence"] is not None:
        counts = ", ".join(f"{d} {n}" for d, n in result["tokens"].sort_index().items())
        print("\nJensen-Shannon divergence between domains' expert loads (bits; 0 = same, 1 = "
              f"disjoint).\nTokens: {counts}. Small samples differ by chance too: "
              "experiments/moe_routing.py measures that noise\nby splitting one domain in "
              "half.")  # fmt: skip
        print_frame(result["divergence"], "table")
    return 0
