"""Cost of a survey, side by side with transformers' plain forward over the same batches.

    .venv/bin/python benchmarks/survey.py [--quick] [--models tiny-moe,smollm2-135m]

Prints, per model: tokens/s of `interp.survey` (every statistic the model can give: experts,
heads and layers on an MoE; corpus reading and tokenization included) against the model's
own Hugging Face forward over the very same padded batches (target >= 0.8x), interleaved
and best of the repeats. Then, on the first model, peak memory at N and 10 N tokens (target:
within 10%), twice: with glibc's defaults, beside the plain forward's own peak, and in a
child process whose glibc hands freed memory straight back (MALLOC_TRIM_THRESHOLD_=0,
MALLOC_MMAP_THRESHOLD_=65536). By default glibc keeps freed blocks at its discretion, so the
resident size after a batch wanders by tens of MB from batch to batch, and a run of 10x the
batches peaks higher only because it draws 10x the samples; the second measurement follows
the memory the survey keeps live.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
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

# Tokens per model for the speed rows (full, quick): smollm2 runs ~500 tokens/s here.
TOKENS = {"tiny-moe": (20_000, 5_000), "smollm2-135m": (4_096, 1_024)}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--quick", action="store_true", help="fewer tokens, one repeat")
    parser.add_argument("--models", default="tiny-moe,smollm2-135m")
    parser.add_argument("--seq-len", type=int, default=256)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--memory-only", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    repeats = 1 if args.quick else 3
    if args.memory_only:
        print(json.dumps(run(args, repeats, speed=False)[1]))
        return
    rows, (name, tokens, memory) = run(args, repeats, speed=True)
    env = {**os.environ, "MALLOC_TRIM_THRESHOLD_": "0", "MALLOC_MMAP_THRESHOLD_": "65536"}
    child = subprocess.run([sys.executable, __file__, "--memory-only", *sys.argv[1:]], env=env,
                           check=True, capture_output=True, text=True)  # fmt: skip
    returned = json.loads(child.stdout.splitlines()[-1])[2]
    print(f"seq_len {args.seq_len}, batch {args.batch_size}, every statistic the model gives, "
          f"best of {repeats}")  # fmt: skip
    print(f"{'model':<16}{'tokens':>8}{'forward tok/s':>15}{'survey tok/s':>14}"
          f"{'survey/forward':>16}")  # fmt: skip
    for model, n, plain, survey in rows:
        print(f"{model:<16}{n:>8,}{plain:>15,.0f}{survey:>14,.0f}{survey / plain:>16.2f}")
    print("target: survey/forward >= 0.8\n")
    print(f"peak memory (GB) on {name:<22}{f'{tokens:,} tok':>12}{f'{10 * tokens:,} tok':>12}"
          f"{'ratio':>8}")  # fmt: skip
    lines = [("survey, glibc defaults", memory[0], memory[1]),
             ("plain forward, glibc defaults", memory[2], memory[3]),
             ("survey, freed memory returned", returned[0], returned[1])]  # fmt: skip
    for label, a, b in lines:
        print(f"{label:<42}{a:>12.3f}{b:>12.3f}{b / a:>8.2f}")
    print("target: survey ratio within 1.10")


def run(args, repeats: int, speed: bool):
    """Speed rows per model (when `speed`) and (model, N, memory) of the first model."""
    with tempfile.TemporaryDirectory() as tmp:
        # The training split: large enough for 10 N tokens (the held-out part has ~195k).
        data = Path(tmp) / "train.jsonl"
        data.write_text("".join(json.dumps({"text": t, "domain": d}) + "\n"
                                for d, t in corpus("train")))  # fmt: skip
        rows, memory = [], None
        for i, name in enumerate(args.models.split(",")):
            tokens = TOKENS.get(name, (4_096, 1_024))[args.quick]
            bench = Bench(interp.load(name), data, tokens, args.seq_len, args.batch_size)
            if speed:
                rows.append((name, tokens, *bench.speed(repeats)))
            if i == 0:
                memory = (name, tokens, bench.memory())
            if not speed:
                break
    return rows, memory


class Bench:
    def __init__(self, model, data: Path, tokens: int, seq_len: int, batch_size: int):
        self.model, self.data, self.tokens = model, data, tokens
        self.settings = dict(seq_len=seq_len, batch_size=batch_size)

    def batches(self, tokens: int) -> list[torch.Tensor]:
        stream = windows(Corpus([self.data]), self.model.tokenizer, self.settings["seq_len"],
                         bos_token(self.model), tokens)  # fmt: skip
        return [collate(b, ["code", "prose", "numbers"], 0, "cpu").ids
                for b in batches(stream, self.settings["batch_size"])]  # fmt: skip

    def plain(self, ids: list[torch.Tensor]) -> None:
        for batch in ids:
            self.model.original_model(batch)

    def survey(self, tokens: int) -> None:
        interp.survey(self.model, self.data, tokens=tokens, **self.settings)

    def speed(self, repeats: int) -> tuple[float, float]:
        ids = self.batches(self.tokens)
        self.plain(ids)  # warm-up
        self.survey(self.tokens)
        t_plain, t_survey = [], []
        for _ in range(repeats):  # interleaved, so load on the machine hits both alike
            t_plain.append(_timed(lambda: self.plain(ids)))
            t_survey.append(_timed(lambda: self.survey(self.tokens)))
        return self.tokens / min(t_plain), self.tokens / min(t_survey)

    def memory(self) -> tuple[float, float, float, float]:
        n = self.tokens
        small, large = self.batches(n), self.batches(10 * n)
        # Warm-up at 10 N: bounded caches (the tokenizer's word cache, the allocator's pools)
        # fill up once, so the measurements compare growth with tokens.
        self.survey(10 * n)
        self.plain(large)
        return (peak_rss_above(lambda: self.survey(n)), peak_rss_above(lambda: self.survey(10 * n)),
                peak_rss_above(lambda: self.plain(small)),
                peak_rss_above(lambda: self.plain(large)))  # fmt: skip


def _timed(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


if __name__ == "__main__":
    main()
