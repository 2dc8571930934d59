"""Cost of a survey, side by side with transformers' plain forward over the same batches.

    .venv/bin/python benchmarks/survey.py [--quick] [--model tiny-moe] [--tokens 20000]

Prints: tokens/s of `interp.survey` (experts, heads and layers statistics on, corpus reading
and tokenization included) against the model's own Hugging Face forward over the very same
padded batches (target >= 0.8x); and the survey's peak memory at N and 10 N tokens (target:
within 10%, the accumulators do not grow with tokens).
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))
from capture import peak_rss_above  # noqa: E402

import interp  # noqa: E402
from interp.corpus import corpus  # noqa: E402
from interp.survey.batch import collate  # noqa: E402
from interp.survey.data import Corpus, batches, bos_token, windows  # noqa: E402

torch.set_grad_enabled(False)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--quick", action="store_true", help="fewer tokens, one repeat")
    parser.add_argument("--model", default="tiny-moe")
    parser.add_argument("--tokens", type=int, default=None)
    parser.add_argument("--seq-len", type=int, default=256)
    parser.add_argument("--batch-size", type=int, default=8)
    args = parser.parse_args()
    tokens = args.tokens or (5_000 if args.quick else 20_000)
    repeats = 1 if args.quick else 3
    model = interp.load(args.model)
    with tempfile.TemporaryDirectory() as tmp:
        # The training split: large enough for 10 N tokens (the held-out part has ~195k).
        data = Path(tmp) / "train.jsonl"
        data.write_text("".join(json.dumps({"text": t, "domain": d}) + "\n"
                                for d, t in corpus("train")))  # fmt: skip
        # stats=None: every statistic the model can give (experts, heads, layers on an MoE).
        settings = dict(seq_len=args.seq_len, batch_size=args.batch_size)
        ids = [collate(b, ["code", "prose", "numbers"], 0, "cpu").ids for b in batches(
            windows(Corpus([data]), model.tokenizer, args.seq_len, bos_token(model), tokens),
            args.batch_size)]  # fmt: skip
        hf = model.original_model

        def plain():
            for batch in ids:
                hf(batch)

        def survey(n=tokens):
            interp.survey(model, data, tokens=n, **settings)

        t_plain, t_survey = [], []
        plain()  # warm-up
        for _ in range(repeats):  # interleaved, so load on the machine hits both alike
            t_plain.append(_timed(plain))
            t_survey.append(_timed(survey))
        plain_rate, survey_rate = tokens / min(t_plain), tokens / min(t_survey)
        # Warm-up at 10 N: bounded caches (the tokenizer's word cache, the allocator's pools)
        # fill up once, so the two measurements below compare the survey's own growth.
        survey(10 * tokens)
        small = peak_rss_above(lambda: survey(tokens))
        large = peak_rss_above(lambda: survey(10 * tokens))
    print(f"model {args.model}, {tokens:,} tokens, seq_len {args.seq_len}, batch "
          f"{args.batch_size}, all statistics, best of {repeats}")  # fmt: skip
    print(f"{'measure':<38}{'value':>14}")
    print(f"{'transformers forward (tok/s)':<38}{plain_rate:>14,.0f}")
    print(f"{'survey (tok/s)':<38}{survey_rate:>14,.0f}")
    print(f"{'survey / forward (target >= 0.8)':<38}{survey_rate / plain_rate:>14.2f}")
    print(f"{f'peak memory at {tokens:,} tokens (GB)':<38}{small:>14.3f}")
    print(f"{f'peak memory at {10 * tokens:,} tokens (GB)':<38}{large:>14.3f}")
    print(f"{'ratio (target within 1.10)':<38}{large / max(small, 1e-9):>14.2f}")


def _timed(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


if __name__ == "__main__":
    main()
