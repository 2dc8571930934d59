"""Figures for expert utilisation; each takes a frame from `interp.analysis.experts`."""

from __future__ import annotations

import pandas as pd
from matplotlib.figure import Figure

from interp.plots import figure


def _heatmap(ax, table: pd.DataFrame, label: str, **kwargs) -> None:
    image = ax.imshow(table.to_numpy(), aspect="auto", interpolation="nearest", **kwargs)
    ax.set_xticks(range(table.shape[1]), table.columns)
    ax.set_yticks(range(table.shape[0]), table.index)
    ax.figure.colorbar(image, ax=ax, label=label)


def load_heatmap(load: pd.DataFrame) -> Figure:
    """Layer x expert load f_i, from `expert_load`; uniform routing is the colour 1/N."""
    table = load.pivot_table(index="layer", columns="expert", values="load")
    fig, ax = figure(figsize=(1 + 0.4 * table.shape[1], 1.5 + 0.4 * table.shape[0]))
    # Centre the colour scale on the uniform share so over- and under-used experts stand out.
    uniform = 1 / table.shape[1]
    _heatmap(ax, table, "load (share of top-k slots)", cmap="RdBu_r", vmin=0, vmax=2 * uniform)
    ax.set(xlabel="expert", ylabel="layer", title="expert load")
    fig.tight_layout()
    return fig


def coactivation_heatmap(coact: pd.DataFrame, layer: int, lift: bool = True) -> Figure:
    """Expert x partner co-activation at one layer, from `coactivation`. With `lift`, the
    rate over its independence level (1: chosen together as often as chance)."""
    g = coact[coact["layer"] == layer]
    g = g.assign(value=g["rate"] / g["expected"].where(g["expected"] > 0) if lift else g["rate"])
    table = g.pivot_table(index="expert", columns="partner", values="value")
    fig, ax = figure(figsize=(7, 6))
    label = "rate / expected" if lift else "share of tokens"
    _heatmap(ax, table, label, cmap="viridis")
    ax.set(xlabel="partner", ylabel="expert", title=f"co-activation, layer {layer}")
    fig.tight_layout()
    return fig


def domain_heatmap(domain_loads: pd.DataFrame) -> Figure:
    """Domain x expert load, one panel per layer, from `domain_load`."""
    layers = sorted(domain_loads["layer"].unique())
    fig, axes = figure(len(layers), 1, figsize=(9, 1.2 + 1.6 * len(layers)), squeeze=False)
    for ax, layer in zip(axes[:, 0], layers):
        g = domain_loads[domain_loads["layer"] == layer]
        table = g.pivot_table(index="domain", columns="expert", values="load")
        _heatmap(ax, table, "load", cmap="magma", vmin=0)
        ax.set(ylabel=f"layer {layer}")
    axes[-1, 0].set_xlabel("expert")
    fig.suptitle("expert load by domain")
    fig.tight_layout()
    return fig
