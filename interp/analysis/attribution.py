"""Direct logit attribution: how much each head and each MLP writes straight into one logit.

The final residual is a sum of writes, x = embed + sum_heads z_h W_O^h + sum_layers mlp_out_l
(+ output biases). The final norm is not linear, but with its scale frozen at the value it takes
on the real x, it is: norm(c) = w * c / s (RMSNorm; LayerNorm also subtracts c's mean), so every
write c contributes norm(c) . W_U[:, target] to the logit and the contributions add up exactly.

The norm's weight and eps are model parameters the trace does not carry, so `final_norm(model)`
reads them once at the caller level; the attribution itself stays a pure function of the trace.
Reading them beats inferring them from `trace.readout` (which recomputes the scale from its own
input, so it cannot freeze it), and the sum check below catches a norm this module misreads.

Norm families: RMSNorm scaling by w (Llama, Qwen, Phi-3, OLMo) or by 1 + w (Gemma: which one
is told by running the module once on a probe, not by the family's name); LayerNorm, with or
without its own bias (GPT-2). Post-block norms (Gemma 2/3, OLMo 2: TL's `ln1_post`, `ln2_post`)
normalise what a block writes before adding it: the MLP's captured write is already normed, and
each head's write goes through the post-attention norm with its scale frozen at the real sum of
the heads, which is linear again, so heads still sum to what attention wrote.

Several residual streams (DeepSeek-V4's mHC): the logit reads the collapse the model's head
makes of its last streams. With that collapse's weights (hc_head) and every hyper-connection's
post / comb frozen at the token, as the norm's scale is, the logit is linear in the streams
again: each write (the embedding, each head through V4's grouped output projection, each MoE)
is weighted by how much of it reaches the head through the later mixing (`streams.reach`), and
the components still sum to the logit. The attribution is of the collapsed readout; `reach`
also splits it by the last stream it arrives through.
"""

from __future__ import annotations

from dataclasses import dataclass

import pandas as pd
import torch

from interp.analysis import streams
from interp.errors import InterpError


@dataclass(frozen=True)
class FinalNorm:
    """The final norm's parameters; kind is "RMS", "LN" (subtracts the mean) or "none".
    `weight` is the scale the norm applies (w, or 1 + w where the module adds one).
    `post_attn`: per layer, the norm applied to attention's output before it is added to the
    stream (Gemma 2/3, OLMo 2), or None."""

    kind: str
    weight: torch.Tensor | None  # [d]
    bias: torch.Tensor | None  # [d]
    eps: float
    post_attn: tuple = ()


def final_norm(model) -> FinalNorm:
    """Read `model.ln_final` (TL normalization_type RMS/RMSPre, LN/LNPre or None), and each
    block's post-attention norm where the model has one."""
    kind = model.cfg.normalization_type or "none"
    kind = {"RMSPre": "RMS", "LNPre": "LN"}.get(kind, kind)
    if kind not in ("RMS", "LN", "none"):
        raise InterpError(f"direct logit attribution does not know the final norm {kind!r}")
    post = tuple(
        read_norm(block.ln1_post, kind, model.cfg.eps) if hasattr(block, "ln1_post") else None
        for block in model.blocks
    )
    final = read_norm(model.ln_final, kind, model.cfg.eps)
    return FinalNorm(final.kind, final.weight, final.bias, final.eps, post_attn=post)


def read_norm(module, kind: str, default_eps: float) -> FinalNorm:
    """One norm's parameters, float32 on the CPU (like the captures); a weight the module
    applies as 1 + w is returned as 1 + w, told apart by running the module on a probe."""
    params = {name.rsplit(".", 1)[-1]: p for name, p in module.named_parameters()}
    weight, bias = params.get("weight"), params.get("bias")
    eps = getattr(module, "eps", None) or getattr(module, "variance_epsilon", None)
    eps = float(eps) if isinstance(eps, float) else float(default_eps)
    if kind == "none" or weight is None:
        return FinalNorm(kind, None, None if bias is None else bias.detach().float().cpu(), eps)
    # A probe of +-1 entries (a 0 last when d is odd) with mean 0: LN's centring leaves it
    # as it is, so the module returns its scale times probe / RMS(probe), plus its bias.
    d = weight.shape[-1]
    probe = torch.ones(d, dtype=torch.float32)
    probe[1::2] = -1
    probe[-1] = probe[-1] if d % 2 == 0 else 0
    with torch.no_grad():
        out = module(probe.to(weight.device, weight.dtype)[None, None]).float().cpu()[0, 0]
    w = weight.detach().float().cpu()
    seen = (out - (bias.detach().float().cpu() if bias is not None else 0)) * probe
    keep = probe != 0
    scale = (probe.pow(2).mean() + eps).rsqrt()
    plus_one = (seen[keep] - (1 + w[keep]) * scale).abs().max() < (
        seen[keep] - w[keep] * scale
    ).abs().max()
    b = None if bias is None else bias.detach().float().cpu()
    return FinalNorm(kind, 1 + w if plus_one else w, b, eps)


def sum_tolerance(dtype: str) -> float:
    """Relative gap allowed between the attributions' sum and the logit. In float32, 1%. In
    bfloat16 / float16 the model rounds every residual add and the logit itself (bf16 keeps 8
    bits: a logit of 20 is a multiple of 1/8), so 4 units of its last place (bf16: 3.1%)."""
    return max(1e-2, 4 * torch.finfo(getattr(torch, dtype)).eps)


