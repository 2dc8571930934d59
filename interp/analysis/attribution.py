"""Direct logit attribution: how much each head and each MLP writes straight into one logit.

The final residual is a sum of writes, x = embed + sum_heads z_h W_O^h + sum_layers mlp_out_l
(+ output biases). The final norm is not linear, but with its scale frozen at the value it takes
on the real x, it is: norm(c) = w * c / s (RMSNorm; LayerNorm also subtracts c's mean), so every
write c contributes norm(c) . W_U[:, target] to the logit and the contributions add up exactly.

The norm's weight and eps are model parameters the trace does not carry, so `final_norm(model)`
reads them once at the caller level; the attribution itself stays a pure function of the trace.
Reading them beats inferring them from `trace.readout` (which recomputes the scale from its own
input, so it cannot freeze it), and the sum check below catches a norm this module misreads.
"""

from __future__ import annotations

from dataclasses import dataclass

import pandas as pd
import torch

from interp.errors import InterpError


@dataclass(frozen=True)
class FinalNorm:
    """The final norm's parameters; kind is "RMS", "LN" (subtracts the mean) or "none"."""

    kind: str
    weight: torch.Tensor | None  # [d]
    bias: torch.Tensor | None  # [d]
    eps: float


def final_norm(model) -> FinalNorm:
    """Read `model.ln_final` (TL normalization_type RMS/RMSPre, LN/LNPre or None)."""
    kind = model.cfg.normalization_type or "none"
    kind = {"RMSPre": "RMS", "LNPre": "LN"}.get(kind, kind)
    if kind not in ("RMS", "LN", "none"):
        raise InterpError(f"direct logit attribution does not know the final norm {kind!r}")
    params = {  # float32 on the CPU, like the captures, whatever the model's device and dtype
        name.rsplit(".", 1)[-1]: p.detach().float().cpu()
        for name, p in model.ln_final.named_parameters()
    }
    return FinalNorm(kind, params.get("weight"), params.get("bias"), float(model.cfg.eps))


def sum_tolerance(dtype: str) -> float:
    """Relative gap allowed between the attributions' sum and the logit. In float32, 1%. In
    bfloat16 / float16 the model rounds every residual add and the logit itself (bf16 keeps 8
    bits: a logit of 20 is a multiple of 1/8), so 4 units of its last place (bf16: 3.1%)."""
    return max(1e-2, 4 * torch.finfo(getattr(torch, dtype)).eps)


def _readout_direction(x: torch.Tensor, norm: FinalNorm, direction: torch.Tensor):
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
    if "z" not in record.tensors:  # DeepSeek-V4, Nemotron-H: no per-head outputs to split
        raise InterpError(
            "direct logit attribution needs per-head z (hook_z), which this "
            "model's bridge does not expose"
        )
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
    u, norm_offset = _readout_direction(resid[-1, pos], norm, direction)

    z = trace.tensor("z", prompt)[:, pos].double()  # [L, H, d_head]
    heads = torch.einsum("lhe,lhed->lhd", z, trace.weights["W_O"].detach().double())  # [L, H, d]
    attn_bias = trace.tensor("attn_out", prompt)[:, pos].double() - heads.sum(1)  # [L, d]
    mlp = trace.tensor("mlp_out", prompt)[:, pos].double() @ u  # [L]
    head_logit = heads @ u  # [L, H]
    n_layers, n_heads = head_logit.shape

    rows = [("embed", "embed", -1, -1, float(resid[0, pos] @ u))]
    for layer in range(n_layers):
        rows += [
            (f"L{layer}H{h}", "head", layer, h, float(head_logit[layer, h])) for h in range(n_heads)
        ]
        rows.append((f"L{layer} mlp", "mlp", layer, -1, float(mlp[layer])))
    rows.append(("bias", "bias", -1, -1, float(bias + norm_offset + (attn_bias @ u).sum())))
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
