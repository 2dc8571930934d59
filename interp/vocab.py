"""The shared vocabulary: what several modules compute the same way, written once.

- `Hook`: a TransformerLens forward hook, (hook name, fn(tensor, hook) -> tensor | None).
- `log_probs` / `entropy`: in float32 whatever the model's dtype (a bf16 softmax is too coarse
  for a log-probability or an entropy).
- `long_frame`: a tensor with named axes ("layer head pos") as a tidy frame, one row per cell.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pandas as pd
import torch

from interp.errors import InterpError

Hook = tuple[str, Callable[[torch.Tensor, object], torch.Tensor | None]]


def log_probs(logits: torch.Tensor) -> torch.Tensor:
    """log softmax along the last axis, in float32."""
    return logits.float().log_softmax(-1)


def entropy(logits: torch.Tensor) -> torch.Tensor:
    """Entropy (nats) of softmax(logits) along the last axis, in float32."""
    logp = log_probs(logits)
    return -(logp.exp() * logp).sum(-1)


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
