"""One batch of windows as the statistics see it: right-padded ids and what each row is."""

from __future__ import annotations

import zlib
from dataclasses import dataclass

import torch

from interp.survey.data import Window


@dataclass
class Batch:
    ids: torch.Tensor  # [batch, pos], right-padded with 0
    valid: torch.Tensor  # [batch, pos] bool, False on padding
    index: torch.Tensor  # [batch] each window's index in the corpus's window order
    domain: torch.Tensor  # [batch] index into the corpus's domains
    half: torch.Tensor  # [batch] 0 or 1: the split-half a window belongs to
    pairs: torch.Tensor  # [batch, pos - 1] bool: (t, t + 1) both real tokens


def split_half(window_index: int, seed: int) -> int:
    """A window's half for the split-half noise, fixed by the seed (not by rank or batch)."""
    return zlib.crc32(f"{seed}:{window_index}".encode()) % 2


def collate(windows: list[Window], domains: list[str], seed: int, device) -> Batch:
    # Right padding: causal attention never lets a real token see the pads after it.
    length = max(len(w.ids) for w in windows)
    ids = torch.zeros(len(windows), length, dtype=torch.long)
    valid = torch.zeros(len(windows), length, dtype=torch.bool)
    for row, window in enumerate(windows):
        ids[row, : len(window.ids)] = window.ids
        valid[row, : len(window.ids)] = True
    domain = torch.tensor([domains.index(w.domain) for w in windows])
    half = torch.tensor([split_half(w.index, seed) for w in windows])
    index = torch.tensor([w.index for w in windows])
    ids, valid = ids.to(device), valid.to(device)
    pairs = valid[:, 1:] & valid[:, :-1]
    return Batch(ids, valid, index.to(device), domain.to(device), half.to(device), pairs)
