"""Layer kinds: what each layer's sub-blocks are, read once from the Hugging Face config.

A layer is a tuple of sub-blocks in the order of its forward. Sequence mixers (what moves
information between positions) and feed-forward blocks (what works on one position):

  attention                      full causal attention, one KV entry per token
  sliding_attention              attention over the last `sliding_window` tokens only
  compressed_sparse_attention    DeepSeek-V4 (interp's arch-v4 work)
  heavily_compressed_attention   DeepSeek-V4
  mamba2                         a Mamba2 mixer: a fixed-size state, no attention pattern
  mlp, moe, hash_moe             dense MLP, routed experts, token-id-routed experts

Llama is [("attention", "mlp")] * n; Nemotron-H has one sub-block per layer: ("mamba2",),
("attention",), ("moe",) or ("mlp",). A kind interp has no reader for keeps the name its
Hugging Face config gives it (e.g. "linear_attention"), so a refusal can name it.
"""

from __future__ import annotations

from interp.errors import InterpError

SEQUENCE_MIXERS = (
    "attention", "sliding_attention", "compressed_sparse_attention",
    "heavily_compressed_attention", "mamba2",
)  # fmt: skip
FEED_FORWARD = ("mlp", "moe", "hash_moe")

# Nemotron-H's config.layers_block_type (its own names, or transformers' cache names that
# the config now stores them under) -> its one sub-block.
_NEMOTRON_H = {
    "mamba": "mamba2", "linear_attention": "mamba2", "attention": "attention",
    "full_attention": "attention", "moe": "moe", "mlp": "mlp",
}  # fmt: skip
# Sequence mixers interp has no reader for, by model type: the config's cache name -> what the
# layer is (so a refusal names it).
UNREAD_NAMES = {
    "jamba": {"linear_attention": "mamba"},  # Mamba1
    "granitemoehybrid": {"linear_attention": "mamba2", "mamba": "mamba2"},
    "qwen3_next": {"linear_attention": "gated_deltanet"},
    "kimi_linear": {"linear_attention": "kimi_delta_attention"},
    "falcon_h1": {"hybrid": "parallel_attention_mamba2"},  # both read the same input, summed
}
# config.layer_types (transformers' cache vocabulary) -> interp's sequence-mixer kind.
_LAYER_TYPES = {
    "full_attention": "attention",
    "sliding_attention": "sliding_attention",
    "compressed_sparse_attention": "compressed_sparse_attention",
    "heavily_compressed_attention": "heavily_compressed_attention",
}


def hf_config(model):
    """The Hugging Face text config under a TransformerBridge (None for native models)."""
    original = getattr(model, "original_model", None)
    config = getattr(original, "config", None)
    return config.get_text_config() if config is not None else None


def layer_kinds(model, routed) -> list[tuple[str, ...]]:
    """Per layer, its sub-blocks; `routed` holds the layers whose MLP is routed (MoE)."""
    return config_layer_kinds(hf_config(model), model.cfg.n_layers, routed)


def config_layer_kinds(config, n: int, routed) -> list[tuple[str, ...]]:
    """`layer_kinds` from a Hugging Face config alone (None: n full-attention layers)."""
    if getattr(config, "model_type", None) == "nemotron_h":
        return [(_NEMOTRON_H.get(t, t),) for t in config.layers_block_type]
    # As transformers' cache reads it (cache_utils.get_layer_types_and_kwargs).
    default = "sliding_attention" if getattr(config, "sliding_window", None) else "full_attention"
    types = getattr(config, "layer_types", None) or [default] * n
    names = {**_LAYER_TYPES, **UNREAD_NAMES.get(getattr(config, "model_type", None), {})}
    ff = ["moe" if layer in routed else "mlp" for layer in range(n)]
    if getattr(config, "model_type", None) == "deepseek_v4":  # "hash_moe" or "moe" per layer
        ff = list(config.mlp_layer_types)
    return [(names.get(t, t), ff[layer]) for layer, t in enumerate(types[:n])]


def unreadable(kinds: list[tuple[str, ...]], hook_names) -> dict[str, list[int]]:
    """Sequence-mixer kind -> the layers whose delta the trace cannot record: TransformerLens
    gives no output hook for it (hook_attn_out, or hook_mixer_out in one-sub-block hybrids),
    or the hook holds only part of what the layer writes (Falcon-H1's parallel Mamba)."""
    out: dict[str, list[int]] = {}
    for layer, subs in enumerate(kinds):
        # hook_mixer_out: a hybrid's one sub-block; attn_hc: DeepSeek-V4's streams, read
        # through the block's own hooks (interp.trace.streams)
        readable = (f"blocks.{layer}.hook_mixer_out", f"blocks.{layer}.attn_hc.hook_comb")
        if any(name in hook_names for name in readable):
            continue
        mixer = subs[0]
        if mixer not in SEQUENCE_MIXERS or f"blocks.{layer}.hook_attn_out" not in hook_names:
            out.setdefault(mixer, []).append(layer)
    return out


def memory_shapes(model) -> dict:
    """The sizes the memory formulas need beyond the attention shape (interp.trace.memory)."""
    return config_memory_shapes(hf_config(model))


def config_memory_shapes(config) -> dict:
    if config is None:
        return {}
    out = {}
    # Multi-head latent attention (DeepSeek-V3) caches keys and values of their own widths.
    if getattr(config, "qk_nope_head_dim", None) is not None:
        out["k_head_dim"] = int(config.qk_nope_head_dim + config.qk_rope_head_dim)
        out["v_head_dim"] = int(config.v_head_dim)
        # transformers' own MLA forward caches the latent instead (interp.trace.memory)
        out["mla_latent"] = int(config.kv_lora_rank + config.qk_rope_head_dim)
    if getattr(config, "sliding_window", None):
        out["sliding_window"] = int(config.sliding_window)
    if getattr(config, "model_type", None) == "deepseek_v4":  # interp.trace.v4_memory
        out.update(
            head_dim=int(config.head_dim), index_head_dim=int(config.index_head_dim),
            compress_rates={k: int(v) for k, v in config.compress_rates.items()},
        )  # fmt: skip
    if getattr(config, "model_type", None) == "nemotron_h":
        out.update(
            mamba_heads=int(config.mamba_num_heads), mamba_d_head=int(config.mamba_head_dim),
            ssm_state_size=int(config.ssm_state_size), n_groups=int(config.n_groups),
            conv_kernel=int(config.conv_kernel),
        )  # fmt: skip
    return out


def refuse_unreadable(model, kinds: list[tuple[str, ...]], hook_names) -> None:
    """One line naming the layer kinds whose writes the trace cannot record, and what it can
    still capture, before any forward pass."""
    missing = unreadable(kinds, hook_names)
    if missing:
        kind, layers = next(iter(missing.items()))
        arch = getattr(model.cfg, "architecture", None) or type(model).__name__
        raise InterpError(
            f"interp cannot read the {kind!r} layers ({', '.join(map(str, layers))}) of this "
            f"{arch}: no TransformerLens hook holds what they write; it can still capture "
            "logits, sampling and memory, and hooks by name, e.g. capture=['blocks.0.hook_"
            "resid_pre', 'blocks.0.hook_resid_post'] (or 'routing' where interp knows the router)"
        )
