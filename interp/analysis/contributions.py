"""The contribution graph (llm-transparency-tool; Ferrando & Voita 2024, "Information flow
routes"): at one position, the share of the residual after each block that each of its parts
contributed.

Each block adds writes to the residual: y = x + sum_i c_i (attention: the heads' writes
c_h = z_h W_O^h; MLP: its output). The proximity of a part to the sum,
max(0, |y| - |y - c_i|), is large when removing c_i would shrink y, and 0 when c_i points away;
shares are proximities over their total, so the residual x and the parts add up to 1. Parts under
`threshold` are the graph's dropped edges. A MoE layer counts as one MLP here (its experts'
separate writes are not captured by a trace).

Several residual streams (DeepSeek-V4's mHC, `stream_contributions`): a sub-block does not add
to one residual; it maps the streams S to comb^T S + post (x) out. The graph is then measured on
the collapsed stream the next sub-block reads (the model's head after the last one), which is
exactly a sum again: pre_next . (comb^T S) (the carried "resid" part) plus (pre_next . post)
times each part of out (each head through V4's grouped output projection, or the MoE).
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import torch

THRESHOLD = 0.04  # llm-transparency-tool's default contribution threshold


def proximity_shares(total: torch.Tensor, parts: torch.Tensor) -> torch.Tensor:
    """[part]: max(0, |total| - |total - part|) normalised to sum to 1; `parts` [part d]."""
    total, parts = total.double(), parts.double()
    prox = (total.norm() - (total[None] - parts).norm(dim=-1)).clamp_min(0)
    return (prox / prox.sum().clamp_min(1e-30)).float()


def contributions(
    resid: torch.Tensor,
    attn_out: torch.Tensor,
    mlp_out: torch.Tensor,
    z: torch.Tensor,
    W_O: torch.Tensor,
    pos: int = -1,
    prompt: int = 0,
    threshold: float = THRESHOLD,
) -> pd.DataFrame:
    """One row per (layer, stage, part) at position `pos`, from trace tensors: resid [layer+1 pos
    d] (resid_pre per layer, then the final residual), attn_out / mlp_out [layer pos d],
    z [layer pos head d_head], W_O [layer head d_head d].

    Columns: prompt pos layer stage ("attn" | "mlp") part ("resid" | "head" | "mlp") head share
    kept (share >= threshold). Attention-only models have no mlp rows."""
    n_layers, n_heads = z.shape[0], z.shape[2]
    pos = pos % resid.shape[1]
    has_mlp = bool(mlp_out.abs().sum() > 0)
    rows = []
    for layer in range(n_layers):
        x = resid[layer, pos].float()
        W = W_O[layer].detach().float().to(z.device)
        writes = torch.einsum("he,hed->hd", z[layer, pos].float(), W)
        mid = x + attn_out[layer, pos].float()
        shares = proximity_shares(mid, torch.cat([x[None], writes]))
        rows.append((layer, "attn", "resid", -1, float(shares[0])))
        rows += [(layer, "attn", "head", h, float(shares[h + 1])) for h in range(n_heads)]
        if has_mlp:
            out = mlp_out[layer, pos].float()
            shares = proximity_shares(mid + out, torch.stack([mid, out]))
            rows += [(layer, "mlp", "resid", -1, float(shares[0])),
                     (layer, "mlp", "mlp", -1, float(shares[1]))]  # fmt: skip
    frame = pd.DataFrame(rows, columns=["layer", "stage", "part", "head", "share"])
    frame.insert(0, "pos", pos)
    frame.insert(0, "prompt", prompt)
    frame["kept"] = frame["share"] >= threshold
    return frame


def collapsed_parts(tensors: dict, W_O: torch.Tensor, pos: int):
    """Several streams: per (layer, sub-block 0 attention / 1 MoE) at `pos`, the collapsed
    stream the next sub-block reads, split into [carried, *parts] ([1 + heads or 2, d])."""
    resid, mid, z = tensors["resid"][:, pos], tensors["resid_mid"][:, pos], tensors["z"][:, pos]
    pre, post = tensors["hc_pre"][:, :, pos], tensors["hc_post"][:, :, pos]
    comb = tensors["hc_comb"][:, :, pos]
    reads_next = [*pre.flatten(0, 1)[1:], tensors["hc_head"][pos]]  # [N] each, forward order
    out = {}
    for i, read in enumerate(reads_next):
        layer, sub = divmod(i, 2)
        before = resid[layer] if sub == 0 else mid[layer]  # [N d]
        carried = read @ (comb[layer, sub].T @ before)
        if sub == 0:
            parts = torch.einsum("he,hed->hd", z[layer], W_O[layer].float())
        else:
            parts = tensors["mlp_out"][layer, pos][None]
        out[layer, sub] = torch.cat([carried[None], (read @ post[layer, sub]) * parts])
    return out


def stream_contributions(
    tensors: dict, W_O: torch.Tensor, pos: int = -1, prompt: int = 0, threshold: float = THRESHOLD
) -> pd.DataFrame:
    """`contributions` for a several-stream record (interp.trace.streams' tensors, with z):
    the same columns, each share measured on the collapsed stream the next sub-block reads."""
    pos = pos % tensors["resid"].shape[1]
    rows = []
    for (layer, sub), parts in collapsed_parts(tensors, W_O, pos).items():
        shares = proximity_shares(parts.sum(0), parts)
        stage = ("attn", "mlp")[sub]
        rows.append((layer, stage, "resid", -1, float(shares[0])))
        if sub == 0:
            rows += [(layer, stage, "head", h, float(x)) for h, x in enumerate(shares[1:])]
        else:
            rows.append((layer, stage, "mlp", -1, float(shares[1])))
    frame = pd.DataFrame(rows, columns=["layer", "stage", "part", "head", "share"])
    frame.insert(0, "pos", pos)
    frame.insert(0, "prompt", prompt)
    frame["kept"] = frame["share"] >= threshold
    return frame


def component_grid(frame: pd.DataFrame) -> tuple[np.ndarray, list[str]]:
    """[part layer] shares for a figure: rows resid->attn, head 0..H-1, resid->mlp, mlp."""
    labels, rows = [], []
    for (stage, part, head), group in frame.groupby(["stage", "part", "head"], sort=False):
        labels.append(f"h{head}" if part == "head" else f"{part} ({stage})")
        rows.append(group.sort_values("layer")["share"].to_numpy())
    return np.array(rows), labels
