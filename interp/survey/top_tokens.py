"""Top tokens per expert in bounded memory: a Misra-Gries summary per (layer, expert).

Each (layer, expert) keeps at most SKETCH_SIZE = m (token, count) counters, whatever the
vocabulary and the corpus. Routed (expert, token) pairs are appended to a per-layer buffer
(BUFFER_PER_COUNTER pairs per counter); a full buffer is folded into the summaries in one
vectorised step (numpy: a sort, a merge, segment sums), so a pair costs a share of a sort. At
Kimi K2's shape (61 layers x 384 experts, vocab 163,840) summaries and buffer take 160 MiB,
where the exact [layer, expert, vocab] int64 table would take 28.6 GiB
(benchmarks/top_token_sketch.py).

The fold is the merge of Misra-Gries summaries (Agarwal et al. 2012, "Mergeable summaries"):
add the counters of the same token, and where an expert then has more than m, subtract its
(m+1)-th largest counter from all of them and keep those left positive (at most m). It merges
a buffer, the ranks (`Accumulators.merged`) and a resumed checkpoint alike; its result
depends only on the counts it is given, not their order, but where it folds does matter, so
the buffer is folded whenever the state is read, saved or merged (`Accumulators.flush`): a
resumed run folds where the interrupted one saved, as an uninterrupted run with the same
checkpoints does.

Error bound, per (layer, expert): with N the pairs routed to it (its `count` in `experts`) and
K the sum of its kept counters, every token's reported count c satisfies
true - (N - K) / (m + 1) <= c <= true (each subtraction of s removes s from at least m + 1
counters but at most s from any one token). `expert_tokens` gives that bound as `error`; a
token whose true count exceeds the expert's 11th largest true count by more than the bound is
always among its 10 listed.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import torch

from interp.survey.accumulators import Accumulators

SKETCH_SIZE = 256  # counters per (layer, expert)
BUFFER_PER_COUNTER = 4  # a layer's buffer holds this many pairs per counter of the layer
TOP_TOKENS = 10
_COUNT_BITS = 42  # counts below 2**42 per (layer, expert, token): the sort key's low bits


class TopTokens:
    def __init__(self, acc: Accumulators, n_layers: int, n_experts: int, vocab: int,
                 size: int | None = None):  # fmt: skip
        self.vocab, m = vocab, size or SKETCH_SIZE
        shape = (n_layers, n_experts, m)
        self.t = acc.merged({"top_token_id": (shape, torch.int32, -1),
                             "top_token_count": (shape, torch.int64, 0)},
                            lambda states: merge(states, vocab))  # fmt: skip
        # The buffer is no accumulator: it is folded in before the state is read, saved or
        # merged (`Accumulators.flush`). Keys expert * vocab + token fit int32 on real models.
        key = np.int32 if n_experts * vocab < 2**31 else np.int64
        self.buffer = np.empty((n_layers, BUFFER_PER_COUNTER * n_experts * m), dtype=key)
        self.fill = [0] * n_layers
        acc.flushes.append(self.flush)

    def add(self, i: int, experts: torch.Tensor, ids: torch.Tensor) -> None:
        """Count layer `i`'s routed pairs: experts [tokens, k] chosen for token ids [tokens]."""
        keys = (experts * self.vocab + ids[:, None]).flatten().cpu().numpy()
        keys = keys.astype(self.buffer.dtype, copy=False)
        fill = self.fill[i]
        if fill + len(keys) > self.buffer.shape[1]:
            self._fold(i, np.concatenate([self.buffer[i, :fill], keys]))
            self.fill[i] = 0
        else:
            self.buffer[i, fill : fill + len(keys)] = keys
            self.fill[i] = fill + len(keys)

    def flush(self) -> None:
        for i, fill in enumerate(self.fill):
            if fill:
                self._fold(i, self.buffer[i, :fill])
                self.fill[i] = 0

    def _fold(self, i: int, keys: np.ndarray) -> None:
        ids, counts = self.t["top_token_id"], self.t["top_token_count"]
        new_ids, new_counts = fold(ids[i].cpu().numpy(), counts[i].cpu().numpy(), keys, None,
                                   self.vocab)  # fmt: skip
        ids[i].copy_(torch.from_numpy(new_ids))
        counts[i].copy_(torch.from_numpy(new_counts))


