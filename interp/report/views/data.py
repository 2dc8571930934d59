"""A traced prompt -> the data one view draws: plain lists and packed typed arrays.

Each builder reads the trace (its tensors and frames) or an analysis of it; none computes
anything the analyses do not already compute, they only quantise and pack.
"""

from __future__ import annotations

import json

import numpy as np
import torch

from interp.errors import InterpError
from interp.report.views.encode import LEVELS, pack, quantise
from interp.report.views.feature_data import features
from interp.text import show_text, show_token

# Keys kept per attention row: the heaviest, up to this many. A 2,048-token page stays tens of
# megabytes instead of gigabytes; rows of short prompts are kept whole (every key >= 1/510).
ROW_KEYS = 32


def tokens(trace, prompt: int) -> dict:
    """The token texts of one prompt as running text (`show_text`: control characters made
    visible); unescaped, since the page inserts them as text."""
    record = _record(trace, prompt)
    frame = trace.tokens
    texts = frame.loc[frame["prompt"] == prompt, "token"].map(show_text).tolist()
    return {"tokens": texts, "n_prompt": int(record.n_prompt)}


def layer_rows(pattern: torch.Tensor, keep: int = ROW_KEYS) -> tuple[np.ndarray, ...]:
    """One layer's rows [head query key] -> (counts [head query], keys, levels): per row its
    `keep` heaviest keys whose quantised weight is not 0, row after row."""
    weights, index = pattern.float().topk(min(keep, pattern.shape[-1]), dim=-1)  # heaviest first
    q = torch.from_numpy(quantise(weights.numpy()))
    kept = q > 0
    return kept.sum(-1).numpy().astype(np.uint16), index[kept].numpy(), q[kept].numpy()


def pack_rows(parts: list[tuple[np.ndarray, ...]], keep: int = ROW_KEYS) -> dict:
    """`layer_rows` of every layer, in layer order -> counts [layer head query], keys, weights."""
    counts, keys, levels = zip(*parts)
    return {
        "counts": pack(np.concatenate([c.reshape(-1) for c in counts]), "uint16"),
        "keys": pack(np.concatenate(keys), "uint16"),
        "weights": pack(np.concatenate(levels), "uint8"),
        "row_keys": keep,
    }


def sparse_rows(layers, keep: int = ROW_KEYS) -> dict:
    """Attention rows [layer][head query key], packed sparse (see `layer_rows`)."""
    return pack_rows([layer_rows(pattern, keep) for pattern in layers], keep)


def _attention_layers(record):
    """(rows per layer [head query key], what they hold): full patterns, else each head's top
    sources per query with the exact rows of the query positions (a trace past its attention
    budget), built one layer at a time so a long prompt's full rows never exist at once."""
    t = record.tensors
    if "patterns" in t:
        return iter(t["patterns"]), "full"
    if "top_weights" not in t:
        raise InterpError("the attention view needs a trace captured with 'attention'")

    def layers():
        n = len(record.ids)
        for layer in range(t["top_weights"].shape[0]):
            weights, keys = t["top_weights"][layer], t["top_keys"][layer]  # [head query k]
            rows = torch.zeros(*weights.shape[:2], n)
            rows.scatter_add_(-1, keys.clamp_min(0), weights * (keys >= 0))
            if "query_rows" in t:
                rows[:, record.query_positions] = t["query_rows"][layer, :, :, :n]
            yield rows

    return layers(), "top sources (past the attention budget: the last rows are whole)"


def attention(trace, prompt: int, keep: int = ROW_KEYS) -> dict:
    record = _record(trace, prompt)
    layers, kept = _attention_layers(record)
    return attention_payload(trace, prompt, sparse_rows(layers, keep), kept)


def attention_payload(trace, prompt: int, rows: dict, kept: str) -> dict:
    """The attention view's data around packed rows (`sparse_rows`, or `pack_rows` of rows
    reduced while the model ran, for prompts whose full patterns would not fit in memory)."""
    facts = trace.facts
    n_heads = facts.n_heads
    group = n_heads // facts.n_key_value_heads
    return {
        **tokens(trace, prompt),
        "n_layers": facts.n_layers,
        "n_heads": n_heads,
        "kv_heads": [h // group for h in range(n_heads)],
        "levels": LEVELS,
        "kept": kept,
        **rows,
    }


def lens(trace, prompt: int, k: int = 5) -> dict:
    """The logit lens's top-k per (layer, position): token ids into a small vocabulary of the
    texts that occur, and quantised probabilities."""
    from interp.analysis.lens import logit_lens

    top, _ = logit_lens(trace, prompt, k=k)
    top = top.sort_values(["layer", "pos", "rank"])
    vocab, index = np.unique(top["token_id"].to_numpy(), return_inverse=True)
    texts = dict(zip(top["token_id"], top["token"]))
    return {
        **tokens(trace, prompt),
        "n_layers": int(top["layer"].max()) + 1,
        "k": k,
        "vocab": [show_token(texts[i]) for i in vocab.tolist()],
        "top": pack(index, "uint32"),  # [layer pos k]
        "probs": pack(quantise(top["prob"].to_numpy()), "uint8"),
        "levels": LEVELS,
    }


def routing(trace, prompt: int) -> dict:
    """The experts each position chose in each MoE layer, heaviest first, with their weights."""
    _record(trace, prompt)
    frame = trace.routing
    # Routed experts only: shared ones are on for every token.
    chosen = frame[(frame["prompt"] == prompt) & frame["selected"] & ~frame["shared"]]
    if chosen.empty:
        raise InterpError("the routing view needs a MoE model traced with 'routing'")
    chosen = chosen.sort_values(["layer", "pos", "rank"])
    facts = trace.facts
    # DeepSeek-V3 scales its weights by routed_scaling_factor (> 1): quantise weight / scale.
    scale = max(1.0, float(chosen["weight"].max()))
    return {
        **tokens(trace, prompt),
        "layers": list(facts.moe_layers),
        "n_experts": int(facts.n_experts),
        "top_k": int(facts.top_k),
        "experts": pack(chosen["expert"].to_numpy(), "uint16"),  # [moe_layer pos top_k]
        "weights": pack(quantise(chosen["weight"].to_numpy() / scale), "uint8"),
        "levels": LEVELS / scale,  # weight = level / levels
    }


def journey(trace, prompt: int, positions=None) -> dict:
    """`analysis.journey` of each position in `positions` (default: the last prompt
    position and every generated one), as rows of plain values."""
    from interp.analysis.journey import journey as follow

    record = _record(trace, prompt)
    if positions is None:
        positions = range(record.n_prompt - 1, len(record.ids))
    journeys = {}
    for pos in positions:
        frame = follow(trace, prompt, int(pos)).drop(columns=["prompt"])
        journeys[str(int(pos))] = json.loads(frame.to_json(orient="records"))  # NaN -> null
    return {**tokens(trace, prompt), "journeys": journeys}


def _record(trace, prompt: int):
    if not trace.records:
        raise InterpError("views need a live trace (a saved one keeps no tensors)")
    if not 0 <= prompt < len(trace.records):
        count = len(trace.records)
        raise InterpError(f"prompt {prompt} is outside the traced prompts [0, {count})")
    return trace.records[prompt]


BUILDERS = {"attention": attention, "lens": lens, "routing": routing, "journey": journey,
            "features": features}  # fmt: skip
