"""Which attention kernel a forward runs: the model's default (SDPA) unless a hook needs eager.

interp loads every model with eager attention, the only kind that yields patterns, and TL's
rotary attention bridge reimplements it step by step so that hook_attn_scores, hook_pattern,
hook_rot_q/k and hook_cos/sin fire. A forward that hooks none of those gains nothing from it:
`install` makes every forward of the bridge (a trace's, a plain `model(ids)`) hand each such
bridge's attention back to its Hugging Face module (TL's plain hook_in -> HF -> hook_out
path) running SDPA. The residual, z, q/k/v and routing hooks fire on the same tensors either
way, equal to float rounding (tests/test_kernel.py compares both with transformers' modules).
"""

from __future__ import annotations

import contextlib
import types
import weakref
from dataclasses import dataclass

_PLANS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()
# TL switches that route the reimplemented attention through per-head inputs or outputs.
_SWITCHES = ("use_split_qkv_input", "use_attn_in", "use_attn_result")


@dataclass(frozen=True)
class _Plan:
    bridges: tuple  # attention bridges whose forward is TL's eager reimplementation
    owned: tuple  # the hook points only that reimplementation fires
    configs: tuple  # HF configs that name the kernel (the model's, each attention module's)


def _plan(model) -> _Plan | None:
    """What to switch in `model`, found once per model; None where nothing can be."""
    if model in _PLANS:
        return _PLANS[model]
    from transformer_lens.hook_points import HookPoint
    from transformer_lens.model_bridge.generalized_components.attention import AttentionBridge
    from transformer_lens.model_bridge.generalized_components.position_embeddings_attention import (  # noqa: E501
        PositionEmbeddingsAttentionBridge as Rotary,
    )

    hf = getattr(model, "original_model", None)
    plan = None
    if hf is not None and getattr(hf, "_supports_sdpa", False):
        bridges = tuple(
            m for m in model.modules()
            if isinstance(m, AttentionBridge) and type(m).forward is Rotary.forward
        )  # fmt: skip
        owned = tuple(
            child for bridge in bridges for name, child in bridge.named_children()
            if isinstance(child, HookPoint) and name not in ("hook_in", "hook_out")
        )  # fmt: skip
        configs = {id(hf.config): hf.config}
        for bridge in bridges:
            config = getattr(bridge.original_component, "config", None)
            if config is not None:
                configs[id(config)] = config
        plan = _Plan(bridges, owned, tuple(configs.values())) if bridges else None
    _PLANS[model] = plan
    return plan


def eager_needed(model, plan: _Plan) -> bool:
    """Whether some hook now registered (the trace's, the user's, any left on the model)
    reads a tensor only eager attention produces: one of the reimplementation's own hook
    points, or a forward hook on an HF attention module (it reads the weights it returns)."""
    if any(getattr(model.cfg, switch, False) for switch in _SWITCHES):
        return True
    return any(hp._forward_hooks or hp._backward_hooks for hp in plan.owned) or any(
        bridge.original_component._forward_hooks for bridge in plan.bridges
    )


def install(model) -> None:
    """Every forward of the bridge `model` runs `default_attention` around it (a bound
    method, so a deep copy of the model dispatches its own forward)."""
    if _plan(model) is not None:
        object.__setattr__(model, "forward", types.MethodType(_dispatch, model))


def _dispatch(model, *args, **kwargs):
    with default_attention(model):
        return type(model).forward(model, *args, **kwargs)


@contextlib.contextmanager
def default_attention(model):
    """Run what is inside on the default kernel where no hook registered at entry needs
    eager attention; everything is put back on exit."""
    plan = _plan(model)
    if plan is None or eager_needed(model, plan):
        yield
        return
    from transformer_lens.model_bridge.generalized_components.attention import AttentionBridge

    kernels = [config._attn_implementation for config in plan.configs]
    try:
        for config in plan.configs:
            config._attn_implementation = "sdpa"
        for bridge in plan.bridges:  # an instance attribute: other models are untouched
            object.__setattr__(bridge, "forward", types.MethodType(AttentionBridge.forward, bridge))
        yield
    finally:
        for bridge in plan.bridges:
            bridge.__dict__.pop("forward", None)
        for config, kernel in zip(plan.configs, kernels):
            config._attn_implementation = kernel