def readout_direction(x: torch.Tensor, norm: FinalNorm, direction: torch.Tensor):
    """(u, offset): with the scale frozen at x, the logit (difference) from a write c is c . u,
    and the norm's own bias adds offset."""
    if norm.kind == "none":
        return direction, 0.0
    centred = x - x.mean() if norm.kind == "LN" else x
    scale = (centred.pow(2).mean() + norm.eps).sqrt()
    u = direction * (norm.weight.double() if norm.weight is not None else 1.0) / scale
    if norm.kind == "LN":  # (c - mean c) . u == c . (u - mean u)
        u = u - u.mean()
    offset = float(norm.bias.double() @ direction) if norm.bias is not None else 0.0
    return u, offset


def _through_post_norms(heads: torch.Tensor, post_attn: tuple) -> torch.Tensor:
    """Each head's write [L, H, d] as the stream receives it: through the layer's
    post-attention norm, its scale frozen at the heads' sum (what the norm really saw)."""
    out = heads.clone()
    for layer, post in enumerate(post_attn):
        if post is None:
            continue
        total = heads[layer].sum(0)
        centred = total - total.mean() if post.kind == "LN" else total
        scale = (centred.pow(2).mean() + post.eps).sqrt()
        each = (
            heads[layer] - heads[layer].mean(-1, keepdim=True)
            if post.kind == "LN"
            else heads[layer]
        )
        out[layer] = each * post.weight.double() / scale  # the norm's bias lands in `bias`
    return out


def direct_logit_attribution(
    trace,
    norm: FinalNorm,
    target: int | None = None,
    other: int | None = None,
    pos: int | None = None,
    prompt: int = 0,
) -> pd.DataFrame:
    """One row per component (embed, every head, every MLP/MoE layer, bias) at position `pos`
    (default: the last prompt position): its direct contribution to logit[target], or to
    logit[target] - logit[other]. Contributions sum to the real logit (difference).

    `target` defaults to the model's top prediction at `pos`. The bias row holds b_U, the final
    norm's bias and any attention output bias (attn_out minus the sum of its heads).
    """
    if trace.readout is None or not trace.weights:
        raise InterpError("direct logit attribution needs a live trace (weights and readout)")
    record = trace.records[prompt]
    if "z" not in record.tensors:  # Nemotron-H: its mixers have no per-head outputs to split
        raise InterpError(
            "direct logit attribution needs per-head z (hook_z), which this "
            "model's bridge does not expose"
        )
    several = "hc_head" in record.tensors  # DeepSeek-V4's streams (mHC): see `streams.reach`
    resid = trace.tensor("resid", prompt).double()
    pos = record.n_prompt - 1 if pos is None else pos
    if not 0 <= pos < resid.shape[1]:
        raise InterpError(f"position {pos} is outside the traced positions [0, {resid.shape[1]})")
    with torch.no_grad():
        logits = trace.readout(trace.tensor("resid", prompt)[-1, pos]).double()
    target = int(logits.argmax()) if target is None else target
    for tid in (target, other):
        if tid is not None and not 0 <= tid < logits.shape[0]:
            raise InterpError(f"token id {tid} is outside the vocabulary [0, {logits.shape[0]})")
    W_U, b_U = trace.weights["W_U"].detach().double(), trace.weights["b_U"].detach().double()
    direction, real = W_U[:, target], logits[target]
    bias = b_U[target]
    if other is not None:
        direction, real = direction - W_U[:, other], real - logits[other]
        bias = bias - b_U[other]
    # The norm reads the collapsed stream (several streams: what the model's head collapsed).
    x = trace.tensor("resid_read", prompt)[-1, pos].double() if several else resid[-1, pos]
    u, norm_offset = readout_direction(x, norm, direction)

    z = trace.tensor("z", prompt)[:, pos].double()  # [L, H, d_head]
    heads = torch.einsum("lhe,lhed->lhd", z, trace.weights["W_O"].detach().double())  # [L, H, d]
    heads = _through_post_norms(heads, norm.post_attn)
    n_layers = heads.shape[0]
    # How much of each write the readout sees: 1 in one stream, the mixing's reach in several.
    embed, reach = (1.0, torch.ones(n_layers, 2, dtype=torch.float64))
    if several:
        embed, reach = (r.sum(-1) for r in streams.reach(record.tensors, pos))
    attn_bias = trace.tensor("attn_out", prompt)[:, pos].double() - heads.sum(1)  # [L, d]
    mlp = trace.tensor("mlp_out", prompt)[:, pos].double() @ u * reach[:, 1]  # [L]
    head_logit = heads @ u * reach[:, :1]  # [L, H]
    n_heads = head_logit.shape[1]

    first = resid[0, pos, 0] if several else resid[0, pos]  # V4 copies it into every stream
    rows = [("embed", "embed", -1, -1, float(first @ u * embed))]
    for layer in range(n_layers):
        rows += [
            (f"L{layer}H{h}", "head", layer, h, float(head_logit[layer, h])) for h in range(n_heads)
        ]
        rows.append((f"L{layer} mlp", "mlp", layer, -1, float(mlp[layer])))
    attn_bias = (attn_bias @ u * reach[:, 0]).sum()
    rows.append(("bias", "bias", -1, -1, float(bias + norm_offset + attn_bias)))
    frame = pd.DataFrame(rows, columns=["component", "kind", "layer", "head", "logit"])

    # The writes add up to x only to the model's rounding; a gap beyond that means a misread
    # norm: a bug here, not a mistake of the caller's.
    total = frame["logit"].sum()
    if abs(total - float(real)) > sum_tolerance(trace.facts.dtype) * max(1.0, abs(float(real))):
        raise AssertionError(
            f"attributions sum to {total:.4f} but the logit is {float(real):.4f}: "
            f"the final norm ({norm.kind}) is not what this module assumes"
        )
    frame.insert(0, "prompt", prompt)
    frame.insert(1, "pos", pos)
    frame.insert(2, "target_id", target)
    frame.insert(3, "other_id", -1 if other is None else other)
    return frame
