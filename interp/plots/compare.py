"""Matplotlib figures of the report, each from a small tidy frame; one colour per prompt."""

from __future__ import annotations

import matplotlib
import numpy as np
import pandas as pd
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from interp.plots import figure

COLOURS = matplotlib.colormaps["tab10"].colors
WIDE = (9, 3.2)


def colour(i: int):
    return COLOURS[i % len(COLOURS)]


def kv_bytes(curves: pd.DataFrame, measured: pd.DataFrame) -> Figure:
    """KV cache size against positions: `curves` (positions, bytes, mha_bytes) as lines,
    `measured` (positions, measured_bytes) as points from the real cache."""
    fig, ax = figure(figsize=WIDE)
    ax.plot(curves["positions"], curves["mha_bytes"] / 2**20, "--", c="grey", label="full MHA")
    ax.plot(curves["positions"], curves["bytes"] / 2**20, c=colour(0), label="this model")
    if not measured.empty:
        ax.plot(measured["positions"], measured["measured_bytes"] / 2**20, "o", ms=4,
                c=colour(1), label="measured (generation)")  # fmt: skip
    ax.set(xlabel="positions in the cache", ylabel="MiB (float32)", title="KV cache size")
    ax.legend(frameon=False)
    fig.tight_layout()
    return fig


def token_probs(tokens: pd.DataFrame, labels: list[str]) -> Figure:
    """p(token | prefix) by position; generated tokens drawn as filled dots."""
    fig, ax = figure(figsize=WIDE)
    for p, label in enumerate(labels):
        rows = tokens[tokens["prompt"] == p]
        prob = np.exp(rows["logprob"].to_numpy())
        ax.plot(rows["pos"], prob, "-", c=colour(p), lw=1, label=label)
        gen = rows["generated"].to_numpy()
        ax.plot(rows["pos"][gen], prob[gen], "o", c=colour(p), ms=4)
        ax.plot(rows["pos"][~gen], prob[~gen], "o", mfc="white", c=colour(p), ms=4)
    ax.set(xlabel="position", ylabel="p(token | prefix)", ylim=(0, 1.02),
           title="probability of each token (open: prompt, filled: generated)")  # fmt: skip
    ax.legend(frameon=False)
    fig.tight_layout()
    return fig


WRITES = {"attn_out": ("-", "attention"), "mlp_out": ("--", "MLP"), "mamba_out": (":", "Mamba2")}


def by_layer(per_layer: pd.DataFrame, labels: list[str]) -> Figure:
    """Left: median |x| after each layer; right: median attention, MLP (and Mamba2) write
    sizes. `per_layer` columns: prompt, layer, resid_post, attn_out, mlp_out[, mamba_out]; NaN
    where a layer has no such sub-block (hybrids): those layers are skipped, marked points."""
    fig, (left, right) = figure(1, 2, figsize=(10, 3.4))
    for p, label in enumerate(labels):
        rows = per_layer[per_layer["prompt"] == p]
        left.plot(rows["layer"], rows["resid_post"], c=colour(p), label=label)
        for column, (style, name) in WRITES.items():
            kept = rows.dropna(subset=[column]) if column in rows else rows.iloc[:0]
            if len(kept):
                right.plot(kept["layer"], kept[column], style, c=colour(p), marker=".",
                           label=f"{label} {name}")  # fmt: skip
    left.set(xlabel="layer", ylabel="median |x| after the layer", title="residual stream norm")
    right.set(xlabel="layer", ylabel="median |write|", title="what each layer adds")
    for ax in (left, right):
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    left.legend(frameon=False)
    right.legend(frameon=False, fontsize=8)
    fig.tight_layout()
    return fig


def head_maps(tables: list[pd.DataFrame], labels: list[str], what: str, **kwargs) -> Figure:
    """One layer x head heatmap per prompt, on a shared colour scale."""
    n = len(tables)
    fig, axes = figure(1, n, figsize=(1.5 + 3.2 * n, 5), squeeze=False, sharey=True)
    image = None
    for ax, table, label in zip(axes[0], tables, labels):
        image = ax.imshow(table.to_numpy(), aspect="auto", interpolation="nearest", **kwargs)
        ax.set(xlabel="head", title=label)
        ax.set_xticks(range(table.shape[1]))
    axes[0, 0].set_ylabel("layer")
    axes[0, 0].yaxis.set_major_locator(MaxNLocator(integer=True))
    fig.colorbar(image, ax=axes[0].tolist(), label=what)
    return fig


