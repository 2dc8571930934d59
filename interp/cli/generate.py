"""`interp generate`: greedy or sampled continuation of a prompt on any model."""

from __future__ import annotations

import argparse

from interp.cli.output import add_model_options, load_text_model
from interp.errors import InterpError


def add_parser(sub) -> argparse.ArgumentParser:
    parser = sub.add_parser("generate", help="continue a prompt")
    parser.add_argument("prompt")
    add_model_options(parser)
    parser.add_argument("-n", "--max-new-tokens", type=int, default=20)
    parser.add_argument("--chat", action="store_true", help="wrap the prompt in the chat template")
    return parser


def run(args: argparse.Namespace) -> int:
    import torch

    import interp

    if not args.prompt.strip():
        raise InterpError("the prompt is empty")
    if args.max_new_tokens < 0:
        raise InterpError("--max-new-tokens must be >= 0")
    model = load_text_model(args)
    text = interp.prompts.format_prompt(model.tokenizer, args.prompt, chat=args.chat)
    ids = model.tokenizer(text, return_tensors="pt", add_special_tokens=False)["input_ids"]
    with torch.no_grad():
        out = model.generate(ids, max_new_tokens=args.max_new_tokens, do_sample=False,
                             return_type="tokens", verbose=False)  # fmt: skip
    print(text + model.tokenizer.decode(out[0, ids.shape[1] :]))
    return 0
