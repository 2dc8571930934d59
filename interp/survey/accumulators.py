"""Mergeable accumulators: named sums and counts of fixed shape whose merge is addition.

A survey's state is one `Accumulators`: every statistic adds into tensors whose shapes are
fixed by the model and the corpus's domains (never by the number of tokens), so two runs over
two halves of a corpus merge into exactly the run over all of it, a checkpoint is a copy of
the tensors, and torch.distributed merges ranks with one all_reduce(SUM) per tensor.
Counts are int64 (exact in any order); sums are float64.
"""

from __future__ import annotations

from collections.abc import Callable

import torch


class Accumulators:
    def __init__(self, device: torch.device | str = "cpu"):
        self.device = torch.device(device)
        self.tensors: dict[str, torch.Tensor] = {}
        # Groups of tensors whose merge is not addition (a bounded top-N): names -> the
        # function that merges a list of such states (one per rank) into one.
        self.merged_by: list[tuple[list[str], Callable[[list[dict]], dict]]] = []
        # Statistics that stage work outside the tensors (a buffer of pairs to fold) and
        # finish it when called: before the state is read, saved or merged.
        self.flushes: list[Callable[[], None]] = []

    def counts(self, name: str, *shape: int) -> torch.Tensor:
        return self._new(name, shape, torch.int64)

    def sums(self, name: str, *shape: int) -> torch.Tensor:
        return self._new(name, shape, torch.float64)

    def _new(self, name: str, shape: tuple[int, ...], dtype: torch.dtype, fill=0) -> torch.Tensor:
        if name in self.tensors:
            raise ValueError(f"accumulator {name!r} declared twice")
        self.tensors[name] = torch.full(shape, fill, dtype=dtype, device=self.device)
        return self.tensors[name]

    def merged(self, spec: dict[str, tuple[tuple[int, ...], torch.dtype, float]],
               merge: Callable[[list[dict]], dict]) -> dict[str, torch.Tensor]:  # fmt: skip
        """Tensors (name -> (shape, dtype, fill)) that ranks merge with `merge`, not a sum."""
        made = {name: self._new(name, shape, dtype, fill) for name, (shape, dtype, fill)
                in spec.items()}  # fmt: skip
        self.merged_by.append((list(spec), merge))
        return made

    def flush(self) -> None:
        for flush in self.flushes:
            flush()

    def state_dict(self) -> dict[str, torch.Tensor]:
        self.flush()
        return {name: t.cpu() for name, t in self.tensors.items()}

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        if state.keys() != self.tensors.keys():
            raise ValueError("the checkpoint holds other statistics")
        for name, t in self.tensors.items():
            t.copy_(state[name])


def histogram(values: torch.Tensor, edges: torch.Tensor) -> torch.Tensor:
    """Counts of `values` in the bins between `edges` [bins + 1]; values beyond either end
    fall into the first or last bin, so every value is counted once."""
    bins = len(edges) - 1
    index = torch.bucketize(values.float().flatten(), edges[1:-1].to(values.device))
    return torch.bincount(index, minlength=bins)[:bins]


def log_edges(low: float, high: float, bins: int) -> torch.Tensor:
    return torch.logspace(torch.log10(torch.tensor(low)), torch.log10(torch.tensor(high)), bins + 1)
