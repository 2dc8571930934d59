"""Throughput of the survey's expert accumulators on recorded routing, at Kimi K2's shape.

    .venv/bin/python benchmarks/routing_accumulators.py [--quick] [--threads 1]

No model runs: a synthetic stream of expert ids shaped like Kimi K2's routing (61 MoE
layers, 384 experts, top-8, vocabulary 163,840; uniform random ids, 8 windows of 256 tokens
per batch) is folded into `ExpertStats`'s counts exactly as a survey folds a router's
selection (load, co-activation, transitions, locality, per-domain load, per-batch MaxVio,
and the top tokens per expert:
`interp.survey.top_tokens`, whose own figures are in benchmarks/top_token_sketch.py).
Prints token-layers per second and the time per billion token-layers (target: >= 1M/s on
one core), beside the one-hot products the survey used before, which count no top tokens (the
other counts asserted equal).
The ids are drawn before the clock starts. Then the whole recorded-routing path
(`interp.survey.from_routing`: read an .npz shard of the same stream, check it against a
Kimi K2-shaped config.json, batch it, count it, build the tables) on Kimi K2's 60 MoE layers
(first_k_dense_replace = 1 of 61). Each rate is given by the wall clock and by this process's
CPU time: on a shared core the wall clock also counts the time other processes ran.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import torch

from interp.survey import from_routing, write_routing
from interp.survey.accumulators import Accumulators
from interp.survey.batch import collate
from interp.survey.data import Window
from interp.survey.distributed import Ranks
from interp.survey.experts import ExpertStats, symmetric_coactivation
from interp.survey.from_routing import count
from interp.survey.recorded import Recorded
from interp.survey.routing_model import routing_model

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


class Clock:
    """Wall-clock and CPU seconds of a block."""

    def __enter__(self):
        self.wall, self.cpu = time.perf_counter(), time.process_time()
        return self

    def __exit__(self, *exc):
        self.wall, self.cpu = time.perf_counter() - self.wall, time.process_time() - self.cpu


def rate(kind, facts: dict, stream: list) -> tuple[Clock, Accumulators]:
    """The time `kind` takes to count the stream, and its counts."""
    acc = Accumulators()
    stats = kind(None, acc, ["all"], facts)
    with Clock() as clock:
        for batch, chosen in stream:
            stats.start(batch)
            for i in range(LAYERS):
                stats._count(i, chosen[i])
            stats.finish(batch, None)
        acc.flush()  # the top tokens' buffered pairs folded in: their cost is counted
    return clock, acc


def recorded_path(stream: list, batch_size: int) -> tuple[Clock, Clock, int]:
    """The stream written as one .npz shard (Kimi K2's 60 MoE layers): the time to read,
    check, batch and count it (what grows with the tokens), then the time of a whole
    from_routing (its tables add a fixed cost: 2 x 8.8M rows of pair tables)."""
    config = {"model_type": "kimi_k2", "num_hidden_layers": LAYERS, "first_k_dense_replace": 1,
              "moe_layer_freq": 1, "n_routed_experts": EXPERTS, "num_experts_per_tok": TOP_K,
              "vocab_size": VOCAB, "hidden_size": 7168}  # fmt: skip
    requests = []
    for batch, chosen in stream:
        per_window = chosen[1:].permute(1, 0, 2).reshape(*batch.ids.shape, LAYERS - 1, TOP_K)
        requests += [Recorded(ids.numpy(), experts.numpy().astype("int16"), "all")
                     for ids, experts in zip(batch.ids, per_window)]  # fmt: skip
    with tempfile.TemporaryDirectory() as tmp:
        (Path(tmp) / "config.json").write_text(json.dumps(config))
        shard = write_routing(requests, Path(tmp) / "routing.npz")
        spec = routing_model(Path(tmp) / "config.json")
        with Clock() as counting:
            counted = count([shard], spec, batch_size, 0, Ranks(0, 1, torch.device("cpu")))
            counted.acc.flush()
        with Clock() as whole:
            from_routing(shard, Path(tmp) / "config.json", batch_size=batch_size)
    tokens = int(counted.acc.tensors["expert_count"][0].sum()) // TOP_K
    return counting, whole, tokens * (LAYERS - 1)


def line(what: str, token_layers: int, clock: Clock) -> str:
    wall, cpu = token_layers / clock.wall, token_layers / clock.cpu
    return (f"{what}: {wall / 1e6:.3f} M token-layers/s wall, {cpu / 1e6:.3f} M/s CPU "
            f"(target >= 1); {1e9 / cpu / 3600:.2f} h CPU per billion token-layers")  # fmt: skip


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
    # The survey counts each unordered pair once; its table adds the transpose and diagonal.
    mine = dict(acc.tensors)
    mine["coactivation"] = torch.from_numpy(
        symmetric_coactivation(mine["coactivation"].numpy(), mine["expert_count"].numpy())
    )
    for name, t in mine.items():
        assert name.startswith("top_token") or torch.equal(t, old_acc.tensors[name]), name
    token_layers = sum(c.shape[1] for _, c in stream) * LAYERS
    print(f"shape: {LAYERS} layers x {EXPERTS} experts, top-{TOP_K}, vocab {VOCAB}; "
          f"{args.threads} thread(s); {token_layers:,} token-layers, counts equal")  # fmt: skip
    print(line("bincounts (the survey)", token_layers, new))
    print(line("one-hot products (before)", token_layers, old))
    print(f"ratio (CPU time): {old.cpu / new.cpu:.1f}x")
    counting, whole, recorded_layers = recorded_path(stream, args.batch_size)
    print(line("recorded routing: read + check + count an .npz shard", recorded_layers, counting))
    print(f"recorded routing: from_routing whole, tables included: {whole.wall:.1f} s wall, "
          f"{whole.cpu:.1f} s CPU ({whole.cpu - counting.cpu:.1f} s of it the tables, once "
          "per survey)")  # fmt: skip


if __name__ == "__main__":
    main()
