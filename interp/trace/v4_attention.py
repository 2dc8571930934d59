"""DeepSeek-V4's attention as a pattern over token positions.

V4's eager attention weighs, per head and query, a key axis of two parts (transformers 5.23's
DeepseekV4Attention): the sliding window's keys (each one token; every token so far in a
prompt forward, the last sliding_window tokens in a generation step), then, on compressed
layers, the compressed entries (entry i summarises the compress_rate tokens
[i * rate, (i + 1) * rate); a compressed-sparse entry also reads the span before it, and the
lightning indexer lets each query see only its top index_topk entries). The weight on the
learned sink is dropped, so a row sums to 1 minus the sink's share.

The convention that maps them onto token positions (the pattern interp keeps, [B H Tq Tk]):
a sliding key's weight goes to its own token; a compressed entry's weight is shared evenly by
the rate tokens of its span. With full patterns the trace also keeps the compressed entries'
share (`compressed_patterns`), so the attention frame gives each weight's `source`: sliding
(the window's keys) or compressed (the entries' share); a token can get both. The bridge has
no hook_pattern for V4, so the weights are read from a forward hook on transformers'
attention module (eager).
"""

from __future__ import annotations

import pandas as pd
import torch

COMPRESSED = ("compressed_sparse_attention", "heavily_compressed_attention")


def by_source(weights: torch.Tensor, n_compressed: int, rate: int, n_keys: int):
    """(sliding, compressed) token patterns [B H Tq n_keys] from V4's weights [B H Tq sliding
    + compressed]: the window keys' weights, and the compressed entries' shared over spans."""
    weights = weights.detach().float()
    n_sliding = weights.shape[-1] - n_compressed
    sliding = weights.new_zeros(*weights.shape[:-1], n_keys)
    sliding[..., n_keys - n_sliding :] = weights[..., :n_sliding]
    compressed = torch.zeros_like(sliding)
    if n_compressed:
        spans = weights[..., n_sliding:].repeat_interleave(rate, dim=-1) / rate
        compressed[..., : n_compressed * rate] = spans
    return sliding, compressed


def to_tokens(weights: torch.Tensor, n_compressed: int, rate: int, n_keys: int) -> torch.Tensor:
    """[B H Tq n_keys] token pattern from V4's weights [B H Tq sliding + compressed]."""
    sliding, compressed = by_source(weights, n_compressed, rate, n_keys)
    return sliding + compressed


def attention_handles(model, facts, make_hook, n_keys, keep_compressed=None) -> list:
    """Forward hooks on each layer's transformers attention module; `make_hook(layer)` is the
    trace's pattern hook (interp.trace.hooks) fed with the token pattern; `n_keys()`: keys so
    far in a KV-cache step, None in a forward over the prompt; `keep_compressed(layer,
    pattern)`, when given, is fed the compressed entries' share of it."""
    rates = facts.memory_shapes.get("compress_rates", {})
    handles = []
    for layer, kinds in enumerate(facts.layer_kinds):
        bridge = model.blocks[layer].attn
        module = getattr(bridge, "original_component", None) or bridge
        rate = rates.get(kinds[0], 1)
        hook = make_hook(layer)

        def forward_hook(mod, args, output, hook=hook, rate=rate, layer=layer) -> None:
            weights = output[1]
            total = n_keys() or weights.shape[-2]
            compressor = getattr(mod, "compressor", None)
            n_compressed = 0 if compressor is None else _compressed_len(weights, total, rate)
            sliding, compressed = by_source(weights, n_compressed, rate, total)
            hook(sliding + compressed, None)
            if keep_compressed is not None:
                keep_compressed(layer, compressed)

        handles.append(module.register_forward_hook(forward_hook))
    return handles


def with_source(frame: pd.DataFrame, compressed: pd.DataFrame, kinds) -> pd.DataFrame:
    """The attention frame (its rows in the order of `compressed`, the same frame built from
    `compressed_patterns`) with a `source` column: each weight split into the sliding window's
    share (the rest, to float32 rounding) and, on compressed layers, the entries' share."""
    sliding = frame.assign(source="sliding", weight=frame["weight"] - compressed["weight"])
    layers = [layer for layer, subs in enumerate(kinds) if subs[0] in COMPRESSED]
    entries = compressed[compressed["layer"].isin(layers)].assign(source="compressed")
    columns = [*frame.columns[:-1], "source", "weight"]
    both = pd.concat([sliding, entries], ignore_index=True)[columns]
    return both.sort_values(["prompt", "layer", "head", "query", "key"], kind="stable",
                            ignore_index=True)  # fmt: skip


def _compressed_len(weights: torch.Tensor, total: int, rate: int) -> int:
    """Compressed entries on the key axis: one per closed span of `rate` tokens so far."""
    return min(total // rate, weights.shape[-1])


def heads_of(grouped: torch.Tensor, n_heads: int) -> torch.Tensor:
    """Per-head outputs z [.. H d_head] from the grouped output projection's input
    [.. o_groups H*d_head/o_groups] (attn.o_a_proj.hook_in: attention's output, its rope slice
    already rotated back; group g holds heads g*H/G .. (g+1)*H/G - 1, in order)."""
    return grouped.reshape(*grouped.shape[:-2], n_heads, -1)


def grouped_W_O(model) -> torch.Tensor:
    """[layer H d_head d_model]: each head's share of V4's grouped low-rank output projection,
    W_O^h = (o_b[:, g] o_a[g][:, h])^T for head h of group g. Both projections are linear and
    bias-free, so attention's output is exactly sum_h z_h W_O^h."""
    stacks = []
    for block in model.blocks:
        attn = getattr(block.attn, "original_component", None) or block.attn
        groups, heads = attn.config.o_groups, attn.num_heads
        o_a = attn.o_a_proj.weight.detach().float().cpu()  # [G*r, H*d_head/G]
        o_b = attn.o_b_proj.weight.detach().float().cpu()  # [d, G*r]
        o_a = o_a.view(groups, -1, heads // groups, attn.head_dim)  # [G r H/G d_head]
        o_b = o_b.view(o_b.shape[0], groups, -1)  # [d G r]
        w = torch.einsum("grhe,dgr->ghed", o_a, o_b)  # [G H/G d_head d]
        stacks.append(w.reshape(heads, attn.head_dim, -1))
    return torch.stack(stacks)
