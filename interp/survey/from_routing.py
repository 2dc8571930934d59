"""`from_routing(files, model)`: a survey of recorded routing (a serving engine's expert ids,
interp.survey.recorded) with no model forward, into the same accumulators, tables and
report as `survey(model, ...)`'s expert statistics.

Each request is one window and `batch_size` consecutive requests of a shard one batch (a
batch never spans shards), so per-batch MaxVio reads as in a model survey whose windows are
the requests. Under torchrun, ranks split the shards by file (shard i goes to rank
i % world) and sum their accumulators; every rank first reads the shards' request counts and
domains (not their routing), so each request keeps its index for the split halves and the
domains their order. Everything is read and checked before anything is written.
"""

from __future__ import annotations

import shlex
import sys
from dataclasses import dataclass
from pathlib import Path

import torch

from interp.survey import distributed, recorded
from interp.survey.accumulators import Accumulators
from interp.survey.batch import collate
from interp.survey.data import Window
from interp.survey.experts import ExpertStats
from interp.survey.output import Survey, check_writable
from interp.survey.routing_model import RoutingModel, routing_model, tokenizer_of

# What a model's forward gives and recorded expert ids do not.
ABSENT = ("router probabilities (the prob and balance columns), routing entropy, head "
          "scores and layer norms: recorded routing holds only the chosen expert ids, not the "
          "router's weights or the model's activations")  # fmt: skip
NEEDS_PROBS = {"experts": ["prob"], "expert_layers": ["balance", "routing_entropy"]}


def from_routing(routing, model, *, batch_size: int = 8, seed: int = 0, out=None,
                 command: str | None = None, progress: bool = False) -> Survey:  # fmt: skip
    """The expert statistics of recorded routing: `routing` a shard, a directory of shards
    or a list of them (.jsonl, .npz, .parquet; interp.survey.recorded); `model` a zoo name
    or a config.json (no weights are loaded). With `out`, saved there."""
    from interp.errors import InterpError

    if batch_size < 1:
        raise InterpError("--batch-size must be >= 1")
    spec = routing_model(model)
    out = Path(out) if out is not None else None
    if out is not None:
        check_writable(out)
    shards = recorded.files(routing)
    ranks = distributed.setup(None)
    counted = count(shards, spec, batch_size, seed, ranks, progress)
    stats, acc, scans, domains = counted.stats, counted.acc, counted.scans, counted.domains
    state = acc.state_dict()
    tables = stats.tables(state, domains, tokenizer_of(spec))
    tables.pop("routing_entropy")
    for name, columns in NEEDS_PROBS.items():
        tables[name] = tables[name].drop(columns=columns)
    files = ", ".join(map(str, shards))
    meta = {"survey": 1, "model": spec.name, "data": files, "routing": files,
            "stats": ["experts"], "seq_len": counted.longest, "batch_size": batch_size,
            "seed": seed, "token_cap": None,
            "tokens": int(state["expert_count"][0].sum()) // spec.top_k,
            "windows": sum(n for n, _ in scans), "batches": int(state["batches"]),
            "domains": domains, "world_size": ranks.world, "lens_every": None,
            "cfg": spec.facts(), "absent": ABSENT,
            "command": command or shlex.join(sys.argv)}  # fmt: skip
    result = Survey(tables, meta)
    if out is not None and ranks.rank == 0:
        result.save(out)
    distributed.barrier(ranks)
    return result


@dataclass
class Counted:
    stats: ExpertStats
    acc: Accumulators  # summed over ranks
    scans: list[tuple[int, list[str]]]  # per shard: its requests and domains
    domains: list[str]
    longest: int  # the longest request, in tokens


def count(shards: list[Path], spec: RoutingModel, batch_size: int, seed: int,
          ranks: distributed.Ranks, progress: bool = False) -> Counted:  # fmt: skip
    """This rank's shards read, checked and counted, the ranks' counts summed."""
    scans = [recorded.scan(path) for path in shards]
    domains = list(dict.fromkeys(d for _, names in scans for d in names)) or ["all"]
    first = [sum(n for n, _ in scans[:i]) for i in range(len(scans))]
    acc = Accumulators(ranks.device)
    stats = ExpertStats(None, acc, domains, spec.facts())
    longest = torch.zeros(1, dtype=torch.int64)
    mine = [i for i in range(len(shards)) if i % ranks.world == ranks.rank]
    for i in _bar(progress and ranks.rank == 0, mine):
        for start, chunk in _chunks(recorded.read(shards[i], spec), batch_size):
            batch, chosen = _batch(chunk, first[i] + start, domains, seed)
            stats.count_recorded(batch, chosen)
            longest = torch.maximum(longest, torch.tensor(batch.ids.shape[1]))
    distributed.merge(acc, ranks)
    if ranks.world > 1:
        torch.distributed.all_reduce(longest, op=torch.distributed.ReduceOp.MAX)
    return Counted(stats, acc, scans, domains, int(longest))


def _chunks(requests, size: int):
    """(index of its first request in the shard, up to `size` consecutive requests)."""
    chunk, start = [], 0
    for n, request in enumerate(requests):
        chunk.append(request)
        if len(chunk) == size:
            yield start, chunk
            chunk, start = [], n + 1
    if chunk:
        yield start, chunk


def _batch(chunk: list, index: int, domains: list[str], seed: int):
    """The batch a model survey would build from these windows, and the recorded experts
    [batch * pos, MoE layers, k]; tokens with no routing recorded count as padding."""
    windows = [Window(index + j, r.domain, torch.from_numpy(r.ids), 0, index + j)
               for j, r in enumerate(chunk)]  # fmt: skip
    batch = collate(windows, domains, seed, "cpu")
    rows, length = batch.ids.shape
    layers, k = chunk[0].experts.shape[1:]
    chosen = torch.zeros(rows, length, layers, k, dtype=torch.int16)
    for j, r in enumerate(chunk):
        chosen[j, : len(r.ids)].numpy()[...] = r.experts
    missing = (chosen[:, :, 0, 0] == recorded.UNRECORDED) & batch.valid
    if missing.any():
        batch.valid &= ~missing
        chosen[missing] = 0
        batch.pairs = batch.valid[:, 1:] & batch.valid[:, :-1]
    return batch, chosen.view(rows * length, layers, k)


def _bar(show: bool, mine: list[int]):
    if not show:
        return mine
    from tqdm import tqdm

    return tqdm(mine, unit="shard", desc="routing", file=sys.stderr)
