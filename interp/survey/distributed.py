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
    """Join torchrun's process group (if launched by torchrun) and place the model."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world == 1:
        return Ranks(0, 1, next(model.parameters()).device)
    if not dist.is_initialized():
        dist.init_process_group(backend="nccl" if torch.cuda.is_available() else "gloo")
    if torch.cuda.is_available():
        device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
        torch.cuda.set_device(device)
        model.to(device)
    else:
        device = torch.device("cpu")
    return Ranks(dist.get_rank(), dist.get_world_size(), device)


def merge(acc: Accumulators, ranks: Ranks) -> None:
    """Sum every accumulator over the ranks (in place, on every rank); groups declared with
    `Accumulators.merged` are gathered from every rank and merged by their own function."""
    if ranks.world == 1:
        return
    special = {name for names, _ in acc.merged_by for name in names}
    for name in sorted(acc.tensors):  # the same order on every rank
        if name not in special:
            dist.all_reduce(acc.tensors[name], op=dist.ReduceOp.SUM)
    for names, merge in acc.merged_by:
        states = [{} for _ in range(ranks.world)]
        for name in names:
            parts = [torch.empty_like(acc.tensors[name]) for _ in range(ranks.world)]
            dist.all_gather(parts, acc.tensors[name])
            for state, part in zip(states, parts):
                state[name] = part
        for name, merged in merge(states).items():
            acc.tensors[name].copy_(merged)


def barrier(ranks: Ranks) -> None:
    if ranks.world > 1:
        dist.barrier()


def is_main() -> bool:
    """Rank 0, or no process group at all: the process that prints and writes."""
    return not dist.is_initialized() or dist.get_rank() == 0
