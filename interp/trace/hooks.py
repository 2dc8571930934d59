"""The capture hooks: they turn one forward pass into plain tensors (a `Capture`).

Every hook writes into a `Capture`; nothing is kept that was not asked for. Attention is
kept in full only under a memory budget; otherwise each hook reduces its pattern on the spot
(mass received per key, entropy per query, top sources per query, rows of chosen queries),
so memory grows with T, not T^2.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable
from dataclasses import dataclass, field

import torch

from interp.trace.facts import moe_layers

GROUPS = {"residual", "attention", "routing", "shapes"}
TOP_SOURCES = 3


@dataclass
class Capture:
    """Tensors of one forward over a batch [B, T], per layer; `assemble` stacks them layer-major
    after the forward."""

    resid_pre: dict[int, torch.Tensor] = field(default_factory=dict)  # [B, T, d]
    attn_out: dict[int, torch.Tensor] = field(default_factory=dict)
    mlp_out: dict[int, torch.Tensor] = field(default_factory=dict)
    resid_post: dict[int, torch.Tensor] = field(default_factory=dict)
    z: dict[int, torch.Tensor] = field(default_factory=dict)  # [B, T, H, d_head]
    patterns: dict[int, torch.Tensor] = field(default_factory=dict)  # [B, H, T, T]
    key_mass: dict[int, torch.Tensor] = field(default_factory=dict)  # [B, H, T]
    query_entropy: dict[int, torch.Tensor] = field(default_factory=dict)  # [B, H, T]
    top_sources: dict[int, tuple[torch.Tensor, torch.Tensor]] = field(default_factory=dict)
    query_rows: dict[int, torch.Tensor] = field(default_factory=dict)  # [B, H, nq, T]
    router_logits: dict[int, torch.Tensor] = field(default_factory=dict)  # [B, T, E]
    shapes: list[tuple[str, tuple[int, ...]]] = field(default_factory=list)


def _store(target: dict, layer: int):
    def hook(tensor: torch.Tensor, hook) -> None:
        target[layer] = tensor.detach().clone()

    return hook


def _attention_hook(cap: Capture, layer: int, keep_full: bool, rows, lengths):
    """`rows` [B, nq]: query positions whose full rows are kept; `lengths`: real tokens per
    prompt, so right-padding queries never add to the mass a key receives."""

    def hook(pattern: torch.Tensor, hook) -> None:
        pattern = pattern.detach()
        if keep_full:
            cap.patterns[layer] = pattern.clone()
        if all(n == pattern.shape[2] for n in lengths):
            cap.key_mass[layer] = pattern.sum(dim=-2)
        else:
            real = torch.zeros(pattern.shape[0], 1, pattern.shape[2], 1, dtype=pattern.dtype)
            for b, n in enumerate(lengths):
                real[b, :, :n] = 1.0
            cap.key_mass[layer] = (pattern * real).sum(dim=-2)
        cap.query_entropy[layer] = torch.special.entr(pattern).sum(dim=-1)
        k = min(TOP_SOURCES, pattern.shape[-1])
        weights, keys = pattern.topk(k, dim=-1)
        if k < TOP_SOURCES:  # fewer keys than sources: pad so steps concatenate
            pad = TOP_SOURCES - k
            weights = torch.nn.functional.pad(weights, (0, pad))
            keys = torch.nn.functional.pad(keys, (0, pad), value=-1)
        cap.top_sources[layer] = (weights, keys)
        if rows is not None:
            cap.query_rows[layer] = torch.stack(
                [pattern[b][:, rows[b], :] for b in range(pattern.shape[0])]
            )

    return hook


def _router_hook(cap: Capture, layer: int, batch: int):
    def hook(logits: torch.Tensor, hook) -> None:
        # MoE routers see the flattened [B*T, E] token list.
        cap.router_logits[layer] = logits.detach().reshape(batch, -1, logits.shape[-1]).clone()

    return hook


def _shape_hook(cap: Capture, name: str):
    # `name`, not hook.name: TL aliases (hook_resid_pre -> hook_in) share one hook point.
    def hook(tensor: torch.Tensor, hook) -> None:
        if isinstance(tensor, torch.Tensor):
            cap.shapes.append((name, tuple(tensor.shape)))

    return hook


def build_hooks(
    model,
    cap: Capture,
    groups: set[str],
    batch: int,
    keep_full_attention: bool,
    query_rows: torch.Tensor | None,
    lengths: list[int],
    hook_names: Collection[str],
) -> list[tuple[str, object]]:
    """(hook name, fn) pairs for `model.hooks(fwd_hooks=...)` capturing `groups`.

    `hook_names`: the model's hook_dict keys in order, read once by the caller.
    """
    hooks: list[tuple[str, object]] = []
    routed = set(moe_layers(model, hook_names)) if "routing" in groups else set()
    for layer in range(model.cfg.n_layers):
        prefix = f"blocks.{layer}"
        if "residual" in groups:
            hooks += [
                (f"{prefix}.hook_resid_pre", _store(cap.resid_pre, layer)),
                (f"{prefix}.hook_attn_out", _store(cap.attn_out, layer)),
                (f"{prefix}.attn.hook_z", _store(cap.z, layer)),
            ]
            if layer == model.cfg.n_layers - 1:  # earlier resid_posts are the next resid_pres
                hooks.append((f"{prefix}.hook_resid_post", _store(cap.resid_post, layer)))
            if f"{prefix}.hook_mlp_out" in hook_names:
                hooks.append((f"{prefix}.hook_mlp_out", _store(cap.mlp_out, layer)))
        if "attention" in groups:
            hook = _attention_hook(cap, layer, keep_full_attention, query_rows, lengths)
            hooks.append((f"{prefix}.attn.hook_pattern", hook))
        if layer in routed:
            hooks.append((f"{prefix}.mlp.gate.hook_out", _router_hook(cap, layer, batch)))
    if "shapes" in groups:
        hooks += [(name, _shape_hook(cap, name)) for name in block_hook_names(hook_names, 0)]
    return hooks


# TL hooks that only fire after a `set_use_*` switch (they would change the forward's cost).
_SWITCHED = ("hook_mlp_in", "hook_attn_in", "hook_q_input", "hook_k_input", "hook_v_input",
             "attn.hook_result")  # fmt: skip


def block_hook_names(hook_names: Iterable[str], layer: int) -> list[str]:
    prefix = f"blocks.{layer}."
    return [name for name in hook_names if name.startswith(prefix) and not name.endswith(_SWITCHED)]


def dims_of(shape: tuple[int, ...], cfg, batch: int, positions: int) -> str:
    """Name each axis of a hooked tensor by matching sizes (batch, pos, head_index, ...)."""
    named = {}
    for name, size in [("d_vocab", cfg.d_vocab), ("d_mlp", getattr(cfg, "d_mlp", None)),
                       ("d_model", cfg.d_model), ("d_head", cfg.d_head),
                       ("head_index", cfg.n_heads),
                       ("kv_head_index", getattr(cfg, "n_key_value_heads", None)),
                       ("pos", positions)]:  # fmt: skip
        if size:
            named.setdefault(size, name)
    names = []
    for i, size in enumerate(shape):
        if i == 0 and size == batch and len(shape) > 1:
            names.append("batch")
        elif len(shape) == 4 and i >= 2 and size == positions:
            names.append("query_pos" if i == 2 else "key_pos")
        else:
            names.append(named.get(size, "?"))
    return ", ".join(names)
