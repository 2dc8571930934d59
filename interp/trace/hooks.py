"""The capture hooks: they turn one forward pass into plain tensors (a `Capture`).

Every hook writes into a `Capture`; nothing is kept that was not asked for. Attention is
kept in full only under a memory budget; otherwise each hook reduces its pattern on the spot
(mass received per key, entropy per query, top sources per query, rows of chosen queries),
so memory grows with T, not T^2.

Device-agnostic: a hook reduces its tensor where it was produced (any GPU of a split model, in
float32), then moves the result to the CPU once, as float32, at its reduced size
(`LayerStack.put`).
"""

from __future__ import annotations

from collections.abc import Collection, Iterable

import torch

from interp.trace import streams, v4_attention
from interp.trace.routers import capture_hook, hf_mixer
from interp.vocab import prob_entropy

# routing: chosen experts, weights, entropy and the router's distribution over experts;
# routing_dense adds logits, scores and choice per expert.
GROUPS = {"residual", "attention", "routing", "routing_dense", "shapes"}
# Per MoE layer and token (router_hooks): [moe_layer B T E], [.. k], [..] or [.. shared].
ROUTER_TENSORS = (
    "router_logits", "router_dist", "router_scores", "router_choice",
    "router_experts", "router_weights", "router_entropy", "shared_weights",
)  # fmt: skip
TOP_SOURCES = 3


class LayerStack:
    """A [slot batch ...] CPU buffer that the hooks fill one slot (layer) each: every captured
    tensor is copied once, straight into its layer-major place (float32 if floating, whatever
    the model's dtype and device), and never stacked afterwards. `sparse`: not every slot is
    written (a hybrid's layers without this sub-block), so the others start at zero."""

    def __init__(self, size: int, sparse: bool = False):
        self.size, self.data, self.sparse = size, None, sparse

    def put(self, slot: int, tensor: torch.Tensor) -> None:
        if self.data is None:
            dtype = torch.float32 if tensor.is_floating_point() else tensor.dtype
            make = torch.zeros if self.sparse else torch.empty
            self.data = make((self.size, *tensor.shape), dtype=dtype)
        self.data[slot].copy_(tensor.detach())

    def __bool__(self) -> bool:
        return self.data is not None


class Capture:
    """Tensors of one forward over a batch [B, T], each a `LayerStack` [layer B ...]."""

    def __init__(self, n_layers: int, n_routed: int, hybrid: bool = False):
        self.resid = LayerStack(n_layers + 1)  # [layer+1 B T d]: resid_pre..., last resid_post
        # [layer B T d] what each sub-block writes; a hybrid's layers lack some (zero there).
        self.attn_out = LayerStack(n_layers, hybrid)
        self.mlp_out, self.mamba_out = LayerStack(n_layers, hybrid), LayerStack(n_layers, hybrid)
        self.z = LayerStack(n_layers)  # [layer B T H d_head]
        # Attention per layer; a hybrid's layers without attention stay zero.
        self.patterns = LayerStack(n_layers, hybrid)  # [layer B H T T]
        self.compressed = LayerStack(n_layers)  # DeepSeek-V4: the compressed entries' share
        self.key_mass = LayerStack(n_layers, hybrid)  # [layer B H T]
        self.query_entropy = LayerStack(n_layers, hybrid)
        self.top_weights = LayerStack(n_layers, hybrid)  # [layer B H T 3]
        self.top_keys = LayerStack(n_layers, hybrid)
        self.query_rows = LayerStack(n_layers, hybrid)  # [layer B H nq T]
        for name in ROUTER_TENSORS:
            setattr(self, name, LayerStack(n_routed))
        self.shapes: list[tuple[str, tuple[int, ...]]] = []
        # Several streams (mHC, interp.trace.streams): resid is [layer+1 B T N d]; per layer
        # the streams between its sub-blocks, and per (layer, sub-block) slot 2 * layer + sub
        # the collapse / expand weights [.. B T N] and the mixing matrix [.. B T N N].
        self.resid_mid = LayerStack(n_layers)
        self.hc_pre, self.hc_post = LayerStack(2 * n_layers), LayerStack(2 * n_layers)
        self.hc_comb = LayerStack(2 * n_layers)
        self.head_read = LayerStack(1)  # [1 B T d] what the model's hc_head collapses them to
        self.head_pre = LayerStack(1)  # [1 B T N] and the weights it collapses them with
        self.pattern_hooks: list = []  # (HF attention module, pattern hook): see pattern_hooks
        self.n_keys: int | None = None  # keys so far in a KV-cache step (set before each one)

    def take(self) -> Capture:
        """This forward's tensors, as a capture of their own; this one's stacks start empty
        again, so hooks registered once fill a fresh set on every generation step."""
        done = object.__new__(Capture)
        for name, value in vars(self).items():
            if isinstance(value, LayerStack):
                kept = LayerStack(value.size, value.sparse)
                kept.data, value.data = value.data, None
                value = kept
            setattr(done, name, value)
        return done


