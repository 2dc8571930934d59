"""The memory a generation keeps, per layer: the `memory` frame.

Each layer kind (interp.trace.kinds) keeps zero or more kinds of memory (`HELD_BY`); each
memory kind has a formula and a reader of the real cache object (`KINDS`):

  kv          full attention: K and V, one entry per token: entries = n (each of KV heads x
              (key + value width): 2 x d_head, or MLA's own widths)
  sliding_kv  sliding attention: transformers keeps the last sliding_window - 1 tokens
  mla_latent  DeepSeek-V3's attention as transformers' own forward caches it: one latent of
              kv_lora_rank + qk_rope_head_dim per token, shared by the heads. A trace runs TL's
              MLA bridge, which caches per-head K and V instead (`kv`, MLA's widths), so only
              `layer_memory(facts, own_cache=True)` asks for it (experiments/memory_palace.py)
  ssm_state   a Mamba2 layer's recurrent state: one entry, heads x d_head x state size, in
              float32 whatever the model's dtype (transformers' chunked scan computes it so)
  conv_state  a Mamba2 layer's causal-conv window: conv_kernel entries of conv_dim channels

bytes = entries x bytes per entry, in the model's dtype, for one sequence. `positions` is how
many token positions the entry covers (a Mamba state summarises every token so far; a sliding
window only its last tokens). Other kinds (DeepSeek-V4's compressed caches) register here.
The per-step totals (`trace.kv_cache`) are the sum of this frame (interp.trace.kv_cache).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch

from interp.trace.facts import ModelFacts


@dataclass(frozen=True)
class MemoryKind:
    """One kind of memory: how much it holds after n tokens, and how to read the real one."""

    entries: Callable[[ModelFacts, int], int]  # slots held after n tokens
    positions: Callable[[ModelFacts, int], int]  # token positions those slots cover
    entry_bytes: Callable[..., int] | None  # bytes of one slot
    measure: Callable[[object], int]  # bytes held by a transformers cache layer
    grows_with_heads: bool = False  # bytes scale with key/value heads (GQA saves them)
    # entries / positions / entry_bytes also take the layer's sequence-mixer kind (its
    # compression rate differs: DeepSeek-V4's compressed caches, interp.trace.v4_memory).
    by_layer_kind: bool = False
    # Slots of mixed widths (V4's compressor state): bytes(facts, n[, sub]) instead of
    # entries x entry_bytes.
    total_bytes: Callable[..., int] | None = None


def _tensor_bytes(*tensors) -> int:
    return sum(t.numel() * t.element_size() for t in tensors if isinstance(t, torch.Tensor))


def _kv_measured(layer) -> int:
    keys, values = getattr(layer, "keys", None), getattr(layer, "values", None)
    # DeepSeek-V4's compressed layers keep K = V in one tensor: counted once.
    return _tensor_bytes(keys, None if values is keys else values)


def _states_measured(name: str) -> Callable[[object], int]:
    def measure(layer) -> int:
        return _tensor_bytes(*(getattr(layer, name, None) or {}).values())

    return measure


def _kv_entry(facts: ModelFacts) -> int:
    m = facts.memory_shapes
    width = m.get("k_head_dim", facts.d_head) + m.get("v_head_dim", facts.d_head)
    return facts.n_key_value_heads * width * facts.dtype_bytes


def _window(facts: ModelFacts, n: int) -> int:
    return min(n, facts.memory_shapes["sliding_window"] - 1)


def _ssm_entry(facts: ModelFacts) -> int:
    m = facts.memory_shapes
    return m["mamba_heads"] * m["mamba_d_head"] * m["ssm_state_size"] * 4  # float32


def _latent_entry(facts: ModelFacts) -> int:
    return facts.memory_shapes["mla_latent"] * facts.dtype_bytes


def _conv_entry(facts: ModelFacts) -> int:
    m = facts.memory_shapes
    channels = m["mamba_heads"] * m["mamba_d_head"] + 2 * m["n_groups"] * m["ssm_state_size"]
    return channels * facts.dtype_bytes


KINDS: dict[str, MemoryKind] = {
    "kv": MemoryKind(
        lambda f, n: n, lambda f, n: n, _kv_entry, _kv_measured, grows_with_heads=True
    ),
    "sliding_kv": MemoryKind(_window, _window, _kv_entry, _kv_measured, grows_with_heads=True),
    "mla_latent": MemoryKind(lambda f, n: n, lambda f, n: n, _latent_entry, _kv_measured),
    "ssm_state": MemoryKind(
        lambda f, n: 1, lambda f, n: n, _ssm_entry, _states_measured("recurrent_states")
    ),
    "conv_state": MemoryKind(
        lambda f, n: f.memory_shapes["conv_kernel"],
        lambda f, n: min(n, f.memory_shapes["conv_kernel"]),
        _conv_entry,
        _states_measured("conv_states"),
    ),
}

# Layer kind (a sub-block of interp.trace.kinds) -> the memory kinds it keeps, in order.
HELD_BY: dict[str, tuple[str, ...]] = {
    "attention": ("kv",),
    "sliding_attention": ("sliding_kv",),
    "mamba2": ("ssm_state", "conv_state"),
}


def registry() -> dict[str, MemoryKind]:
    """Every memory kind: these and DeepSeek-V4's (interp.trace.v4_memory)."""
    from interp.trace.v4_memory import KINDS_V4  # it builds on this module's MemoryKind

    return {**KINDS, **KINDS_V4}


def _held_by(facts: ModelFacts) -> dict[str, tuple[str, ...]]:
    if facts.n_streams > 1 and "compress_rates" in facts.memory_shapes:  # DeepSeek-V4
        from interp.trace.v4_memory import HELD_BY_V4

        return {**HELD_BY, **HELD_BY_V4}
    return HELD_BY


def layer_memory(facts: ModelFacts, own_cache: bool = False) -> list[tuple[int, str, str]]:
    """(layer, memory kind, the sub-block holding it) for every memory the model keeps;
    `own_cache`: as transformers' own forward keeps it, where that differs from a trace's."""
    held_by = _held_by(facts)
    if own_cache and "mla_latent" in facts.memory_shapes:
        held_by = {**held_by, "attention": ("mla_latent",)}
    return [
        (layer, kind, sub)
        for layer, subs in enumerate(facts.layer_kinds)
        for sub in subs
        for kind in held_by.get(sub, ())
    ]


def formula(facts: ModelFacts, kind: str, n: int, sub: str = "") -> dict:
    """positions, entries and bytes of one layer's `kind` after n tokens (one sequence);
    `sub`: the layer's sub-block that holds it (for kinds `by_layer_kind`)."""
    spec = registry()[kind]
    extra = (sub,) if spec.by_layer_kind else ()
    entries = spec.entries(facts, n, *extra)
    if spec.total_bytes is not None:
        n_bytes = spec.total_bytes(facts, n, *extra)
    else:
        n_bytes = entries * spec.entry_bytes(facts, *extra)
    return {"positions": spec.positions(facts, n, *extra), "entries": entries, "bytes": n_bytes}


def memory_rows(facts: ModelFacts, n: int, past=None) -> list[dict]:
    """One row per (layer, memory kind) after n tokens; measured in `past` when given."""
    layers = getattr(past, "layers", None)
    rows = []
    for layer, kind, sub in layer_memory(facts):
        row = {"layer": layer, "kind": kind, **formula(facts, kind, n, sub)}
        if layers is not None:
            row["measured_bytes"] = registry()[kind].measure(layers[layer])
        rows.append(row)
    return rows
