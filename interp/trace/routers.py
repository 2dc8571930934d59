"""What each MoE router family decides, from its logits: one function per family.

Per token (z: the router's logits over E routed experts), every family yields a `Decision`:
scores (what the router ranks by), choice (scores + bias, groups masked: what top-k is taken
on), the chosen experts in rank order, and the weights the block really mixes with. Shared
experts (always on) get a weight per token too: 1, or Qwen2-MoE's sigmoid(shared_expert_gate . x).

Families, as transformers 5.23 implements them:
  softmax_topk   p = softmax(z); top-k of p; weights p (renormalised if configured)
                 OLMoE, Qwen2-MoE, Qwen3-MoE (norm_topk_prob), Mixtral (always renormalised)
  topk_softmax   top-k of z; weights softmax over the chosen z only: GPT-OSS (biased router),
                 Granite-MoE
  sigmoid_group  s = sigmoid(z), c = s + e_score_correction_bias; keep the topk_group groups
                 whose top-2 c sum highest; top-k of c; weights s / sum(s chosen) (if
                 norm_topk_prob) * routed_scaling_factor: DeepSeek-V3, Kimi K2,
                 Nemotron-H (one shared expert, added unweighted)
  sigmoid_topk   top-k of z; weights sigmoid(z) that scale the expert's INPUT: Llama 4
  score_topk     s = score_fn(z) (the config's scoring_func: sqrtsoftplus by default,
                 sigmoid, softmax); top-k of s + e_score_correction_bias; weights
                 s / sum(s chosen) * routed_scaling_factor: DeepSeek-V4 (one shared expert)
  hash           the experts come from a fixed token-id table (tid2eid[token], not the
                 logits); weights as score_topk from the learned gate: DeepSeek-V4's first
                 layers. choice is s at the table's experts, -inf elsewhere.

The Hugging Face router module is hooked directly (the bridge exposes no router output for
DeepSeek-V3); interp.trace.hooks keeps each decision as router_* tensors per MoE layer.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from interp.vocab import prob_entropy


@dataclass
class Decision:
    """One router's decision for N tokens over E routed experts."""

    logits: torch.Tensor  # [N, E]
    scores: torch.Tensor  # [N, E] what the router ranks by, before bias
    choice: torch.Tensor  # [N, E] what top-k is taken on (bias added, -inf outside kept groups)
    experts: torch.Tensor  # [N, k] chosen, best first
    weights: torch.Tensor  # [N, k] what the block mixes each chosen expert with
    dist: torch.Tensor  # [N, E] the scores as a distribution: softmax p, or s / sum(s)

    @property
    def entropy(self) -> torch.Tensor:
        """[N] nats of `dist`."""
        return prob_entropy(self.dist)


def _ranked(choice: torch.Tensor, k: int) -> torch.Tensor:
    return choice.topk(k, dim=-1, sorted=True).indices


def softmax_topk(logits: torch.Tensor, k: int, renormalise: bool) -> Decision:
    z = logits.float()
    p = z.softmax(-1)
    experts = _ranked(p, k)
    weights = p.gather(-1, experts)
    if renormalise:
        weights = weights / weights.sum(-1, keepdim=True)
    return Decision(z, p, p, experts, weights, p)


def topk_softmax(logits: torch.Tensor, k: int) -> Decision:
    z = logits.float()
    experts = _ranked(z, k)
    weights = z.gather(-1, experts).softmax(-1)
    return Decision(z, z, z, experts, weights, z.softmax(-1))


def sigmoid_group(
    logits: torch.Tensor,
    k: int,
    bias: torch.Tensor,
    n_group: int,
    topk_group: int,
    renormalise: bool,
    scale: float,
) -> Decision:
    z = logits.float()
    s = z.sigmoid()
    c = s + bias.float()
    groups = c.unflatten(-1, (n_group, -1))  # [N, group, expert_in_group]
    group_score = groups.topk(2, dim=-1).values.sum(-1)
    kept = torch.zeros_like(group_score, dtype=torch.bool)
    kept.scatter_(-1, group_score.topk(topk_group, dim=-1).indices, True)
    choice = groups.masked_fill(~kept[..., None], float("-inf")).flatten(-2)
    experts = _ranked(choice, k)
    weights = s.gather(-1, experts)
    if renormalise:
        weights = weights / (weights.sum(-1, keepdim=True) + 1e-20)
    return Decision(z, s, choice, experts, weights * scale, s / s.sum(-1, keepdim=True))


def sigmoid_topk(logits: torch.Tensor, k: int) -> Decision:
    z = logits.float()
    s = z.sigmoid()
    experts = _ranked(s, k)
    return Decision(z, s, s, experts, s.gather(-1, experts), s / s.sum(-1, keepdim=True))


def _normalised(s: torch.Tensor, experts: torch.Tensor, scale: float) -> torch.Tensor:
    weights = s.gather(-1, experts)
    return weights / (weights.sum(-1, keepdim=True) + 1e-20) * scale


def score_topk(logits, k: int, bias: torch.Tensor, score_fn, scale: float) -> Decision:
    z = logits.float()
    s = score_fn(z)
    c = s + bias.float()
    experts = _ranked(c, k)
    return Decision(z, s, c, experts, _normalised(s, experts, scale), s / s.sum(-1, keepdim=True))


def hash_table(logits, table_experts: torch.Tensor, score_fn, scale: float) -> Decision:
    z = logits.float()
    s = score_fn(z)
    choice = torch.full_like(s, float("-inf")).scatter(
        -1, table_experts, s.gather(-1, table_experts)
    )
    # Ranked by the gate's score among the table's experts (the table has no order of its own).
    experts = table_experts.gather(-1, s.gather(-1, table_experts).argsort(-1, descending=True))
    return Decision(
        z, s, choice, experts, _normalised(s, experts, scale), s / s.sum(-1, keepdim=True)
    )


