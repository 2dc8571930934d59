"""Feature statistics of a survey: how often each dictionary feature fires, and its top
activating contexts.

Per dictionary: counts of the tokens each feature fires on and the sum of its activations
(merged by addition), and a bounded top-N per feature: the N largest activations with the
token's global id (window index * seq_len + pos), the context's token ids (BEFORE tokens
before it, AFTER after) and the feature's activation on each of them. The top-N merges by
keeping the N largest of the union, ties broken by the smaller id, so a merge of any split of
the batches (ranks, a resumed checkpoint) keeps exactly what one pass over them keeps.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import torch

from interp.features.attach import dictionary_hooks
from interp.features.dictionary import Dictionary
from interp.survey.accumulators import Accumulators
from interp.survey.batch import Batch
from interp.text import token_texts

TOP_N = 10
BEFORE, AFTER = 8, 3
CONTEXT = BEFORE + 1 + AFTER
DENSE = 0.1  # a feature firing on more than this share of tokens counts as dense
DENSITY_EDGES = np.linspace(-7, 0, 29)  # log10 density bins, a quarter decade each
TOP = ("value", "id", "tokens", "acts")


def merge_top(states: list[dict], prefix: str, n: int) -> dict:
    """The top `n` per feature of several top-N states ({prefix}value [F N], id, tokens
    [F N C], acts [F N C]): the largest values first, equal values by the smaller id."""
    cat = {key: torch.cat([s[prefix + key] for s in states], dim=1) for key in TOP}
    # Sort by id, then stably by value: the order is total, whatever order the states came in.
    by_id = cat["id"].argsort(dim=1, stable=True)
    value = cat["value"].gather(1, by_id)
    order = by_id.gather(1, value.argsort(dim=1, descending=True, stable=True))[:, :n]
    out = {}
    for key in TOP:
        index = order if cat[key].ndim == 2 else order[..., None].expand(-1, -1, CONTEXT)
        out[prefix + key] = cat[key].gather(1, index)
    return out


class FeatureStats:
    def __init__(self, acc: Accumulators, dictionaries: list[Dictionary], seq_len: int):
        self.dicts, self.seq_len = dictionaries, seq_len
        self.count, self.act_sum, self.top = [], [], []
        self.tokens = acc.counts("feature_tokens")
        self.batch: Batch | None = None
        for i, d in enumerate(dictionaries):
            F, p = d.d_sae, f"feature{i}_top_"
            self.count.append(acc.counts(f"feature{i}_count", F))
            self.act_sum.append(acc.sums(f"feature{i}_act_sum", F))
            spec = {p + "value": ((F, TOP_N), torch.float64, float("-inf")),
                    p + "id": ((F, TOP_N), torch.int64, -1),
                    p + "tokens": ((F, TOP_N, CONTEXT), torch.int64, -1),
                    p + "acts": ((F, TOP_N, CONTEXT), torch.float32, 0.0)}  # fmt: skip
            self.top.append(acc.merged(spec, lambda states, p=p: merge_top(states, p, TOP_N)))

    def hooks(self) -> list[tuple[str, object]]:
        return [pair for i, d in enumerate(self.dicts)
                for pair in dictionary_hooks(d, self._at_output(i))]  # fmt: skip

    def start(self, batch: Batch) -> None:
        self.batch = batch
        self.tokens += batch.valid.sum()

    def _at_output(self, i: int):
        def count(d: Dictionary, x: torch.Tensor, target: torch.Tensor) -> None:
            self._add(i, d.encode(x) * self.batch.valid[..., None])

        return count

    def _add(self, i: int, acts: torch.Tensor) -> None:
        batch, (B, T, F) = self.batch, acts.shape
        self.count[i] += (acts > 0).sum((0, 1))
        self.act_sum[i] += acts.sum((0, 1)).double()
        n = min(TOP_N, B * T)
        top = acts.reshape(B * T, F).topk(n, dim=0)  # [n F]
        b, pos = top.indices // T, top.indices % T
        ctx = pos[..., None] + torch.arange(-BEFORE, AFTER + 1, device=acts.device)  # [n F C]
        inside = (ctx >= 0) & (ctx < T)
        ctx_c = ctx.clamp(0, T - 1)
        b_c = b[..., None].expand_as(ctx_c)
        inside &= batch.valid[b_c, ctx_c]
        feature = torch.arange(F, device=acts.device)[None, :, None].expand_as(ctx_c)
        p = f"feature{i}_top_"
        value = top.values.double()
        fresh = {
            p + "value": torch.where(value > 0, value, float("-inf")).T,
            p + "id": (batch.index[b] * self.seq_len + pos).T,
            p + "tokens": torch.where(inside, batch.ids[b_c, ctx_c], -1).transpose(0, 1),
            p + "acts": torch.where(inside, acts[b_c, ctx_c, feature], 0.0).transpose(0, 1),
        }
        for name, t in merge_top([self.top[i], fresh], p, TOP_N).items():
            self.top[i][name].copy_(t)

    def finish(self, batch: Batch, logits: torch.Tensor) -> None:
        pass

    def tables(self, acc: dict[str, torch.Tensor], domains: list[str], tokenizer) -> dict:
        tokens = max(int(acc["feature_tokens"]), 1)
        features, contexts, density, summary = [], [], [], []
        for i, d in enumerate(self.dicts):
            count = acc[f"feature{i}_count"].numpy()
            dens = count / tokens
            top = {k: acc[f"feature{i}_top_{k}"] for k in TOP}
            features.append(pd.DataFrame({
                "dictionary": d.name, "feature": np.arange(d.d_sae), "count": count,
                "density": dens.astype(np.float32),
                "mean_activation": (acc[f"feature{i}_act_sum"].numpy()
                                    / np.maximum(count, 1)).astype(np.float32),
                "max_activation": np.where(count > 0, top["value"][:, 0].numpy(), 0.0)
                .astype(np.float32),
            }))  # fmt: skip
            contexts.append(_contexts(d, top, tokenizer, self.seq_len))
            alive = np.log10(dens[count > 0])
            hist, _ = np.histogram(np.clip(alive, DENSITY_EDGES[0], 0), DENSITY_EDGES)
            density.append(
                pd.DataFrame(
                    {
                        "dictionary": d.name,
                        "low": DENSITY_EDGES[:-1],
                        "high": DENSITY_EDGES[1:],
                        "features": hist,
                    }
                )
            )
            summary.append({"dictionary": d.name, "hook": d.hook_out, "d_sae": d.d_sae,
                            "tokens": int(acc["feature_tokens"]),
                            "l0": float(count.sum() / tokens),
                            "dead_fraction": float((count == 0).mean()),
                            "dense_fraction": float((dens > DENSE).mean()),
                            "dense_threshold": DENSE})  # fmt: skip
        return {"features": pd.concat(features, ignore_index=True),
                "feature_contexts": pd.concat(contexts, ignore_index=True),
                "feature_density": pd.concat(density, ignore_index=True),
                "feature_summary": pd.DataFrame(summary)}  # fmt: skip


def _contexts(d: Dictionary, top: dict, tokenizer, seq_len: int) -> pd.DataFrame:
    """One row per kept context: the feature, its rank, the activation, where it was, and the
    context's token texts and the feature's activation on each."""
    feature, rank = np.nonzero(np.isfinite(top["value"].numpy()))
    ids = top["id"].numpy()[feature, rank]
    tokens = top["tokens"].numpy()[feature, rank]
    acts = top["acts"].numpy()[feature, rank]
    texts = [token_texts(tokenizer, row[row >= 0]) for row in tokens]
    keep = [a[row >= 0].astype(np.float32) for a, row in zip(acts, tokens)]
    return pd.DataFrame({
        "dictionary": d.name, "feature": feature.astype(np.int64), "rank": rank.astype(np.int64),
        "activation": top["value"].numpy()[feature, rank].astype(np.float32),
        "window": ids // seq_len, "pos": ids % seq_len,
        "focus": [int((row[: BEFORE + 1] >= 0).sum()) - 1 for row in tokens],
        "context": texts, "context_activation": keep,
    })  # fmt: skip
