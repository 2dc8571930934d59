"""`interp generate`: greedy or sampled continuation of a prompt on any model.

Sampling goes through `interp.Sampling`, as in `interp report`: the same seed and options give
the same tokens in both.
"""

from __future__ import annotations

import argparse
import json

from interp.cli import args as a
from interp.cli.output import load_text_model
from interp.models.zoo import DEFAULT_MODEL


def add_parser(sub) -> argparse.ArgumentParser:
    parser = sub.add_parser("generate")
    a.add_prompt(parser)
    a.add_model_option(parser, DEFAULT_MODEL)
    parser.add_argument("-n", "--max-new-tokens", type=a.integer(1), default=20, metavar="N",
                        help="tokens to generate, >= 1 (default 20)")  # fmt: skip
    parser.add_argument("--chat", action="store_true", help="wrap the prompt in the chat template")
    parser.add_argument("--temperature", type=a.number(low=0), default=0.0,
                        help="0 (default) decodes greedily")  # fmt: skip
    parser.add_argument("--top-k", type=a.integer(0), default=0,
                        help="sample among the k likeliest tokens (default 0: all)")  # fmt: skip
    parser.add_argument("--top-p", type=a.number(low=0, high=1, low_open=True), default=1.0,
                        help="sample among the fewest tokens holding this mass")  # fmt: skip
    parser.add_argument("--seed", type=a.seed, default=0, help="sampling seed (default 0)")
    parser.add_argument("--format", choices=["text", "json"], default="text")
    return parser


def run(args: argparse.Namespace) -> int:
    import interp
    from interp.text import decode

    model = load_text_model(args)
    text = interp.prompts.format_prompt(model.tokenizer, args.prompt, chat=args.chat)
    sampling = interp.Sampling(
        temperature=args.temperature, top_k=args.top_k, top_p=args.top_p, seed=args.seed
    )
    trace = interp.trace(model, text, max_new_tokens=args.max_new_tokens, sampling=sampling,
                         capture=())  # fmt: skip
    record = trace.records[0]
    new_ids = record.ids[record.n_prompt :].tolist()
    continuation = decode(model.tokenizer, new_ids)
    if args.format == "json":
        out = {"model": args.model, "prompt": text, "continuation": continuation,
               "tokens": new_ids, "sampling": sampling.as_dict()}  # fmt: skip
        print(json.dumps(out, ensure_ascii=False, indent=1))
    else:
        print(text + continuation)
    return 0
