"""Soft lookups: how concentrated each layer's reads are.

Three components read by weighting a set of units: attention heads weight earlier keys, MLPs
weight their hidden neurons, MoE routers weight experts. The same measure fits all three: the
Shannon entropy H of the weights, effective = exp(H) (the number of equally weighted units that
would give the same entropy) and concentration = effective / available. 1 means a read spread
over everything available; 1 / available means a hard lookup of a single unit.

- attention: the query's pattern over keys 0..q; available = q + 1. Position 0 has one key to
  read, so its lookup is trivially hard and it is left out.
- mlp: weights are each neuron's share of the hidden energy h_j^2 / sum h^2, with h the input to
  the down projection (act(gate) * up for gated MLPs; TL's hook_post). This ignores the size of
  each neuron's output row; near_zero adds the fraction of neurons with |h_j| < 0.1 rms(h).
- router: the softmax over experts (the full distribution, before top-k).
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import torch

from interp.vocab import long_frame

COLUMNS = ["prompt", "layer", "kind", "unit", "pos", "entropy", "effective", "available",
           "concentration", "near_zero"]  # fmt: skip
NEAR_ZERO = 0.1  # |h_j| below this fraction of rms(h) counts as off


def neuron_hooks(model) -> dict[int, str]:
    """Layer -> the hook holding the MLP hidden activation, for `trace(capture=...)`.

    Dense layers only (an MoE layer's hidden units belong to its experts).
    """
    hooks = model.hook_dict
    out = {}
    for layer in range(model.cfg.n_layers):
        name, routed = f"blocks.{layer}.mlp.hook_post", f"blocks.{layer}.mlp.hook_expert_indices"
        if name in hooks and routed not in hooks:
            out[layer] = name
    return out


def _entropy(weights: torch.Tensor) -> torch.Tensor:
    """Shannon entropy (nats) along the last axis of non-negative weights summing to 1."""
    w = weights.double()
    return -(w * torch.log(w.clamp_min(1e-300))).sum(-1)


def _rows(layer, kind, unit, pos, entropy, available, near_zero=None) -> pd.DataFrame:
    effective = np.exp(entropy)
    return pd.DataFrame({
        "layer": layer, "kind": kind, "unit": unit, "pos": pos, "entropy": entropy,
        "effective": effective, "available": available, "concentration": effective / available,
        "near_zero": np.nan if near_zero is None else near_zero,
    })  # fmt: skip


def attention_lookups(query_entropy: torch.Tensor) -> pd.DataFrame:
    """From the trace's query_entropy [L, H, T] (entropy of each query's pattern)."""
    cells = long_frame(query_entropy.double(), "layer head pos", "entropy")
    frame = _rows(cells["layer"], "attention", cells["head"], cells["pos"], cells["entropy"],
                  cells["pos"] + 1.0)  # fmt: skip
    return frame[frame["pos"] > 0]


def neuron_lookups(hidden: dict[int, torch.Tensor]) -> pd.DataFrame:
    """From each dense layer's MLP hidden activation [T, d_mlp] (see `neuron_hooks`)."""
    frames = []
    for layer, h in sorted(hidden.items()):
        energy = h.double().pow(2)
        total = energy.sum(-1, keepdim=True)
        share = energy / total.clamp_min(1e-300)
        rms = (total / h.shape[-1]).sqrt()
        near_zero = (h.double().abs() < NEAR_ZERO * rms).double().mean(-1)
        pos = np.arange(h.shape[0])
        frames.append(_rows(layer, "mlp", -1, pos, _entropy(share).numpy(), float(h.shape[-1]),
                            near_zero.numpy()))  # fmt: skip
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=COLUMNS[1:])


def router_lookups(router_logits: torch.Tensor, moe_layers: list[int]) -> pd.DataFrame:
    """From the trace's router_logits [L_moe, T, E], layer numbers in `moe_layers`."""
    probs = router_logits.double().softmax(-1)
    ent = _entropy(probs)  # [L_moe, T]
    cells = long_frame(ent, "layer pos", "entropy")
    layers = np.asarray(moe_layers)[cells["layer"]]
    return _rows(layers, "router", -1, cells["pos"], cells["entropy"], float(probs.shape[-1]))


def soft_lookups(trace, prompt: int = 0, hooks: dict[int, str] | None = None) -> pd.DataFrame:
    """All three kinds for one traced prompt: attention (needs the "attention" capture), MLP
    neurons (needs the `hooks` from `neuron_hooks` captured), routers (MoE, "routing")."""
    tensors = trace.records[prompt].tensors
    parts = []
    if "query_entropy" in tensors:
        parts.append(attention_lookups(tensors["query_entropy"]))
    hidden = {layer: tensors[name] for layer, name in (hooks or {}).items() if name in tensors}
    if hidden:
        parts.append(neuron_lookups(hidden))
    if "router_logits" in tensors:
        parts.append(router_lookups(tensors["router_logits"], trace.facts.moe_layers))
    frame = pd.concat(parts, ignore_index=True) if parts else pd.DataFrame(columns=COLUMNS[1:])
    frame.insert(0, "prompt", prompt)
    return frame[COLUMNS].sort_values(["layer", "kind", "unit", "pos"], ignore_index=True)


def lookup_summary(frame: pd.DataFrame) -> pd.DataFrame:
    """Per (layer, kind): medians over units and positions of effective, concentration and
    near_zero."""
    columns = ["effective", "concentration", "near_zero"]
    return frame.groupby(["layer", "kind"])[columns].median().reset_index()
