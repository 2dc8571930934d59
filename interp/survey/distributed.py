"""torch.distributed as it comes: torchrun sets RANK / WORLD_SIZE / LOCAL_RANK; gloo on the
CPU, NCCL on GPUs. Each rank surveys its own documents (`interp.survey.data`) and the ranks
sum their accumulators."""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist

from interp.survey.accumulators import Accumulators


@dataclass(frozen=True)
class Ranks:
    rank: int
    world: int
    device: torch.device

    def gather(self, value) -> list:
        """A small picklable `value` from every rank, in rank order."""
        if self.world == 1:
            return [value]
        values = [None] * self.world
        dist.all_gather_object(values, value)
        return values


SOLO = Ranks(0, 1, torch.device("cpu"))  # one process: the corpus read whole


def setup(model) -> Ranks:
    """Join torchrun's process group (if launched by torchrun) and place the model (None:
    recorded routing, counted on the CPU)."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world == 1:
        cpu = torch.device("cpu")
        return Ranks(0, 1, cpu if model is None else next(model.parameters()).device)
    gpu = model is not None and torch.cuda.is_available()
    if not dist.is_initialized():
        dist.init_process_group(backend="nccl" if gpu else "gloo")
    device = torch.device("cpu")
    if gpu:
        device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
        torch.cuda.set_device(device)
        model.to(device)
    return Ranks(dist.get_rank(), dist.get_world_size(), device)


def merge(acc: Accumulators, ranks: Ranks) -> None:
    """Sum every accumulator over the ranks (in place, on every rank); groups declared with
    `Accumulators.merged` are merged by their own function, one rank's state at a time (each
    broadcast in turn), so a rank holds two such states, not one per rank."""
    if ranks.world == 1:
        return
    acc.flush()
    special = {name for names, _ in acc.merged_by for name in names}
    for name in sorted(acc.tensors):  # the same order on every rank
        if name not in special:
            dist.all_reduce(acc.tensors[name], op=dist.ReduceOp.SUM)
    for names, merge in acc.merged_by:
        merged = None
        for rank in range(ranks.world):
            state = {name: acc.tensors[name].clone() for name in names}
            for name in names:
                dist.broadcast(state[name], src=rank)
            merged = state if merged is None else merge([merged, state])
        for name, tensor in merged.items():
            acc.tensors[name].copy_(tensor)


def barrier(ranks: Ranks) -> None:
    if ranks.world > 1:
        dist.barrier()


def is_main() -> bool:
    """Rank 0, or no process group at all: the process that prints and writes."""
    return not dist.is_initialized() or dist.get_rank() == 0
