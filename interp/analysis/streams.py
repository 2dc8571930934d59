"""Several residual streams (mHC): the mixing composed across depth, from the `hc` frame.

Ignoring what the sub-blocks write, each sub-block maps the streams x [N d] to comb^T x, so
after sub-blocks 1..K the streams are (C_1 C_2 ... C_K)^T x: the composite mixing is the
product of the comb matrices in forward order (attention then MoE, layer by layer). A product
of doubly stochastic matrices is doubly stochastic, so its gain stays 1: mHC's answer to the
unconstrained hyper-connections whose composite mixing grows with depth. Gain is measured as
the mHC paper's "Amax gain magnitude": the largest absolute row sum or column sum.

Read backwards from the model's head, the same product says how much of each sub-block's write
reaches the logits (`reach`, for direct logit attribution).
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import torch

KEYS = ["prompt", "pos", "token"]


def composite_mixing(hc: pd.DataFrame) -> pd.DataFrame:
    """Per token and depth (layer, block: after that sub-block), the composite mixing matrix
    entries (stream -> to_stream, value) and its gain (gain: max abs row or column sum;
    row_gain / col_gain separately)."""
    comb = hc[hc["weight"] == "comb"]
    order = {"attn": 0, "mlp": 1}
    rows = []
    for key, g in comb.groupby(KEYS, sort=True):
        g = g.assign(sub=g["block"].map(order)).sort_values(["layer", "sub"])
        n = int(g["stream"].max()) + 1
        total = np.eye(n)
        for (layer, sub), m in g.groupby(["layer", "sub"], sort=True):
            matrix = np.zeros((n, n))
            matrix[m["stream"], m["to_stream"]] = m["value"]
            total = total @ matrix
            row_gain, col_gain = np.abs(total).sum(1).max(), np.abs(total).sum(0).max()
            for i in range(n):
                for j in range(n):
                    rows.append((*key, layer, sub, i, j, total[i, j], row_gain, col_gain))
    columns = [*KEYS, "layer", "block", "stream", "to_stream", "value", "row_gain", "col_gain"]
    out = pd.DataFrame(rows, columns=columns)
    out["block"] = np.array(list(order))[out["block"].astype(int)]
    out["gain"] = out[["row_gain", "col_gain"]].max(axis=1)
    return out


def mixing_gain(hc: pd.DataFrame) -> pd.DataFrame:
    """Per token and depth: the composite mixing's gain (one row per sub-block)."""
    out = composite_mixing(hc)
    return out.drop_duplicates([*KEYS, "layer", "block"])[
        [*KEYS, "layer", "block", "row_gain", "col_gain", "gain"]
    ].reset_index(drop=True)


def reach(tensors: dict, pos: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(embed [N], writes [layer 2 N]) at position `pos` of a traced record: how much of the
    embedding and of each sub-block's output (attention, then MoE) the model's final collapse
    reads, through each last stream (sum over the last axis: the whole reach).

    With every pre / post / comb and the head's collapse weights a = hc_head frozen at the
    token, the collapse is linear in the streams: a write o enters as post (x) o, each later
    sub-block maps the streams S to comb^T S, and the head reads sum_s a[s] S[s]. So the head
    reads o times R^T post, where R = C_next ... C_last diag(a) (R[j, s]: stream j now, read
    through last stream s), built here from the last sub-block back. The embedding enters
    every stream alike (S_0 = 1 (x) e)."""
    post, comb = tensors["hc_post"][:, :, pos].double(), tensors["hc_comb"][:, :, pos].double()
    R = torch.diag(tensors["hc_head"][pos].double())
    writes = torch.empty_like(post)
    for layer in reversed(range(post.shape[0])):
        for sub in (1, 0):
            writes[layer, sub] = R.T @ post[layer, sub]
            R = comb[layer, sub] @ R
    return R.sum(0), writes
