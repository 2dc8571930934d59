"""`ModelFacts`: the shape of a model, read once per trace and stored in its meta.

Names follow TransformerLens's config (n_layers, n_heads, n_key_value_heads, d_head, ...);
the MoE facts come from the Hugging Face router modules (interp.trace.routers), which
TransformerLens does not describe. Layer kinds and the state sizes of the memory they keep
come from the Hugging Face config (interp.trace.kinds).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

import torch

from interp.models.devices import model_dtype
from interp.trace.kinds import (
    config_layer_kinds,
    config_memory_shapes,
    hf_config,
    layer_kinds,
    memory_shapes,
)
from interp.trace.routers import routers


@dataclass(frozen=True)
class ModelFacts:
    n_layers: int
    n_heads: int
    n_key_value_heads: int
    d_model: int
    d_head: int
    d_vocab: int
    n_ctx: int
    moe_layers: list[int] = field(default_factory=list)
    n_experts: int = 0
    top_k: int = 0
    router: str | None = None  # the routing family (interp.trace.routers), e.g. "softmax_topk"
    renormalise_top_k: bool = False  # the chosen experts' weights are rescaled to sum to 1
    n_shared: int = 0  # shared experts per MoE layer, always on
    router_families: list[str] = field(default_factory=list)  # per MoE layer (V4: hash first)
    dtype: str = "float32"  # what the model computes and caches in ("bfloat16", ...)
    # Per layer, its sub-blocks in the order of the forward: ("attention", "mlp"),
    # ("mamba2",), ("sliding_attention", "moe"), ... (interp.trace.kinds.SEQUENCE_MIXERS).
    layer_kinds: list[tuple[str, ...]] = field(default_factory=list)
    n_streams: int = 1  # parallel residual streams (hyper-connections' hc_mult)
    # What the memory formulas need beyond the attention shape (interp.trace.memory):
    # sliding_window, mamba_heads, mamba_d_head, ssm_state_size, n_groups, conv_kernel, ...
    memory_shapes: dict = field(default_factory=dict)

    @property
    def dtype_bytes(self) -> int:
        return torch.finfo(getattr(torch, self.dtype)).bits // 8

    @property
    def group_size(self) -> int:
        """Query heads sharing one key/value head (GQA); 1 for multi-head attention."""
        return self.n_heads // self.n_key_value_heads

    def kv_head(self, head):
        """The key/value head a query head (int or array) reads."""
        return head // self.group_size

    def as_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, values: dict) -> ModelFacts:
        values = dict(values)
        # Saved traces store tuples as lists (JSON); traces saved before kinds have none.
        values["layer_kinds"] = [tuple(k) for k in values.get("layer_kinds", [])]
        return cls(**values)

    def layers_of(self, kind: str) -> list[int]:
        """The layers with a sub-block of this kind."""
        return [layer for layer, kinds in enumerate(self.layer_kinds) if kind in kinds]

    @classmethod
    def of(cls, model) -> ModelFacts:
        cfg = model.cfg
        routed = routers(model)
        facts = {
            "n_layers": cfg.n_layers, "n_heads": cfg.n_heads,
            "n_key_value_heads": getattr(cfg, "n_key_value_heads", None) or cfg.n_heads,
            "d_model": cfg.d_model, "d_head": cfg.d_head, "d_vocab": cfg.d_vocab,
            "n_ctx": cfg.n_ctx, "moe_layers": list(routed),
            "router_families": [r.family for r in routed.values()],
            "dtype": str(model_dtype(model)).removeprefix("torch."),
            "layer_kinds": layer_kinds(model, routed), "memory_shapes": memory_shapes(model),
            "n_streams": int(getattr(hf_config(model), "hc_mult", None) or 1),
        }  # fmt: skip
        if routed:
            first = next(iter(routed.values()))
            facts.update(
                n_experts=first.n_experts, top_k=first.top_k, router=first.family,
                renormalise_top_k=first.renormalise, n_shared=first.n_shared,
            )  # fmt: skip
        return cls(**facts)

    @classmethod
    def of_config(cls, config, dtype: str = "bfloat16") -> ModelFacts:
        """The facts the memory formulas read, from a Hugging Face config alone (no weights,
        no bridge: full-size models). No routers are read, so feed-forward sub-blocks are
        "mlp" except where the config names them (Nemotron-H, DeepSeek-V4); none keeps memory."""
        c = config.get_text_config()
        n, heads = c.num_hidden_layers, c.num_attention_heads
        return cls(
            n_layers=n, n_heads=heads,
            n_key_value_heads=getattr(c, "num_key_value_heads", None) or heads,
            d_model=c.hidden_size, d_head=getattr(c, "head_dim", None) or c.hidden_size // heads,
            d_vocab=c.vocab_size, n_ctx=c.max_position_embeddings, dtype=dtype,
            layer_kinds=config_layer_kinds(c, n, []), memory_shapes=config_memory_shapes(c),
            n_streams=int(getattr(c, "hc_mult", None) or 1),
        )  # fmt: skip
