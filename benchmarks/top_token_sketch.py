"""Top tokens per expert at Kimi K2's shape: the Misra-Gries summaries' memory and speed.

61 MoE layers x 384 experts, vocab 163,840, top-8: the exact [layer, expert, vocab] int64
table would take 30.7 GB. A synthetic routing stream of that shape (Zipf token ids, each token
routed to 8 distinct experts near one it prefers, so that experts do have top tokens) is fed
to `interp.survey.top_tokens.TopTokens`, layer by layer as the survey feeds it; the script
prints the bytes of the sketch state, the peak RSS of the process, the throughput of the
counting (token-layers per second), two ranks' states merged, and the error bound reached.

    taskset -c 0 python benchmarks/top_token_sketch.py            # a few minutes
    taskset -c 0 python benchmarks/top_token_sketch.py --quick
"""

from __future__ import annotations

import argparse
import resource
import time

import torch

from interp.survey import top_tokens as tt
from interp.survey.accumulators import Accumulators

LAYERS, EXPERTS, VOCAB, TOP_K = 61, 384, 163_840, 8
GiB = 2**30


def rss() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # Linux: KiB


def stream(batches: int, tokens: int, seed: int):
    """(layer, token ids [tokens], experts [tokens, 8]) for each layer of each batch, drawn a
    layer at a time so that the stream itself holds little memory."""
    gen = torch.Generator().manual_seed(seed)
    zipf = 1.0 / torch.arange(1, VOCAB + 1, dtype=torch.float64) ** 1.1
    for _ in range(batches):
        ids = torch.multinomial(zipf, tokens, replacement=True, generator=gen)
        for layer in range(LAYERS):
            prefer = (ids * 2654435761 + layer * 97) % EXPERTS
            # Steps of 1..47 (8 x 47 < 384): the 8 experts of a token are distinct.
            steps = torch.randint(1, 48, (tokens, TOP_K), generator=gen).cumsum(-1)
            yield layer, ids, (prefer[:, None] + steps - steps[:, :1]) % EXPERTS


def feed(top, batches, tokens, seed) -> tuple[float, int]:
    seconds = 0.0
    for layer, ids, experts in stream(batches, tokens, seed):
        start = time.perf_counter()
        top.add(layer, experts, ids)
        seconds += time.perf_counter() - start
    return seconds, batches * tokens * LAYERS


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--quick", action="store_true", help="6 batches per rank, not 24")
    parser.add_argument("--tokens", type=int, default=8192, help="tokens per batch")
    parser.add_argument("--size", type=int, default=tt.SKETCH_SIZE, help="counters per expert")
    args = parser.parse_args()
    torch.set_num_threads(1)
    batches = 6 if args.quick else 24
    next(stream(1, args.tokens, seed=2))  # the stream's own memory counts as the baseline
    before = rss()
    states, seconds, token_layers = [], 0.0, 0
    for rank in range(2):  # two ranks' streams, one after the other, merged as torchrun does
        acc = Accumulators()
        top = tt.TopTokens(acc, LAYERS, EXPERTS, VOCAB, size=args.size)
        s, n = feed(top, batches, args.tokens, seed=rank)
        start = time.perf_counter()
        states.append(acc.state_dict())  # folds the buffer in: part of the counting's time
        seconds, token_layers = seconds + s + time.perf_counter() - start, token_layers + n
        if rank == 0:
            state = sum(t.nbytes for t in acc.tensors.values()) + top.buffer.nbytes
            one_rank = rss()
        del acc, top
    start = time.perf_counter()
    merged = tt.merge(states, VOCAB)
    merge_s = time.perf_counter() - start
    routed = 2 * batches * args.tokens * TOP_K  # pairs per layer, both ranks
    kept = merged["top_token_count"].sum(-1).double()  # [layer, E]
    exact = LAYERS * EXPERTS * VOCAB * 8
    print(
        f"shape: {LAYERS} layers x {EXPERTS} experts, vocab {VOCAB:,}, top-{TOP_K}; "
        f"{args.size} counters per expert; 1 thread; {token_layers:,} token-layers "
        f"({batches} batches of {args.tokens} tokens per rank, 2 ranks)"
    )
    print(
        f"sketch state: {state / 2**20:.1f} MiB per rank, summaries + buffer (the exact "
        f"table: {exact / GiB:.1f} GiB, {exact / state:.0f}x more)"
    )
    print(
        f"peak RSS: {one_rank / 2**20:.0f} MiB counting one rank, {rss() / 2**20:.0f} MiB "
        f"after merging two (before any sketch, with torch and the stream: "
        f"{before / 2**20:.0f} MiB); "
        f"{'under' if rss() < GiB else 'OVER'} 1 GiB"
    )
    print(
        f"counting: {token_layers / seconds / 1e6:.2f} M token-layers/s, "
        f"{1e9 / (token_layers / seconds) / 3600:.2f} h per billion token-layers; "
        f"merge of 2 ranks: {merge_s:.2f} s"
    )
    print(
        f"error bound (N - kept) / (m + 1), mean over experts: "
        f"{float(((routed / EXPERTS - kept) / (args.size + 1)).mean()):.1f} on ~"
        f"{routed / EXPERTS:,.0f} pairs per expert and layer"
    )


if __name__ == "__main__":
    main()