def to_host(tensor: torch.Tensor) -> torch.Tensor:
    """A CPU copy of a captured tensor: float32 if floating (whatever the model's dtype), else
    as it is (indices). Always a copy: the model may reuse the hooked tensor."""
    dtype = torch.float32 if tensor.is_floating_point() else tensor.dtype
    return tensor.detach().to("cpu", dtype, copy=True)


def _store(target: LayerStack, slot: int):
    def hook(tensor: torch.Tensor, hook) -> None:
        target.put(slot, tensor)

    return hook


def _stream_hooks(cap: Capture, model, layer: int, last: bool) -> list[tuple[str, object]]:
    """One mHC layer's residual captures: the streams at its boundaries, its sub-blocks'
    outputs, its heads' outputs z, and each hyper-connection's pre / post / comb
    (interp.trace.streams); after the last layer, the model's final collapse (hc_head)."""
    prefix = f"blocks.{layer}"

    def heads(tensor, hook) -> None:  # V4 has no hook_z: the grouped projection's input
        cap.z.put(layer, v4_attention.heads_of(tensor, model.cfg.n_heads))

    out = [
        (f"{prefix}.hook_in", _store(cap.resid, layer)),
        (f"{prefix}.mlp_hc.hook_in", _store(cap.resid_mid, layer)),
        (f"{prefix}.attn.hook_out", _store(cap.attn_out, layer)),
        (f"{prefix}.attn.o_a_proj.hook_in", heads),
        (f"{prefix}.mlp.hook_out", _store(cap.mlp_out, layer)),
    ]
    for sub, name in enumerate(streams.SUB_BLOCKS):
        slot, module = 2 * layer + sub, streams.hf_hyper_connection(model, layer, sub)

        def pre(tensor, hook, slot=slot, module=module) -> None:
            cap.hc_pre.put(slot, streams.hc_pre(module, tensor.detach()))

        out += [
            (f"{prefix}.{name}_hc.hook_in", pre),
            (f"{prefix}.{name}_hc.hook_post", _store(cap.hc_post, slot)),
            (f"{prefix}.{name}_hc.hook_comb", _store(cap.hc_comb, slot)),
        ]
    if last:
        head = model.hc_head.original_component

        def head_pre(tensor, hook) -> None:
            cap.head_pre.put(0, streams.head_pre(head, tensor.detach()))

        out += [
            (f"{prefix}.hook_out", _store(cap.resid, layer + 1)),
            ("hc_head.hook_in", head_pre),
            ("hc_head.hook_out", _store(cap.head_read, 0)),
        ]
    return out


def _row_stats(pattern: torch.Tensor, k: int):
    """Per query row of [B H Tq Tk]: entropy [B H Tq] (`prob_entropy` works through the rows in
    cache-sized blocks: no pattern-sized temporary) and top-k (weights, keys) [B H Tq k]."""
    top = pattern.topk(k, dim=-1)
    return prob_entropy(pattern), top.values, top.indices


def attention_hook(cap: Capture, layer: int, keep_full: bool, rows, lengths):
    """`rows` [B, nq]: query positions whose full rows are kept; `lengths`: real tokens per
    prompt, so right-padding queries never add to the mass a key receives. `cap.n_keys`: keys
    so far; a sliding layer's KV-cache step sees only its window, the last keys, placed there."""
    row_lists = None if rows is None else [r.tolist() for r in rows]

    def hook(pattern: torch.Tensor, hook) -> None:
        pattern = pattern.detach().float()  # [batch head query key], on the layer's device
        n_keys = cap.n_keys
        if n_keys and pattern.shape[-1] < n_keys:
            pattern = torch.nn.functional.pad(pattern, (n_keys - pattern.shape[-1], 0))
        if keep_full:
            cap.patterns.put(layer, pattern)
        if all(n == pattern.shape[2] for n in lengths):
            cap.key_mass.put(layer, pattern.sum(dim=-2))
        else:
            real = pattern.new_zeros(pattern.shape[0], 1, pattern.shape[2], 1)
            for b, n in enumerate(lengths):
                real[b, :, :n] = 1.0
            cap.key_mass.put(layer, (pattern * real).sum(dim=-2))
        k = min(TOP_SOURCES, pattern.shape[-1])
        entropy, weights, keys = _row_stats(pattern, k)
        cap.query_entropy.put(layer, entropy)
        if k < TOP_SOURCES:  # fewer keys than sources: pad so steps concatenate
            pad = TOP_SOURCES - k
            weights = torch.nn.functional.pad(weights, (0, pad))
            keys = torch.nn.functional.pad(keys, (0, pad), value=-1)
        cap.top_weights.put(layer, weights)
        cap.top_keys.put(layer, keys)
        if row_lists is not None:
            cap.query_rows.put(
                layer, torch.stack([pattern[b][:, r, :] for b, r in enumerate(row_lists)])
            )

    return hook