@dataclass
class Router:
    """One HF MoE block, read for routing: `module` is hooked; its output holds the logits."""

    family: str
    block: torch.nn.Module
    module: torch.nn.Module
    decide: Callable[[torch.Tensor], Decision]
    renormalise: bool = False  # the chosen weights sum to 1 (before any scaling factor)
    logits_at: int = 0  # index of the logits in the module's output tuple
    n_shared: int = 0
    shared_gate: torch.nn.Module | None = None  # Qwen2-MoE: weight = sigmoid(gate(x))
    scales_input: bool = False  # Llama 4 scales the expert's input, not its output
    reads_ids: bool = False  # decide(logits, token ids): hash routing

    @property
    def n_experts(self) -> int:
        return int(self.module.num_experts)

    @property
    def top_k(self) -> int:
        return int(self.module.top_k)

    def shared_weights(self, x: torch.Tensor) -> torch.Tensor:
        """[N, n_shared] weight of each shared expert for the router's input x [N, d]."""
        if self.shared_gate is not None:
            return F.linear(x.float(), self.shared_gate.weight.float()).sigmoid()
        return torch.ones(x.shape[0], self.n_shared)


def _softmax(block, renormalise=None) -> Router:
    gate = block.gate
    norm = gate.norm_topk_prob if renormalise is None else renormalise
    shared_gate = getattr(block, "shared_expert_gate", None)  # Qwen2-MoE's one shared expert
    return Router(
        "softmax_topk", block, gate, lambda z: softmax_topk(z, gate.top_k, norm),
        renormalise=bool(norm), n_shared=int(shared_gate is not None), shared_gate=shared_gate,
    )  # fmt: skip


def _deepseek(block) -> Router:
    gate = block.gate

    def decide(z):
        return sigmoid_group(
            z, gate.top_k, gate.e_score_correction_bias, gate.num_group, gate.topk_group,
            gate.norm_topk_prob, gate.routed_scaling_factor,
        )  # fmt: skip

    return Router("sigmoid_group", block, gate, decide, bool(gate.norm_topk_prob), n_shared=1)


def _topk_softmax(block) -> Router:
    router = block.router
    return Router("topk_softmax", block, router, lambda z: topk_softmax(z, router.top_k), True)


def _llama4(block) -> Router:
    router = block.router
    return Router("sigmoid_topk", block, router, lambda z: sigmoid_topk(z, router.top_k),
                  logits_at=1, n_shared=1, scales_input=True)  # fmt: skip


def _deepseek_v4(block) -> Router:
    gate = block.gate
    gate = getattr(gate, "original_component", None) or gate
    scale, score_fn = gate.routed_scaling_factor, gate.score_fn
    if block.is_hash:
        table = gate.tid2eid

        def decide(z, ids):
            return hash_table(z, table[ids.reshape(-1)].long(), score_fn, scale)

        return Router("hash", block, block.gate, decide, True, n_shared=1, reads_ids=True)

    def decide_topk(z):
        return score_topk(z, gate.top_k, gate.e_score_correction_bias, score_fn, scale)

    return Router("score_topk", block, block.gate, decide_topk, True, n_shared=1)


# HF MoE block class -> how to read its router. Blocks not listed are not routed (dense MLPs).
FAMILIES: dict[str, Callable[[torch.nn.Module], Router]] = {
    "OlmoeSparseMoeBlock": _softmax,
    "Qwen2MoeSparseMoeBlock": _softmax,
    "Qwen3MoeSparseMoeBlock": _softmax,
    "MixtralSparseMoeBlock": lambda block: _softmax(block, renormalise=True),
    "GptOssMLP": _topk_softmax,
    "GraniteMoeMoE": _topk_softmax,
    "DeepseekV3MoE": _deepseek,
    "NemotronHMoE": _deepseek,
    "Llama4TextMoe": _llama4,
    "DeepseekV4SparseMoeBlock": _deepseek_v4,
}


def _unwrapped(module):
    while module is not None and isinstance(
        getattr(module, "original_component", None), torch.nn.Module
    ):
        module = module.original_component
    return module


def hf_mixer(model, layer: int) -> torch.nn.Module:
    """The Hugging Face module under a one-sub-block hybrid's blocks.{layer}.mixer."""
    return _unwrapped(model.blocks[layer].mixer)


def hf_block(model, layer: int) -> torch.nn.Module | None:
    """The Hugging Face module under the bridge's blocks.{layer}.mlp (None: no MLP); hybrids
    with one sub-block per layer (Nemotron-H) have it under blocks.{layer}.mixer."""
    blocks = getattr(model, "blocks", None)
    block = blocks[layer] if blocks is not None else None
    return _unwrapped(getattr(block, "mlp", None) or getattr(block, "mixer", None))


def routers(model) -> dict[int, Router]:
    """layer -> Router for every routed MLP of a TransformerBridge model."""
    out = {}
    for layer in range(model.cfg.n_layers):
        block = hf_block(model, layer)
        make = FAMILIES.get(type(block).__name__) if block is not None else None
        if make is not None:
            out[layer] = make(block)
    return out


def capture_hook(router: Router, store: Callable[[torch.Tensor, Decision], None]):
    """A forward hook for `router.module`: decides from its logits; `store(x, decision)`."""

    def hook(module, args, output) -> None:
        x = args[0].detach().reshape(-1, args[0].shape[-1])
        logits = output[router.logits_at].detach().reshape(-1, output[router.logits_at].shape[-1])
        if router.reads_ids:  # DeepSeek-V4's hash router is called as gate(x, input_ids)
            store(x, router.decide(logits, args[1].detach()))
        else:
            store(x, router.decide(logits))

    return hook