def lens_guesses(frames: list[pd.DataFrame], labels: list[str]) -> Figure:
    """The logit lens's top-1 probability by layer at each prompt's followed position, with
    its guess written wherever a confident (p >= 0.4) guess changes (`journey` frames,
    layer rows)."""
    fig, ax = figure(figsize=(10, 3.6))
    for p, (frame, label) in enumerate(zip(frames, labels)):
        ax.plot(frame["layer"], frame["top1_prob"], c=colour(p), marker=".", label=label)
        changed = frame["top1"].ne(frame["top1"].shift()) & (frame["top1_prob"] >= 0.4)
        for row in frame[changed].itertuples():
            ax.annotate(row.top1, (row.layer, row.top1_prob), fontsize=7, color=colour(p),
                        xytext=(2, 3), textcoords="offset points")  # fmt: skip
    ax.set(xlabel="layer", ylabel="lens top-1 probability", ylim=(0, 1.08),
           title="what the stream would predict after each layer")  # fmt: skip
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.legend(frameon=False)
    fig.tight_layout()
    return fig


def marked_heatmap(table: pd.DataFrame, marks: list[tuple[int, int]], what: str) -> Figure:
    """Layer x head heatmap with the `marks` (layer, head) circled."""
    fig, ax = figure(figsize=(4.5, 5))
    image = ax.imshow(table.to_numpy(), aspect="auto", interpolation="nearest", cmap="viridis",
                      vmin=0, vmax=1)  # fmt: skip
    rows, cols = list(table.index), list(table.columns)
    for layer, head in marks:
        ax.plot(cols.index(head), rows.index(layer), "o", mfc="none", mec="red", ms=10, mew=2)
    ax.set(xlabel="head", ylabel="layer", title=what)
    ax.set_xticks(range(len(cols)))
    ax.yaxis.set_major_locator(MaxNLocator(integer=True))
    fig.colorbar(image, ax=ax)
    fig.tight_layout()
    return fig


def shape_journey(shapes: pd.DataFrame) -> Figure:
    """Values per token at each hook of one block, top to bottom in the order they fire."""
    fig, ax = figure(figsize=(8, 0.5 + 0.22 * len(shapes)))
    y = np.arange(len(shapes))
    ax.barh(y, shapes["per_token"], color=colour(0))
    for i, (n, shape) in enumerate(zip(shapes["per_token"], shapes["shape"])):
        ax.text(n * 1.15, i, f"{n:,}  {shape}", va="center", fontsize=7)
    ax.set_yticks(y, shapes["hook"], fontsize=7)
    ax.invert_yaxis()
    ax.set_xscale("log")
    ax.set_xlim(0.8, shapes["per_token"].max() * 40)  # room for the labels
    ax.set(xlabel="numbers per token (log scale)", title="shape journey through one block")
    fig.tight_layout()
    return fig


def coverage_by_layer(layers: pd.DataFrame, labels: list[str]) -> Figure:
    """Left: effective coverage (solid) and coverage (dashed) of each layer's heads; right:
    the share of attention each layer parks on the sink. `layers`: coverage_layers frame."""
    fig, (left, right) = figure(1, 2, figsize=(10, 3.4))
    for p, label in enumerate(labels):
        rows = layers[layers["prompt"] == p]
        c = colour(p)
        left.plot(rows["layer"], rows["effective_coverage"], c=c, label=f"{label} effective")
        left.plot(rows["layer"], rows["coverage"], "--", c=c, label=f"{label} coverage")
        right.plot(rows["layer"], rows["sink_mass"], c=c, label=label)
    left.set(xlabel="layer", ylabel="share of prompt keys", ylim=(0, 1.02),
             title="how much of the prompt each layer reads")  # fmt: skip
    right.set(xlabel="layer", ylabel="sink mass", ylim=(0, 1.02), title="attention on the sink")
    for ax in (left, right):
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    left.legend(frameon=False, fontsize=8)
    right.legend(frameon=False)
    fig.tight_layout()
    return fig
