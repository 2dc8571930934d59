"""Per-layer deltas: how big the residual stream is, and how much each block writes into it.

The stream x_l (resid_pre of layer l) grows by two writes per layer:
    x_{l+1} = x_l + attn_out_l + mlp_out_l
(a hybrid's Mamba2 layers add a third, mamba_out; each of its layers writes through one)
so the size of each write against |x_l| says how much a layer can still turn the stream, and
cos(x_l, x_{l+1}) says how much it actually did. Position 0 is an outlier in every model of this
family: with nothing to attend to, it becomes the attention sink and carries a huge norm, so it is
flagged (`is_sink`) and the per-layer summary reports medians with and without it.

Several streams (DeepSeek-V4's mHC): x_l is the collapsed stream layer l's attention reads
(`resid_read`, interp.trace.streams), the last one what the model's head reads out. The sum
above does not hold there (the streams are mixed between reads), so growth and cos_next compare
successive reads; per-stream norms are in the residual frame (its `stream` column).
"""

from __future__ import annotations

import pandas as pd
import torch

from interp.vocab import long_frame

# The per-(layer, position) quantities that `delta_summary` condenses into medians.
METRICS = ["resid_norm", "attn_norm", "mlp_norm", "attn_rel", "mlp_rel", "cos_next", "growth"]
HYBRID_METRICS = ["mamba_norm", "mamba_rel"]  # only where the model has Mamba2 layers


def write_sizes(
    resid: torch.Tensor,
    attn_out: torch.Tensor,
    mlp_out: torch.Tensor,
    mamba_out: torch.Tensor | None = None,
) -> pd.DataFrame:
    """One row per (layer, pos) from resid [L+1, T, d] and attn_out, mlp_out [L, T, d].

    resid_norm |x_l|; attn_norm, mlp_norm the writes' norms; attn_rel, mlp_rel those over |x_l|;
    cos_next cos(x_l, x_{l+1}); growth |x_{l+1}| / |x_l|; is_sink marks position 0. With
    mamba_out [L, T, d] (hybrids), mamba_norm and mamba_rel likewise.
    """
    x = resid.double()
    before, after = x[:-1], x[1:]
    norm_before, norm_after = before.norm(dim=-1), after.norm(dim=-1)
    attn_norm, mlp_norm = attn_out.double().norm(dim=-1), mlp_out.double().norm(dim=-1)
    columns = {
        "resid_norm": norm_before,
        "attn_norm": attn_norm,
        "mlp_norm": mlp_norm,
        "attn_rel": attn_norm / norm_before,
        "mlp_rel": mlp_norm / norm_before,
        "cos_next": torch.nn.functional.cosine_similarity(before, after, dim=-1),
        "growth": norm_after / norm_before,
    }
    if mamba_out is not None:
        mamba_norm = mamba_out.double().norm(dim=-1)
        columns.update(mamba_norm=mamba_norm, mamba_rel=mamba_norm / norm_before)
    frame = long_frame(norm_before, "layer pos", "resid_norm")
    for name, values in columns.items():
        frame[name] = values.reshape(-1).numpy()
    frame["is_sink"] = frame["pos"] == 0
    return frame


def deltas(trace, prompt: int = 0) -> pd.DataFrame:
    """`write_sizes` of one traced prompt (captured with "residual"), with its tokens."""
    # Several streams (mHC): the collapsed stream each layer reads (interp.trace.streams).
    resid = "resid_read" if "resid_read" in trace.records[prompt].tensors else "resid"
    names = [resid, "attn_out", "mlp_out"]
    names += ["mamba_out"] if "mamba_out" in trace.records[prompt].tensors else []
    frame = write_sizes(*(trace.tensor(name, prompt) for name in names))
    tokens = trace.tokens
    texts = tokens[tokens["prompt"] == prompt]["token"].to_numpy()
    frame.insert(0, "prompt", prompt)
    frame.insert(3, "token", texts[frame["pos"]])
    return frame


def delta_summary(frame: pd.DataFrame) -> pd.DataFrame:
    """Per layer and metric: the median over positions with the sink and without it.

    `without_sink` is NaN when the prompt has a single position (nothing but the sink).
    """
    metrics = [m for m in METRICS + HYBRID_METRICS if m in frame]
    long = frame.melt(id_vars=["layer", "is_sink"], value_vars=metrics, var_name="metric")
    with_sink = long.groupby(["layer", "metric"], sort=False)["value"].median()
    rest = long[~long["is_sink"]].groupby(["layer", "metric"], sort=False)["value"].median()
    out = pd.DataFrame({"with_sink": with_sink, "without_sink": rest.reindex(with_sink.index)})
    return out.reset_index()
