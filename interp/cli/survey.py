"""`interp survey`: expert, head and layer statistics of a model over a whole corpus.

Runs as one process or under `torchrun --nproc-per-node N` (each rank reads its own
documents, rank 0 writes). The output is a directory of parquet tables plus meta.json;
`interp report --survey DIR` renders it.
"""

from __future__ import annotations

import argparse
import shlex

from interp.cli.output import print_frame
from interp.errors import InterpError


def add_parser(sub) -> argparse.ArgumentParser:
    parser = sub.add_parser(
        "survey",
        help="expert / head / layer statistics over a corpus (resumable, torchrun-ready)",
        description="Stream a corpus through the model and count, in constant memory, how its "
        "experts are used, what its heads do and what its layers write. Without --data: the "
        "held-out corpus the zoo models were trained on.",
    )
    parser.add_argument("--model", default="tiny-moe",
                        help="a zoo name or model directory; with --routing also a config.json "
                        "(no weights are loaded)")  # fmt: skip
    parser.add_argument("--data", nargs="+", default=[], metavar="PATH",
                        help="text, .jsonl / .parquet (text, domain), datasets dir")  # fmt: skip
    parser.add_argument("--seq-len", type=int, default=256, help="window length (default 256)")
    parser.add_argument("--batch-size", type=int, default=8, help="windows per batch (default 8)")
    parser.add_argument("--tokens", type=int, default=None, metavar="N", help="stop after N tokens")
    parser.add_argument("--stats", default=None,
                        help="experts,heads,layers (default: all the model has)")  # fmt: skip
    parser.add_argument("--out", default=None, metavar="DIR",
                        help="output directory (default reports/survey-MODEL)")  # fmt: skip
    parser.add_argument("--checkpoint-every", type=int, default=50, metavar="N",
                        help="batches between checkpoints (default 50)")  # fmt: skip
    parser.add_argument("--seed", type=int, default=0, help="seed of the split halves (default 0)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    parser.add_argument("--features", nargs="+", default=[], metavar="DIR",
                        help="dictionaries (SAELens directories): also count each feature's "
                        "frequency and top contexts")  # fmt: skip
    parser.add_argument("--routing", nargs="+", default=[], metavar="PATH",
                        help="survey recorded routing instead of running the model: vLLM / "
                        "SGLang .jsonl, .npz / .parquet shards, or their directories")  # fmt: skip
    parser.add_argument("--export-routing", default=None, metavar="FILE",
                        help="write the model's routing over the corpus (.jsonl, .npz, "
                        ".parquet; vLLM's layout) instead of surveying")  # fmt: skip
    return parser


def run(args: argparse.Namespace) -> int:
    import interp
    from interp.survey.distributed import is_main

    stats = None if args.stats is None else [s.strip() for s in args.stats.split(",") if s.strip()]
    if stats is not None and not stats:
        raise InterpError("--stats names no statistic")
    if args.routing or args.export_routing:
        return _routing(args, stats)
    out = args.out or f"reports/survey-{args.model.replace('/', '_')}"
    model = interp.load(args.model)
    result = interp.survey(
        model, args.data, stats=stats, seq_len=args.seq_len, batch_size=args.batch_size,
        tokens=args.tokens, out=out, checkpoint_every=args.checkpoint_every, seed=args.seed,
        progress=not args.no_progress, command=command_line(args, out), features=args.features,
    )  # fmt: skip
    if not is_main():
        return 0
    if "expert_layers" in result.tables:
        print_frame(result.expert_layers[["layer", "tokens", "balance", "max_vio", "dead"]])
    if "feature_summary" in result.tables:
        print_frame(result.feature_summary)
    print(out)
    return 0


def _routing(args: argparse.Namespace, stats) -> int:
    """--routing: a survey of recorded routing; --export-routing: the model's routing."""
    import interp
    from interp.survey import export_routing, from_routing
    from interp.survey.distributed import is_main

    if args.routing and args.export_routing:
        raise InterpError("--routing reads routing and --export-routing writes it: give one")
    if args.export_routing:
        model = interp.load(args.model)
        path = export_routing(model, args.export_routing, args.data, seq_len=args.seq_len,
                              batch_size=args.batch_size, tokens=args.tokens)  # fmt: skip
        print(path)
        return 0
    given = [name for name, value in [("--data", args.data), ("--features", args.features),
             ("--tokens", args.tokens), ("--stats", stats)] if value]  # fmt: skip
    if given:
        raise InterpError(f"{given[0]} does not apply to --routing (recorded routing is "
                          "counted whole, experts only)")  # fmt: skip
    name = args.model.replace("/", "_").removesuffix(".json")
    out = args.out or f"reports/survey-routing-{name}"
    words = ["interp", "survey", "--routing", *args.routing, "--model", args.model, "--out", out,
             "--batch-size", str(args.batch_size), "--seed", str(args.seed)]  # fmt: skip
    result = from_routing(args.routing, args.model, batch_size=args.batch_size, seed=args.seed,
                          out=out, command=shlex.join(words),
                          progress=not args.no_progress)  # fmt: skip
    if is_main():
        print_frame(result.expert_layers[["layer", "tokens", "max_vio", "dead"]])
        print(f"absent: {result.meta['absent']}")
        print(out)
    return 0


def command_line(args: argparse.Namespace, out: str) -> str:
    """The command with every default spelled out, so meta.json's line re-runs exactly."""
    words = ["interp", "survey", "--model", args.model]
    words += ["--data", *args.data] if args.data else []
    words += ["--seq-len", str(args.seq_len), "--batch-size", str(args.batch_size)]
    words += ["--tokens", str(args.tokens)] if args.tokens is not None else []
    words += ["--stats", args.stats] if args.stats is not None else []
    words += ["--out", out, "--checkpoint-every", str(args.checkpoint_every)]
    words += ["--features", *args.features] if args.features else []
    return shlex.join([*words, "--seed", str(args.seed)])
