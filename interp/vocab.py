"""The shared vocabulary: what several modules compute the same way, written once.

- `Hook`: a TransformerLens forward hook, (hook name, fn(tensor, hook) -> tensor | None).
- `log_probs` / `entropy` / `prob_entropy` / `logsumexp`: in float32 whatever the model's
  dtype (a bf16 softmax is too coarse for a log-probability or an entropy); the last two in
  cache-sized blocks of rows (`by_rows`).
- `long_frame`: a tensor with named axes ("layer head pos") as a tidy frame, one row per cell.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pandas as pd
import torch

from interp.errors import InterpError

Hook = tuple[str, Callable[[torch.Tensor, object], torch.Tensor | None]]

BLOCK_ELEMENTS = 1 << 18  # per block of `by_rows`: 1 MB of float32
TINY = torch.finfo(torch.float32).tiny


def log_probs(logits: torch.Tensor) -> torch.Tensor:
    """log softmax along the last axis, in float32."""
    return logits.float().log_softmax(-1)


def entropy(logits: torch.Tensor) -> torch.Tensor:
    """Entropy (nats) of softmax(logits) along the last axis, in float32."""
    logp = log_probs(logits)
    return -(logp.exp() * logp).sum(-1)


def prob_entropy(p: torch.Tensor) -> torch.Tensor:
    """Entropy (nats) of the distributions `p` (probabilities) along the last axis, in float32.
    Not torch.special.entr: its per-element branch costs 2-3x a vectorised log of p clamped
    to the smallest normal float, where 0 * log(tiny) is exactly the 0 a zero adds."""

    def entropy_of(rows: torch.Tensor) -> torch.Tensor:
        rows = rows.float()
        return -(rows * rows.clamp_min(TINY).log()).sum(-1)

    return by_rows(entropy_of, p)


def logsumexp(logits: torch.Tensor) -> torch.Tensor:
    """log sum exp along the last axis, in float32: with a target's logit, a next-token loss
    that writes no [pos, vocab] log-softmax."""
    return by_rows(lambda rows: rows.float().logsumexp(-1), logits)


def by_rows(reduce: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor) -> torch.Tensor:
    """`reduce` ([rows, n] -> [rows]) over `x` [..., n], a block of rows at a time: a block's
    temporaries stay in cache, where one the size of `x` costs a page fault per 4 kB (3x the
    time of a logsumexp over a batch's logits on the CPU)."""
    rows = x.reshape(-1, x.shape[-1])
    out = torch.empty(rows.shape[0], dtype=torch.float32, device=x.device)
    cpu = x.device.type == "cpu"  # an accelerator runs a whole reduction as one kernel
    step = max(1, BLOCK_ELEMENTS // rows.shape[1]) if cpu else rows.shape[0]
    for start in range(0, rows.shape[0], step):
        out[start : start + step] = reduce(rows[start : start + step])
    return out.view(x.shape[:-1])


def long_frame(tensor: torch.Tensor | np.ndarray, axes: str, value: str) -> pd.DataFrame:
    """One row per cell of `tensor`: an integer column per named axis, then `value`.

    `axes` names the axes in order, einops-style: long_frame(t, "layer head pos", "entropy")
    for t of shape [layer, head, pos]. Rows are in C order (the last axis varies fastest).
    """
    names = axes.split()
    array = tensor.detach().cpu().numpy() if isinstance(tensor, torch.Tensor) else tensor
    if len(names) != array.ndim:
        raise InterpError(f"axes {axes!r} name {len(names)} axes; the tensor has {array.ndim}")
    index = np.indices(array.shape).reshape(len(names), -1)
    return pd.DataFrame({**dict(zip(names, index)), value: array.reshape(-1)})