def fold(ids: np.ndarray, counts: np.ndarray, keys: np.ndarray, weights: np.ndarray | None,
         vocab: int) -> tuple[np.ndarray, np.ndarray]:  # fmt: skip
    """One layer's summaries (ids, counts [E, m]) merged with pairs `keys` = expert * vocab +
    token: each counted once (`weights` None), or distinct, `weights` times each (another
    summary's counters). The Misra-Gries merge above, in numpy (whose sorts are the fastest
    here). A row keeps its counters in token order, so its keys come sorted: the union with
    the sorted buffer is one merge, and the cut needs a sort of values, not of indices."""
    E, m = ids.shape
    kept = counts > 0
    own = (np.arange(E, dtype=np.int64)[:, None] * vocab + ids)[kept]
    if weights is None:  # the buffer: run lengths of its sorted keys (int32 sorts 4x faster)
        keys = np.sort(keys)
        ends = np.flatnonzero(np.append(keys[1:] != keys[:-1], True))
        keys, weights = keys[ends].astype(np.int64), np.diff(ends, prepend=-1)
    keys = np.concatenate([own, keys])
    order = np.argsort(keys, kind="stable")  # two sorted runs: timsort merges them
    keys, weights = keys[order], np.concatenate([counts[kept], weights])[order]
    ends = np.flatnonzero(np.append(keys[1:] != keys[:-1], True))
    total = np.diff(np.cumsum(weights)[ends], prepend=0)
    keys = keys[ends]
    expert = keys // vocab
    per_expert = np.bincount(expert, minlength=E)
    first = np.cumsum(per_expert) - per_expert
    # By expert, then by count, largest first: the (m+1)-th largest of each expert, the cut
    # (0 where it has at most m counters).
    low = 2**_COUNT_BITS - 1
    ranked = np.sort(expert * 2**_COUNT_BITS + (low - total))
    cut = np.zeros(E, dtype=np.int64)
    over = per_expert > m
    cut[over] = low - (ranked[first[over] + m] & low)
    keep = np.flatnonzero(total > cut[expert])  # at most m per expert, in token order
    e = expert[keep]
    n_kept = np.bincount(e, minlength=E)
    slot = np.arange(len(keep)) - (np.cumsum(n_kept) - n_kept)[e]
    new_ids, new_counts = np.full_like(ids, -1), np.zeros_like(counts)
    new_ids[e, slot], new_counts[e, slot] = keys[keep] % vocab, total[keep] - cut[e]
    return new_ids, new_counts


def merge(states: list[dict], vocab: int) -> dict:
    """Several ranks' summaries merged into one, one rank after another."""
    ids = states[0]["top_token_id"].cpu().numpy().copy()
    counts = states[0]["top_token_count"].cpu().numpy().copy()
    experts = np.arange(ids.shape[1], dtype=np.int64)[:, None]
    for state in states[1:]:
        other_ids = state["top_token_id"].cpu().numpy()
        other_counts = state["top_token_count"].cpu().numpy()
        for i in range(ids.shape[0]):
            kept = other_counts[i] > 0
            keys = (experts * vocab + other_ids[i])[kept]
            ids[i], counts[i] = fold(ids[i], counts[i], keys, other_counts[i][kept], vocab)
    return {"top_token_id": torch.from_numpy(ids), "top_token_count": torch.from_numpy(counts)}


def top_tokens_frame(acc: dict, layers: list[int], tokenizer) -> pd.DataFrame:
    """Per layer and expert, its TOP_TOKENS most frequent tokens by the summary: count (a lower
    bound of the times routed there), error (the bound: true count <= count + error), seen
    (the token's occurrences, exact) and share = count / seen."""
    ids, counts = acc["top_token_id"].long(), acc["top_token_count"]
    m = ids.shape[-1]
    error = (acc["expert_count"] - counts.sum(-1)) // (m + 1)  # [layer, E]
    # Largest count first, equal counts by the smaller token id.
    by_id = ids.argsort(dim=-1, stable=True)
    ids, counts = ids.gather(-1, by_id), counts.gather(-1, by_id)
    order = (-counts).argsort(dim=-1, stable=True)[..., :TOP_TOKENS]
    ids, counts = ids.gather(-1, order).numpy(), counts.gather(-1, order).numpy()
    layer, expert, rank = np.nonzero(counts > 0)
    token_id, count = ids[layer, expert, rank], counts[layer, expert, rank]
    seen = acc["token_seen"].numpy()[token_id]
    texts = {t: tokenizer.decode([t]) if tokenizer is not None else str(t)
             for t in np.unique(token_id).tolist()}  # fmt: skip
    return pd.DataFrame({
        "layer": np.asarray(layers, dtype=np.int64)[layer], "expert": expert.astype(np.int64),
        "rank": rank.astype(np.int64), "token_id": token_id,
        "token": [texts[t] for t in token_id.tolist()], "count": count,
        "error": error.numpy()[layer, expert], "seen": seen, "share": count / seen,
    })  # fmt: skip
