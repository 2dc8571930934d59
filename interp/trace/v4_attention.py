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
the rate tokens of its span. The bridge has no hook_pattern for V4, so the weights are read
from a forward hook on transformers' attention module (eager).
"""

from __future__ import annotations

import torch


def to_tokens(weights: torch.Tensor, n_compressed: int, rate: int, n_keys: int) -> torch.Tensor:
    """[B H Tq n_keys] token pattern from V4's weights [B H Tq sliding + compressed]."""
    weights = weights.detach().float()
    n_sliding = weights.shape[-1] - n_compressed
    out = weights.new_zeros(*weights.shape[:-1], n_keys)
    out[..., n_keys - n_sliding :] = weights[..., :n_sliding]
    if n_compressed:
        spans = weights[..., n_sliding:].repeat_interleave(rate, dim=-1) / rate
        out[..., : n_compressed * rate] += spans
    return out


def attention_handles(model, facts, make_hook, n_keys: int | None) -> list:
    """Forward hooks on each layer's transformers attention module; `make_hook(layer)` is the
    trace's pattern hook (interp.trace.hooks) fed with the token pattern."""
    rates = facts.memory_shapes.get("compress_rates", {})
    handles = []
    for layer, kinds in enumerate(facts.layer_kinds):
        bridge = model.blocks[layer].attn
        module = getattr(bridge, "original_component", None) or bridge
        rate = rates.get(kinds[0], 1)
        hook = make_hook(layer)

        def forward_hook(mod, args, output, hook=hook, rate=rate) -> None:
            weights = output[1]
            total = n_keys or weights.shape[-2]
            compressor = getattr(mod, "compressor", None)
            n_compressed = 0 if compressor is None else _compressed_len(weights, total, rate)
            hook(to_tokens(weights, n_compressed, rate, total), None)

        handles.append(module.register_forward_hook(forward_hook))
    return handles


def _compressed_len(weights: torch.Tensor, total: int, rate: int) -> int:
    """Compressed entries on the key axis: one per closed span of `rate` tokens so far."""
    return min(total // rate, weights.shape[-1])
