"""Head statistics of a survey: each attention pattern is reduced to per-head sums inside its
own hook (`blocks.{l}.attn.hook_pattern`), so no [pos, pos] pattern outlives its layer."""

from __future__ import annotations

import pandas as pd
import torch

from interp.analysis.induction import natural_text_scores, text_masks
from interp.survey.accumulators import Accumulators
from interp.survey.batch import Batch

SCORES = ("previous_token", "induction", "duplicate_token", "sink", "entropy")


class HeadStats:
    def __init__(self, model, acc: Accumulators, domains: list[str], facts: dict):
        self.n_layers, self.n_heads = facts["n_layers"], facts["n_heads"]
        self.n_kv = facts["n_key_value_heads"]
        self.sums = {s: acc.sums(f"head_{s}_sum", self.n_layers, self.n_heads) for s in SCORES}
        self.queries = {s: acc.counts(f"head_{s}_queries", self.n_layers) for s in SCORES}
        self.masks: dict[str, torch.Tensor] = {}

    def hooks(self) -> list[tuple[str, object]]:
        return [(f"blocks.{layer}.attn.hook_pattern", self._hook(layer))
                for layer in range(self.n_layers)]  # fmt: skip

    def start(self, batch: Batch) -> None:
        self.masks = text_masks(batch.ids, batch.valid)

    def _hook(self, layer: int):
        def hook(pattern: torch.Tensor, hook) -> None:
            scores = natural_text_scores(pattern, self.masks)
            for name, (total, queries) in scores.items():
                self.sums[name][layer] += total
                self.queries[name][layer] += queries

        return hook

    def finish(self, batch: Batch, logits: torch.Tensor) -> None:
        pass

    def tables(self, acc: dict[str, torch.Tensor], domains: list[str], tokenizer) -> dict:
        return {"heads": head_table(acc, self.n_layers, self.n_heads, self.n_kv)}


def head_table(acc, n_layers: int, n_heads: int, n_kv: int) -> pd.DataFrame:
    """One row per (layer, head): each score's mean over the queries it is defined on."""
    layer, head = torch.meshgrid(torch.arange(n_layers), torch.arange(n_heads), indexing="ij")
    frame = {"layer": layer.flatten().numpy(), "head": head.flatten().numpy(),
             "kv_head": (head // (n_heads // n_kv)).flatten().numpy()}  # fmt: skip
    for name in SCORES:
        queries = acc[f"head_{name}_queries"].clamp_min(1)[:, None]
        frame[name] = (acc[f"head_{name}_sum"] / queries).flatten().numpy()
    return pd.DataFrame(frame)
