"""Throughput of the survey's expert accumulators on recorded routing, at Kimi K2's shape.

    .venv/bin/python benchmarks/routing_accumulators.py [--quick] [--threads 1]

No model runs: a synthetic stream of expert ids shaped like Kimi K2's routing (61 MoE
layers, 384 experts, top-8, vocabulary 163,840; uniform random ids, 8 windows of 256 tokens
per batch) is folded into `ExpertStats`'s counts exactly as a survey folds a router's
selection (load, co-activation, transitions, locality, per-domain load, per-batch MaxVio).
The [layer, expert, vocab] token table is left out at this shape, as in a real survey.
Prints token-layers per second and the time per billion token-layers (target: >= 1M/s on
one core). The ids are drawn before the clock starts.
"""

from __future__ import annotations

import argparse
import time
import warnings

import torch

from interp.survey.accumulators import Accumulators
from interp.survey.batch import collate
from interp.survey.data import Window
from interp.survey.experts import ExpertStats

torch.set_grad_enabled(False)

LAYERS, EXPERTS, TOP_K, VOCAB = 61, 384, 8, 163_840


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--quick", action="store_true", help="2 batches instead of 8")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--seq-len", type=int, default=256)
    parser.add_argument("--batch-size", type=int, default=8)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    n_batches = 2 if args.quick else 8
    facts = {"moe_layers": list(range(LAYERS)), "n_experts": EXPERTS, "top_k": TOP_K,
             "d_vocab": VOCAB}  # fmt: skip
    acc = Accumulators()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the token table's "left out" warning
        stats = ExpertStats(None, acc, ["all"], facts)
    gen = torch.Generator().manual_seed(0)
    stream = []
    for b in range(n_batches):
        windows = [Window(b * args.batch_size + w, "all",
                          torch.randint(VOCAB, (args.seq_len,), generator=gen), 0)
                   for w in range(args.batch_size)]  # fmt: skip
        n = args.batch_size * args.seq_len
        # Distinct experts per token, as a router's top-k gives them.
        chosen = torch.rand(LAYERS, n, EXPERTS, generator=gen).topk(TOP_K, dim=-1).indices
        stream.append((collate(windows, ["all"], 0, "cpu"), chosen))
    start = time.perf_counter()
    for batch, chosen in stream:
        stats.start(batch)
        for i in range(LAYERS):
            stats._count(i, chosen[i])
        stats.finish(batch, None)
    seconds = time.perf_counter() - start
    token_layers = n_batches * args.batch_size * args.seq_len * LAYERS
    assert int(acc.tensors["expert_count"].sum()) == token_layers * TOP_K
    rate = token_layers / seconds
    print(f"shape: {LAYERS} layers x {EXPERTS} experts, top-{TOP_K}, vocab {VOCAB}; "
          f"{args.threads} thread(s)")  # fmt: skip
    print(f"{token_layers:,} token-layers in {seconds:.2f} s: {rate / 1e6:.3f} M token-layers/s "
          f"(target >= 1); {1e9 / rate / 3600:.2f} h per billion token-layers")  # fmt: skip


if __name__ == "__main__":
    main()
