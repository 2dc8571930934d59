"""Key attribution: how much of the answer's log-probability each prompt position supplies
through attention, estimated for every key at once and checked by blocking.

The intervention is coverage's block (`coverage.blocking_hooks`): the answering positions G stop
attending to key k in every layer and head, each pattern row renormalised. For one row a
(softmax weights over keys) blocking k gives a' = (a - a_k e_k) / (1 - a_k), so
a' - a = a_k / (1 - a_k) * (a - e_k). Attribution patching takes the first-order change in the
metric m (teacher-forced log p of the continuation) with g = dm/da from one backward pass:

    estimate_k = sum over layers, heads, q in G of a_qk / (1 - a_qk) * (g_q . a_q - g_qk)

`attribution` is minus that estimate: the log-probability key k supplies (positive: the key
carries the answer). `exact` is the same quantity measured by blocking k alone. A key is covered
when blocking it alone moves the continuation's log p by MOVES nats or more, either way.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd
import torch

from interp.vocab import log_probs

# A block that changes log p by half a nat changes p by x0.6 or x1.6: the answer moved.
MOVES = 0.5


def continuation_logprob(logits: torch.Tensor, ids: torch.Tensor, queries: Sequence[int]):
    """[batch]: sum over q in `queries` of log p(ids[q + 1]) from logits [batch pos vocab]."""
    q = torch.tensor(list(queries))
    picked = log_probs(logits[:, q])  # [batch query vocab]
    return picked.gather(-1, ids[q + 1].expand(len(logits), -1)[..., None])[..., 0].sum(-1)


def edge_attribution(
    patterns: torch.Tensor, grads: torch.Tensor, queries: Sequence[int]
) -> torch.Tensor:
    """[key]: the log p each key supplies by the first-order estimate of blocking it.

    `patterns`, `grads`: [layer head query key] attention weights and d metric / d weight."""
    q = list(queries)
    a, g = patterns[:, :, q].double(), grads[:, :, q].double()  # [layer head query key]
    ratio = a / (1 - a).clamp_min(1e-6)
    row_dot = (g * a).sum(-1, keepdim=True)  # g_q . a_q
    estimate = (ratio * (row_dot - g)).sum(dim=(0, 1, 2))
    return (-estimate).float()


def spearman(a: Sequence[float], b: Sequence[float]) -> float:
    """Spearman rank correlation (average ranks for ties); NaN under three pairs."""
    a, b = pd.Series(a, dtype=float), pd.Series(b, dtype=float)
    if len(a) < 3:
        return float("nan")
    return float(np.corrcoef(a.rank(), b.rank())[0, 1])


def key_frame(
    tokens: Sequence[str],
    attribution: torch.Tensor,
    exact: dict[int, float],
    sinks: Sequence[int],
    prompt: int = 0,
) -> pd.DataFrame:
    """One row per prompt position: attribution, exact (NaN where not blocked), covered, rank
    (1 = most log p supplied, by attribution, sinks unranked)."""
    n = len(tokens)
    frame = pd.DataFrame({
        "prompt": prompt, "pos": np.arange(n), "token": list(tokens),
        "sink": np.isin(np.arange(n), list(sinks)), "attribution": attribution[:n].numpy(),
        "exact": [exact.get(pos, float("nan")) for pos in range(n)],
    })  # fmt: skip
    frame["covered"] = frame["exact"].abs() >= MOVES
    ranked = frame.loc[~frame["sink"], "attribution"].rank(ascending=False, method="first")
    frame["rank"] = ranked.reindex(frame.index).astype("Int64")
    return frame
