"""Checkpoints of a survey in progress: the accumulators and the next batch, per rank.

They live beside the output (`.NAME.checkpoint/rank{r}-of-{w}.pt`), written atomically, and
carry a fingerprint of everything that decides the counts (model, data, windows, statistics,
seed): the same command resumes; any other starts afresh. Counts are sums, so resuming from
batch i with the sums of batches < i gives exactly the counts of an uninterrupted run.
"""

from __future__ import annotations

import io
import shutil
from pathlib import Path

import torch

from interp.files import write_atomic
from interp.survey.accumulators import Accumulators


class Checkpoint:
    def __init__(self, out: Path, rank: int, world: int, fingerprint: dict):
        self.directory = out.parent / f".{out.name}.checkpoint"
        self.path = self.directory / f"rank{rank}-of-{world}.pt"
        self.fingerprint = fingerprint

    def load(self, acc: Accumulators) -> int:
        """The batch to start from (0 without a matching checkpoint); fills `acc`."""
        if not self.path.is_file():
            return 0
        state = torch.load(self.path, weights_only=True)
        if state.get("fingerprint") != self.fingerprint:
            return 0
        acc.load_state_dict(state["accumulators"])
        return int(state["next_batch"])

    def save(self, acc: Accumulators, next_batch: int) -> None:
        buffer = io.BytesIO()
        state = {"fingerprint": self.fingerprint, "next_batch": next_batch,
                 "accumulators": acc.state_dict()}  # fmt: skip
        torch.save(state, buffer)
        write_atomic(self.path, buffer.getvalue())

    def clear(self) -> None:
        shutil.rmtree(self.directory, ignore_errors=True)
