"""Several residual streams (mHC): the mixing composed across depth, from the `hc` frame.

Ignoring what the sub-blocks write, each sub-block maps the streams x [N d] to comb^T x, so
after sub-blocks 1..K the streams are (C_1 C_2 ... C_K)^T x: the composite mixing is the
product of the comb matrices in forward order (attention then MoE, layer by layer). A product
of doubly stochastic matrices is doubly stochastic, so its gain stays 1: mHC's answer to the
unconstrained hyper-connections whose composite mixing grows with depth. Gain is measured as
the mHC paper's "Amax gain magnitude": the largest absolute row sum or column sum.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

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
