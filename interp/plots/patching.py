"""Figures for patching and the contribution graph: heatmaps from tidy frames."""

from __future__ import annotations

import numpy as np
import pandas as pd
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from interp.plots import figure

METHODS = ("activation", "attribution")
AXIS = {"resid": "pos", "heads": "head"}


def patching_grid(frame: pd.DataFrame, grid: str, tokens: list[str] | None = None) -> Figure:
    """The grid's scores (0 = corrupted run, 1 = clean run), activation patching beside its
    attribution-patching estimate; `frame`: method layer [pos | head] score."""
    column = AXIS.get(grid)
    fig, axes = figure(1, 2, figsize=(10, 3.6 if column else 2.4), squeeze=False)
    limit = max(float(frame["score"].abs().max()), 1.0)
    for ax, method in zip(axes[0], METHODS):
        shown = frame[frame["method"] == method]
        if column:  # [layer column]
            values = shown.pivot(index="layer", columns=column, values="score").to_numpy()
        else:  # [1 layer]
            values = shown.sort_values("layer")["score"].to_numpy()[None]
        image = ax.imshow(values, aspect="auto", cmap="RdBu_r", vmin=-limit, vmax=limit,
                          origin="lower")  # fmt: skip
        ax.set_title(f"{grid}: {method} patching", fontsize=9)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.yaxis.set_major_locator(MaxNLocator(integer=True))
        if column:
            ax.set(xlabel=column, ylabel="layer")
            if column == "pos" and tokens is not None:
                ax.set_xticks(range(len(tokens)), [repr(t) for t in tokens], rotation=60,
                              fontsize=7, ha="right")  # fmt: skip
        else:
            ax.set(xlabel="layer", yticks=[])
    fig.colorbar(image, ax=list(axes[0]), shrink=0.8, label="patched score")
    return fig


def contribution_graph(grid: np.ndarray, labels: list[str], threshold: float, title: str) -> Figure:
    """Shares [part layer] as a heatmap; parts under `threshold` left blank (dropped edges)."""
    fig, ax = figure(figsize=(9, 0.25 * len(labels) + 1.2))
    shown = np.where(grid >= threshold, grid, np.nan)
    image = ax.imshow(shown, aspect="auto", cmap="viridis", vmin=0, vmax=1, origin="lower")
    ax.set_yticks(range(len(labels)), labels, fontsize=7)
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set(xlabel="layer", title=f"{title} (shares >= {threshold:g})")
    fig.colorbar(image, ax=ax, label="share of the residual")
    fig.tight_layout()
    return fig
