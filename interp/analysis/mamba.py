"""A Mamba2 layer's effective attention: the causal matrix its selective scan applies.

Ali, Zimerman & Wolf 2024 ("The Hidden Attention of Mamba Models") unroll the scan
h_t = exp(Δ_t A) h_{t-1} + Δ_t B_t x_t, y_t = C_t · h_t + D x_t into y = α x + D x with,
per head (Mamba2: one scalar A per head, B and C shared by the heads of a group),

    α[t, s] = (C_t · B_s) · exp(Σ_{k=s+1..t} Δ_k A) · Δ_s     for s <= t, else 0.

What α includes, read from transformers 5.23's NemotronHMamba2Mixer (its CPU torch path):
- x, B and C are taken after the causal depthwise conv1d and its SiLU. The conv is not folded
  into α (the SiLU makes it non-linear), so α mixes the conv's outputs: x_s already holds the
  conv_kernel - 1 tokens before s, and so do B_s and C_t.
- Δ = clamp(softplus(dt + dt_bias), time_step_min): the chunked scan's clamp (the one-token
  generation step does not clamp; the two agree unless softplus falls under time_step_min).
- Not in α: the skip D·x_t, the gate (RMSNormGated(y, silu(z)), grouped) and out_proj. The
  mixer's output is out_proj(norm(α x + D x, z)), which tests/test_mamba_attention.py checks.

Everything is rebuilt from TL's `blocks.{l}.mixer.hook_in_proj` (the in_proj output: z, the
conv's input, dt; one row per token, so generated tokens are included) and the mixer's
weights; capture it with `interp.trace(..., capture=ssm_captures(model))`.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F

from interp.errors import InterpError
from interp.trace.frames import ROW_BYTES, check_fits
from interp.trace.kinds import layer_kinds

HOOK = "blocks.{layer}.mixer.hook_in_proj"
COLUMNS = ["prompt", "layer", "head", "query", "key", "weight"]


def mamba_layers(kinds: list[tuple[str, ...]]) -> list[int]:
    """The Mamba2 layers of `layer_kinds` (a model's, or a trace's `facts.layer_kinds`)."""
    return [i for i, subs in enumerate(kinds) if "mamba2" in subs]


def ssm_captures(model) -> list[str]:
    """The hook names `effective_attention` reads, one per Mamba2 layer."""
    return [HOOK.format(layer=layer) for layer in mamba_layers(layer_kinds(model, []))]


def mixer(model, layer: int):
    """transformers' Mamba2 mixer of `layer` under the bridge."""
    bridge = model.blocks[layer].mixer
    return getattr(bridge, "original_component", None) or bridge


def ssm_inputs(proj: torch.Tensor, mixer) -> dict[str, torch.Tensor]:
    """From the in_proj output [T, z + conv + heads] of one prompt: x [T H P], B and C [T H N]
    (each group's repeated over its heads), dt (Δ) [T H], z [T H*P] (the gate), float32."""
    proj = proj.float()
    heads, size = mixer.num_heads, mixer.ssm_state_size
    z, xbc, dt = proj.split([mixer.intermediate_size, mixer.conv_dim, heads], dim=-1)
    weight = mixer.conv1d.weight.detach().float()  # [conv_dim 1 K]
    bias = None if mixer.conv1d.bias is None else mixer.conv1d.bias.detach().float()
    conv = F.conv1d(xbc.T[None], weight, bias, padding=weight.shape[-1] - 1, groups=xbc.shape[-1])
    xbc = mixer.act(conv[0, :, : len(proj)]).T
    groups = mixer.n_groups * size
    x, B, C = xbc.split([mixer.intermediate_size, groups, groups], dim=-1)
    per_group = heads // mixer.n_groups
    B = B.view(len(proj), mixer.n_groups, size).repeat_interleave(per_group, dim=1)
    C = C.view(len(proj), mixer.n_groups, size).repeat_interleave(per_group, dim=1)
    dt = F.softplus(dt + mixer.dt_bias.detach().float())
    dt = dt.clamp(min=mixer.time_step_limit[0], max=mixer.time_step_limit[1])
    return {"x": x.view(len(proj), heads, -1), "B": B, "C": C, "dt": dt, "z": z}


def alpha(inputs: dict[str, torch.Tensor], mixer) -> torch.Tensor:
    """α [H, T(query), T(key)] from `ssm_inputs`; zero above the diagonal."""
    A = -torch.exp(mixer.A_log.detach().float())  # [H]
    dt = inputs["dt"]
    cum = torch.cumsum(dt * A, dim=0).T  # [H T]: Σ_{k<=t} Δ_k A
    n = dt.shape[0]
    causal = torch.ones(n, n, dtype=torch.bool).tril()
    # Masked before exp: above the diagonal the difference is positive and could overflow.
    gap = (cum[:, :, None] - cum[:, None, :]).masked_fill(~causal, -torch.inf)
    scores = torch.einsum("thn,shn->hts", inputs["C"], inputs["B"])
    return scores * torch.exp(gap) * dt.T[:, None, :]


def effective_attention(trace, model, layers: list[int] | None = None) -> pd.DataFrame:
    """Long form (prompt, layer, head, query, key <= query, weight) over every Mamba2 layer (or
    `layers`) and prompt of a trace that captured `ssm_captures(model)`. Weights are not
    normalised and may be negative (C·B is a dot product)."""
    if layers is None:
        layers = mamba_layers(trace.facts.layer_kinds)
    heads = trace.facts.memory_shapes.get("mamba_heads", 0)
    pairs = sum(len(r.ids) * (len(r.ids) + 1) // 2 for r in trace.records)
    check_fits(pairs * heads * len(layers) * ROW_BYTES, "the effective attention frame")
    frames = []
    for layer in layers:
        name = HOOK.format(layer=layer)
        if name not in trace.records[0].tensors:
            raise InterpError(
                f"layer {layer}: effective attention needs the capture {name} "
                "(interp.trace(..., capture=ssm_captures(model)))"
            )
        module = mixer(model, layer)
        for prompt in range(len(trace.records)):
            matrix = alpha(ssm_inputs(trace.tensor(name, prompt), module), module)
            frames.append(_long(matrix.numpy(), prompt, layer))
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=COLUMNS)


def _long(matrix: np.ndarray, prompt: int, layer: int) -> pd.DataFrame:
    heads, n, _ = matrix.shape
    query, key = np.tril_indices(n)
    head = np.repeat(np.arange(heads), len(query))
    return pd.DataFrame(
        {
            "prompt": prompt,
            "layer": layer,
            "head": head,
            "query": np.tile(query, heads),
            "key": np.tile(key, heads),
            "weight": matrix[:, query, key].reshape(-1).astype(np.float32),
        }
    )[COLUMNS]
