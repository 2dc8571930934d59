"""Memory held against tokens, per kind of memory (the `memory` frame: kv, sliding_kv,
ssm_state, conv_state, ...): the formula as lines, the measured cache as points."""

from __future__ import annotations

import pandas as pd
from matplotlib.figure import Figure

from interp.plots import figure
from interp.plots.compare import WIDE, colour


def memory_by_kind(curves: pd.DataFrame, measured: pd.DataFrame) -> Figure:
    """`curves` (tokens, kind, bytes) summed over layers, from the formulas; `measured`
    (tokens, kind, measured_bytes) summed over layers, from a generation's real cache."""
    fig, ax = figure(figsize=WIDE)
    for i, (kind, rows) in enumerate(curves.groupby("kind", sort=False)):
        ax.plot(rows["tokens"], rows["bytes"] / 2**10, c=colour(i), label=f"{kind} (formula)")
        points = measured[measured["kind"] == kind]
        if not points.empty:
            ax.plot(points["tokens"], points["measured_bytes"] / 2**10, "o", ms=4, c=colour(i),
                    label=f"{kind} (measured)")  # fmt: skip
    ax.set(xlabel="tokens seen", ylabel="KiB, all layers of the kind",
           title="memory per kind: KV grows with tokens, a Mamba state does not")  # fmt: skip
    ax.legend(frameon=False, fontsize="small")
    fig.tight_layout()
    return fig
