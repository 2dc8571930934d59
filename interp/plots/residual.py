"""Figures for the residual stream: norms and writes, logit lens, DLA, soft lookups.

Each takes a frame from `interp.analysis` (deltas, lens, attribution, lookups) and returns a
matplotlib Figure; nothing here touches a model.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from interp.plots import figure


def norms_plot(deltas: pd.DataFrame) -> Figure:
    """From `deltas`: |x_l| by layer (sink apart, it is orders of magnitude off in some layers)
    and the attention / MLP (/ Mamba2) writes relative to |x_l| (median over the other
    positions)."""
    rest, sink = deltas[~deltas["is_sink"]], deltas[deltas["is_sink"]]
    fig, (left, right) = figure(1, 2, figsize=(11, 4))
    if not rest.empty:
        by_layer = rest.groupby("layer")
        median = by_layer["resid_norm"].median()
        left.plot(median.index, median, marker="o", label="median, other positions")
        left.fill_between(median.index, by_layer["resid_norm"].min(),
                          by_layer["resid_norm"].max(), alpha=0.2)  # fmt: skip
        writes = [("attn_rel", "attention write"), ("mlp_rel", "MLP write")]
        writes += [("mamba_rel", "Mamba2 write")] if "mamba_rel" in rest else []
        for column, label in writes:
            values = by_layer[column].median()
            right.plot(values.index, values, marker="o", label=label)
    left.plot(sink["layer"], sink["resid_norm"], marker="s", ls="--", label="position 0 (sink)")
    left.set(xlabel="layer", ylabel="|x_l| (resid_pre)", yscale="log", title="residual norm")
    right.axhline(1.0, color="grey", lw=0.8)
    right.set(xlabel="layer", ylabel="|write| / |x_l|", yscale="log", title="write size")
    left.legend()
    right.legend()
    fig.tight_layout()
    return fig


def lens_heatmap(lens: pd.DataFrame, tokens: list[str] | None = None) -> Figure:
    """From `logit_lens`'s lens frame: layer x position, colour = the lens probability of the
    target (by default the model's final prediction at that position)."""
    table = lens.pivot_table(index="layer", columns="pos", values="prob")
    targets = lens.groupby("pos")["target"].first()
    fig, ax = figure(figsize=(2 + 0.7 * table.shape[1], 1.5 + 0.2 * table.shape[0]))
    image = ax.imshow(table.to_numpy(), aspect="auto", origin="lower", cmap="viridis",
                      vmin=0, vmax=1, interpolation="nearest")  # fmt: skip
    labels = [
        f"{tokens[p] if tokens else p} -> {targets[p]}".replace("\n", "\\n") for p in table.columns
    ]
    ax.set_xticks(range(table.shape[1]), labels, rotation=60, ha="right")
    ax.set(xlabel="position (input -> final prediction)", ylabel="layer", title="logit lens")
    fig.colorbar(image, ax=ax, label="prob of the final prediction")
    fig.tight_layout()
    return fig


def dla_bar(dla: pd.DataFrame, top: int = 20) -> Figure:
    """From `direct_logit_attribution`: the `top` components by |contribution|."""
    picked = dla.reindex(dla["logit"].abs().sort_values(ascending=False).index[:top])[::-1]
    colours = np.where(picked["logit"] > 0, "tab:blue", "tab:red")
    fig, ax = figure(figsize=(7, 1 + 0.3 * len(picked)))
    ax.barh(picked["component"], picked["logit"], color=colours)
    ax.axvline(0, color="grey", lw=0.8)
    ax.set(xlabel="direct contribution to the logit",
           title=f"direct logit attribution (total {dla['logit'].sum():.2f})")  # fmt: skip
    fig.tight_layout()
    return fig


def lookups_plot(lookups: pd.DataFrame) -> Figure:
    """From `soft_lookups`: concentration (effective / available units) by layer and kind;
    attention heads as faint dots behind their median."""
    fig, ax = figure(figsize=(8, 4))
    heads = lookups[lookups["kind"] == "attention"]
    if not heads.empty:
        per_head = heads.groupby(["layer", "unit"])["concentration"].median().reset_index()
        ax.scatter(per_head["layer"], per_head["concentration"], s=8, alpha=0.3, color="tab:blue")
    for kind, g in lookups.groupby("kind"):
        median = g.groupby("layer")["concentration"].median()
        ax.plot(median.index, median, marker="o", label=kind)
    ax.set(xlabel="layer", ylabel="effective / available units", yscale="log",
           title="soft lookups (1 = spread over all, low = hard lookup)")  # fmt: skip
    ax.legend()
    fig.tight_layout()
    return fig
