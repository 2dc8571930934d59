"""The KV cache a generation leaves: the bytes the formula predicts and the bytes measured."""

from __future__ import annotations

import torch

from interp.trace.facts import ModelFacts


def kv_cache_bytes(
    facts: ModelFacts, positions: int, dtype_bytes: int | None = None
) -> tuple[int, int]:
    """(bytes held with the model's KV heads, bytes full multi-head attention would hold).

    2 (K and V) x layers x KV heads x d_head x positions x bytes; MLP and MoE layers add nothing.
    `dtype_bytes` defaults to the model's own dtype (2 in bfloat16, 4 in float32).
    """
    dtype_bytes = dtype_bytes or facts.dtype_bytes
    per_head = 2 * facts.n_layers * facts.d_head * positions * dtype_bytes
    return per_head * facts.n_key_value_heads, per_head * facts.n_heads


def measured_cache_bytes(past_key_values) -> int:
    """Bytes actually held by a Hugging Face cache object."""
    total = 0
    for layer in getattr(past_key_values, "layers", []):
        for tensor in (getattr(layer, "keys", None), getattr(layer, "values", None)):
            if isinstance(tensor, torch.Tensor):
                total += tensor.numel() * tensor.element_size()
    return total
