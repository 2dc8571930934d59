"""Figures for sparse-dictionary features, from a survey's feature tables."""

from __future__ import annotations

import pandas as pd
from matplotlib.figure import Figure

from interp.plots import figure


def density_histogram(density: pd.DataFrame, summary: pd.DataFrame) -> Figure:
    """Features per log10-density bin, one line per dictionary (`feature_density`); the
    legend gives each dictionary's dead share (features that never fired)."""
    fig, ax = figure(figsize=(7, 3))
    dead = summary.set_index("dictionary")["dead_fraction"]
    for name, rows in density.groupby("dictionary", sort=True):
        centres = (rows["low"] + rows["high"]) / 2
        ax.step(centres, rows["features"], where="mid", label=f"{name} (dead {dead[name]:.1%})")
    ax.set(xlabel="log10 feature density (share of tokens it fires on)", ylabel="features",
           title="feature density")  # fmt: skip
    ax.legend(fontsize=8)
    fig.tight_layout()
    return fig