def router_hooks(cap: Capture, routers: dict, batch: int, dense: bool) -> list:
    """Forward hooks on each MoE layer's Hugging Face router module (handles: remove them
    after the forward); they keep `interp.trace.routers`' decision per token, [B T ...]."""

    def keeper(slot: int, router):
        def keep(x: torch.Tensor, d) -> None:
            def put(stack: LayerStack, t: torch.Tensor) -> None:
                stack.put(slot, t.reshape(batch, len(x) // batch, *t.shape[1:]))

            put(cap.router_dist, d.dist)
            put(cap.router_experts, d.experts)
            put(cap.router_weights, d.weights)
            put(cap.router_entropy, d.entropy)
            put(cap.shared_weights, router.shared_weights(x))
            if dense:
                put(cap.router_logits, d.logits)
                put(cap.router_scores, d.scores)
                put(cap.router_choice, d.choice)

        return keep

    return [
        r.module.register_forward_hook(capture_hook(r, keeper(slot, r)))
        for slot, r in enumerate(routers.values())
    ]


def _shape_hook(cap: Capture, name: str):
    # `name`, not hook.name: TL aliases (hook_resid_pre -> hook_in) share one hook point.
    def hook(tensor: torch.Tensor, hook) -> None:
        if isinstance(tensor, torch.Tensor):
            cap.shapes.append((name, tuple(tensor.shape)))

    return hook


def stage_of(kind: str) -> str:
    """The residual-frame stage a sub-block's delta is recorded under."""
    if kind == "mamba2":
        return "mamba_out"
    return "attn_out" if kind.endswith("attention") else "mlp_out"


def build_hooks(
    model,
    groups: set[str],
    n_routed: int,
    keep_full_attention: bool,
    query_rows: torch.Tensor | None,
    lengths: list[int],
    hook_names: Collection[str],
    kinds: list[tuple[str, ...]] | None = None,
    n_keys: int | None = None,
) -> tuple[Capture, list[tuple[str, object]]]:
    """A `Capture` and the (hook name, fn) pairs for `model.hooks(fwd_hooks=...)` that fill it
    with `groups`; routing is captured by `router_hooks` on the `n_routed` routers.

    `hook_names`: the model's hook_dict keys in order, read once by the caller. `kinds`: each
    layer's sub-blocks (ModelFacts.layer_kinds); a hybrid block with one sub-block (TL's
    hook_mixer_out, no hook_attn_out) writes its delta into the stage of its kind.
    """
    hooks: list[tuple[str, object]] = []
    n_layers = model.cfg.n_layers
    hybrid = "blocks.0.hook_mixer_out" in hook_names
    several = "blocks.0.attn_hc.hook_comb" in hook_names  # mHC: several residual streams
    cap = Capture(n_layers, n_routed, hybrid)
    cap.n_keys = n_keys
    for layer in range(n_layers):
        prefix = f"blocks.{layer}"
        if "residual" in groups and several:
            hooks += _stream_hooks(cap, model, layer, layer == n_layers - 1)
        elif "residual" in groups and hybrid:
            stack = getattr(cap, stage_of(kinds[layer][0]))
            hooks += [
                (f"{prefix}.hook_resid_pre", _store(cap.resid, layer)),
                (f"{prefix}.hook_mixer_out", _store(stack, layer)),
            ]
            if layer == n_layers - 1:
                hooks.append((f"{prefix}.hook_resid_post", _store(cap.resid, n_layers)))
        elif "residual" in groups:
            hooks += [
                (f"{prefix}.hook_resid_pre", _store(cap.resid, layer)),
                (f"{prefix}.hook_attn_out", _store(cap.attn_out, layer)),
                (f"{prefix}.attn.hook_z", _store(cap.z, layer)),
            ]
            if layer == n_layers - 1:  # earlier resid_posts are the next resid_pres
                hooks.append((f"{prefix}.hook_resid_post", _store(cap.resid, n_layers)))
            if f"{prefix}.hook_mlp_out" in hook_names:
                hooks.append((f"{prefix}.hook_mlp_out", _store(cap.mlp_out, layer)))
        if "attention" in groups and f"{prefix}.attn.hook_pattern" in hook_names:
            hook = attention_hook(cap, layer, keep_full_attention, query_rows, lengths)
            hooks.append((f"{prefix}.attn.hook_pattern", hook))
    if "shapes" in groups:
        hooks += [(name, _shape_hook(cap, name)) for name in block_hook_names(hook_names, 0)]
    if "attention" in groups and hybrid:
        cap.pattern_hooks = [
            (hf_mixer(model, layer),
             attention_hook(cap, layer, keep_full_attention, query_rows, lengths))
            for layer, subs in enumerate(kinds) if subs[0].endswith("attention")
        ]  # fmt: skip
    return cap, hooks


def pattern_hooks(cap: Capture) -> list:
    """Forward hooks on a hybrid's Hugging Face attention modules (TL gives their bridge no
    hook_pattern): the eager attention weights they return, [B H Tq Tk], read as TL's pattern.
    Handles: remove them after the forward."""
    return [
        module.register_forward_hook(lambda m, args, out, hook=hook: hook(out[1], None))
        for module, hook in cap.pattern_hooks
    ]


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
