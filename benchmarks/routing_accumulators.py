"""Throughput of the survey's expert accumulators on recorded routing, at Kimi K2's shape.

    .venv/bin/python benchmarks/routing_accumulators.py [--quick] [--threads 1]

No model runs: a synthetic stream of expert ids shaped like Kimi K2's routing (61 MoE
layers, 384 experts, top-8, vocabulary 163,840; uniform random ids, 8 windows of 256 tokens
per batch) is folded into `ExpertStats`'s counts exactly as a survey folds a router's
selection (load, co-activation, transitions, locality, per-domain load, per-batch MaxVio,
and the top tokens per expert: `interp.survey.top_tokens`, whose own figures are in
benchmarks/top_token_sketch.py). Prints token-layers per second and the time per billion
token-layers (target: >= 1M/s on one core), beside the one-hot products the survey used
before, which count no top tokens (the other counts asserted equal). The ids are drawn
before the clock starts.
"""

from __future__ import annotations

import argparse
import time

import torch

from interp.survey.accumulators import Accumulators
from interp.survey.batch import collate
from interp.survey.data import Window
from interp.survey.experts import ExpertStats

torch.set_grad_enabled(False)

LAYERS, EXPERTS, TOP_K, VOCAB = 61, 384, 8, 163_840


class OneHotStats(ExpertStats):
    """The former counting: a one-hot [tokens, E] per layer and its E x E products."""

    def _count(self, i: int, chosen: torch.Tensor) -> None:
        onehot = torch.zeros(len(chosen), self.n_experts).scatter_(1, chosen, 1.0)
        onehot *= self.rows[:, None]
        self.selected[i] = (onehot, onehot.sum(0))
        self.count[i] += onehot.sum(0).long()
        self.coact[i] += (onehot.T @ onehot).long()
        if i > 0:
            self.transitions[i - 1] += (self.selected[i - 1][0].T @ onehot).long()
        per_pos = onehot.view(*self.batch.ids.shape, -1)
        self.reuse[i] += (per_pos[:, 1:] * per_pos[:, :-1]).sum().long()
        cell = torch.nn.functional.one_hot(self.cell, self.domain.shape[0] * 2).float()
        self.domain[:, :, i] += (cell.T @ onehot[self.rows]).view(-1, 2, self.n_experts).long()


def rate(kind, facts: dict, stream: list) -> tuple[float, Accumulators]:
    """Token-layers per second of `kind` over the stream, and its counts."""
    acc = Accumulators()
    stats = kind(None, acc, ["all"], facts)
    start = time.perf_counter()
    for batch, chosen in stream:
        stats.start(batch)
        for i in range(LAYERS):
            stats._count(i, chosen[i])
        stats.finish(batch, None)
    acc.flush()  # the top tokens' buffered pairs folded in: their cost is counted
    seconds = time.perf_counter() - start
    return sum(c.shape[1] for _, c in stream) * LAYERS / seconds, acc


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--quick", action="store_true", help="2 batches instead of 8")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--seq-len", type=int, default=256)
    parser.add_argument("--batch-size", type=int, default=8)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    facts = {"moe_layers": list(range(LAYERS)), "n_experts": EXPERTS, "top_k": TOP_K,
             "d_vocab": VOCAB}  # fmt: skip
    gen = torch.Generator().manual_seed(0)
    stream = []
    for b in range(2 if args.quick else 8):
        windows = [Window(b * args.batch_size + w, "all",
                          torch.randint(VOCAB, (args.seq_len,), generator=gen), 0, w)
                   for w in range(args.batch_size)]  # fmt: skip
        n = args.batch_size * args.seq_len
        # Distinct experts per token, as a router's top-k gives them.
        chosen = torch.rand(LAYERS, n, EXPERTS, generator=gen).topk(TOP_K, dim=-1).indices
        stream.append((collate(windows, ["all"], 0, "cpu"), chosen))
    new, acc = rate(ExpertStats, facts, stream)
    old, old_acc = rate(OneHotStats, facts, stream)
    for name, t in acc.tensors.items():
        assert name.startswith("top_token") or torch.equal(t, old_acc.tensors[name]), name
    token_layers = sum(c.shape[1] for _, c in stream) * LAYERS
    print(f"shape: {LAYERS} layers x {EXPERTS} experts, top-{TOP_K}, vocab {VOCAB}; "
          f"{args.threads} thread(s); {token_layers:,} token-layers, counts equal")  # fmt: skip
    print(f"bincounts (the survey): {new / 1e6:.3f} M token-layers/s (target >= 1); "
          f"{1e9 / new / 3600:.2f} h per billion token-layers")  # fmt: skip
    print(f"one-hot products (before): {old / 1e6:.3f} M token-layers/s; ratio {new / old:.1f}x")


if __name__ == "__main__":
    main()
