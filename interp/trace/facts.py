"""`ModelFacts`: the shape of a model, read once per trace and stored in its meta.

Names follow TransformerLens's config (n_layers, n_heads, n_key_value_heads, d_head, ...);
the MoE facts come from the Hugging Face config, which TransformerLens does not carry.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import asdict, dataclass, field

import torch

from interp.models.devices import model_dtype


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
    router: str | None = None  # the routing family, e.g. "softmax_top_k"
    renormalise_top_k: bool = False  # the chosen experts' weights are rescaled to sum to 1
    dtype: str = "float32"  # what the model computes and caches in ("bfloat16", ...)

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
        return cls(**values)

    @classmethod
    def of(cls, model, hook_names: Iterable[str] | None = None) -> ModelFacts:
        cfg = model.cfg
        moe = moe_layers(model, hook_names)
        facts = {
            "n_layers": cfg.n_layers, "n_heads": cfg.n_heads,
            "n_key_value_heads": getattr(cfg, "n_key_value_heads", None) or cfg.n_heads,
            "d_model": cfg.d_model, "d_head": cfg.d_head, "d_vocab": cfg.d_vocab,
            "n_ctx": cfg.n_ctx, "moe_layers": moe,
            "dtype": str(model_dtype(model)).removeprefix("torch."),
        }  # fmt: skip
        hf = getattr(getattr(model, "original_model", None), "config", None)
        if moe and hf is not None:
            facts["n_experts"] = getattr(hf, "num_experts", None) or hf.num_local_experts
            facts["top_k"] = hf.num_experts_per_tok
            facts["router"] = "softmax_top_k"
            # Mixtral always renormalises the chosen weights; OLMoE and Qwen only if configured.
            facts["renormalise_top_k"] = bool(
                hf.model_type == "mixtral" or getattr(hf, "norm_topk_prob", False)
            )
        return cls(**facts)


def moe_layers(model, hook_names: Iterable[str] | None = None) -> list[int]:
    """Layers whose MLP is a routed mixture (a dense gated MLP also has `mlp.gate`)."""
    # The bridge rebuilds hook_dict on every access: callers that have it pass it in.
    names = model.hook_dict if hook_names is None else hook_names
    return [
        layer
        for layer in range(model.cfg.n_layers)
        if f"blocks.{layer}.mlp.hook_expert_indices" in names
    ]
