"""Report sections for patching (clean prompt P1 into corrupted P2) and the contribution graph,
from the frames `derived._patching` and `derived._contributions` compute."""

from __future__ import annotations

import pandas as pd

from interp.analysis.contributions import THRESHOLD, component_grid
from interp.analysis.patching import compare
from interp.plots import patching as figures
from interp.report.inputs import ReportInputs
from interp.report.parts import Section, fmt, image, table

GRID_TITLES = {
    "resid": "residual stream (blocks.{l}.hook_resid_pre) by layer and position",
    "heads": "attention head outputs (blocks.{l}.attn.hook_z) by layer and head",
    "mlp": "MLP outputs (blocks.{l}.hook_mlp_out) by layer",
}
TOP_CELLS = 8  # highest cells listed per grid
GAPS = 5  # cells listed where attribution and activation patching disagree most


def patching_section(inputs: ReportInputs) -> Section:
    section = Section(
        "patching",
        "Activation patching (P1 clean, P2 corrupted)",
        "Which activations carry the answer: each cell copies one activation of the clean "
        "prompt P1 into a run of the corrupted prompt P2 and measures the answer at the last "
        "position, scaled so that 0 is the corrupted run and 1 the clean one. Beside each grid, "
        "attribution patching: the same cells estimated to first order from one backward pass "
        "on the corrupted run, gradient x (clean - corrupted activation). Where the two "
        "disagree, the first-order estimate is the one to distrust.",
    )
    frame, summary = inputs.derived("patching"), inputs.derived("patching_summary")
    if frame is None or summary is None:
        section.notes.append(f"Not available for this report: {inputs.reason('patching')}.")
        return section
    row = summary.iloc[0]
    section.notes.append(
        f"Metric: {row['metric']}; clean {fmt(row['clean'])}, corrupted {fmt(row['corrupt'])}. "
        f"Attribution patching of every grid took {row['seconds_attribution']:.2f} s."
    )
    tokens = inputs.frame("tokens")
    clean_tokens = tokens[(tokens["prompt"] == 0) & ~tokens["generated"]]["token"].tolist()
    rows = []
    for grid, cells in frame.groupby("grid", sort=False):
        cells = cells.drop(columns="grid").dropna(axis=1, how="all")
        axes = [c for c in ("layer", "pos", "head") if c in cells.columns]
        cells = cells.astype(dict.fromkeys(axes, int))  # float after joining the grids
        section.images.append(image(figures.patching_grid(cells, grid, clean_tokens),
                                    GRID_TITLES[grid]))  # fmt: skip
        pair, pearson = compare(cells)
        rows.append({"grid": grid, "cells": len(pair),
                     "Pearson (attribution vs activation)": pearson,
                     "activation patching (s)": row.get(f"seconds_{grid}")})  # fmt: skip
        top = pair.nlargest(TOP_CELLS, "activation")
        section.tables.append(table(_shown(top), f"{grid}: highest cells by activation patching"))
        section.tables.append(table(_shown(pair.head(GAPS)),
                                    f"{grid}: where attribution patching strays most"))  # fmt: skip
    section.tables.insert(0, table(pd.DataFrame(rows), "the grids"))
    return section


def _shown(cells: pd.DataFrame) -> pd.DataFrame:
    return cells.assign(token=cells["token"].map(repr)) if "token" in cells.columns else cells


def contributions_section(inputs: ReportInputs) -> Section:
    section = Section(
        "contributions",
        "Contribution graph",
        "For the token each prompt predicts (its last prompt position), the share of the "
        "residual after each attention block and each MLP that came from each part, in the "
        "style of the LLM transparency tool (Ferrando and Voita 2024): a part's proximity to "
        "the sum, max(0, |sum| - |sum - part|), over the total. 'resid (attn)' is the share "
        "the residual stream keeps through the attention block, h0.. the heads; 'resid (mlp)' "
        "and 'mlp' the same for the MLP (a MoE layer counts as one MLP). Shares under "
        f"{THRESHOLD:g} are left blank: the graph's dropped edges.",
    )
    frame = inputs.derived("contributions")
    if frame is None:
        section.notes.append(f"Not available for this report: {inputs.reason('contributions')}.")
        return section
    if inputs.facts.n_streams > 1:
        section.notes.append(
            f"This model keeps {inputs.facts.n_streams} residual streams, mixed between "
            "sub-blocks: each share is of the collapsed stream the next sub-block reads (the "
            "model's head after the last one); 'resid' is what the mixing carries into it."
        )
    measures: dict[str, list] = {}
    for p, prompt in enumerate(inputs.prompts):
        own = frame[frame["prompt"] == p]
        grid, labels = component_grid(own)
        section.images.append(image(
            figures.contribution_graph(grid, labels, THRESHOLD, f"{prompt.label}"),
            f"contribution graph of {prompt.label}"))  # fmt: skip
        parts = own[own["part"] != "resid"]
        top = parts.loc[parts["share"].idxmax()]
        part = f"h{top['head']}" if top["part"] == "head" else "mlp"
        name = f"L{top['layer']} {part}"
        measures.setdefault("largest contribution (share)", []).append(
            f"{name} ({top['share']:.2f})"
        )
        measures.setdefault("parts over the threshold", []).append(int(parts["kept"].sum()))
    section.measures = measures
    return section
