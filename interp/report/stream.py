"""Sections about the residual stream: the token's journey and the stream layer by layer."""

from __future__ import annotations

import pandas as pd

from interp.analysis.deltas import delta_summary
from interp.analysis.lens import decision_depth
from interp.plots import compare as figures
from interp.plots.residual import lens_heatmap
from interp.report.inputs import ReportInputs
from interp.report.parts import Pane, Section, image, table
from interp.report.views.embed import add_view
from interp.text import show_token

STAGES = ["resid_post", "attn_out", "mlp_out"]
HYBRID_STAGES = ["mamba_out"]  # present only where some layer writes so (interp.trace.kinds)


def journey_section(inputs: ReportInputs) -> Section:
    section = Section(
        "journey",
        "The token's journey",
        "One position (the last of the prompt) followed through every layer: the size of its "
        "residual stream after the layer, the size of the attention and MLP writes, the prompt "
        "tokens its heads draw from most (token@position weight, averaged over heads), the "
        "experts it visited (MoE), and what the stream would predict if read out there (the "
        "logit lens's top 3). At the boundary, the next-token candidates and the token chosen. "
        "In the view, click an underlined (generated) token to follow that position instead.",
        stacked=True,
    )
    frame = inputs.derived("journey")
    if frame is None:
        section.notes.append(f"Not available for this report: {inputs.reason('journey')}.")
        return section
    layers = frame[frame["stage"] == "layer"]
    per_prompt = [layers[layers["prompt"] == p] for p in range(len(inputs.prompts))]
    if not add_view(section, inputs, "journey"):
        figure = figures.lens_guesses(per_prompt, inputs.labels)
        section.images.append(image(figure, "lens guesses"))
    columns = {"layer": "layer", "resid_norm": "|x|", "attn_write": "|attn|",
               "mlp_write": "|MLP|", "sources": "draws from", "experts": "experts",
               "lens": "lens top 3"}  # fmt: skip
    if not layers["experts"].astype(bool).any():
        del columns["experts"]
    followed, chosen = [], []
    for p, prompt in enumerate(inputs.prompts):
        own = frame[frame["prompt"] == p]
        first, boundary = own.iloc[0], own[own["stage"] == "boundary"].iloc[0]
        notes = [
            f"Follows '{show_token(first['token'])}' at position {first['pos']}.",
            f"Next-token candidates: {boundary['lens']}.",
            f"Chosen: {boundary['chosen'] or '(the trace ends here)'}.",
        ]
        rows = own[own["stage"] == "layer"][list(columns)].rename(columns=columns)
        section.panes.append(Pane(prompt.label, notes=notes, tables=[table(rows, "by layer")]))
        followed.append(f"{show_token(first['token'])} @{first['pos']}")
        chosen.append(boundary["chosen"] or "-")
    section.measures = {"followed token @position": followed, "token chosen after it": chosen}
    return section


def stages_of(residual: pd.DataFrame) -> list[str]:
    """The stages the residual section shows: STAGES, and a hybrid's mamba_out."""
    present = set(residual["stage"].unique())
    return STAGES + [stage for stage in HYBRID_STAGES if stage in present]


def per_layer_norms(residual: pd.DataFrame) -> pd.DataFrame:
    """Median norm per prompt, layer and stage over positions 1.. (position 0 is left out:
    it is the attention sink, whose norm is an outlier that would dominate the scale). In a
    hybrid a layer writes through one sub-block only: its other stages are NaN."""
    stages = stages_of(residual)
    rest = residual[(residual["pos"] > 0) & residual["stage"].isin(stages)]
    medians = rest.groupby(["prompt", "layer", "stage"])["norm"].median()
    wide = medians.unstack("stage").reset_index()
    return wide.reindex(columns=["prompt", "layer", *stages])


def residual_section(inputs: ReportInputs) -> Section:
    section = Section(
        "residual",
        "The residual stream",
        "Nothing in a transformer replaces the stream: every attention layer and MLP (and a "
        "hybrid's Mamba2 layer, mamba_out) adds a write to it. Left, the size (L2 norm) of the "
        "stream after each layer; right, the size of each write. Medians over positions, leaving "
        "out position 0, the attention sink, whose norm is an outlier. Per prompt: each write's "
        "size relative to the stream it lands in, cos(x_l, x_l+1) (1: the layer did not turn the "
        "stream) and the growth |x_l+1| / |x_l|. The logit lens reads the stream after each layer"
        " through the final norm and unembedding, as if that layer were the last: the grid shades"
        " each layer and position by the lens's top-1 probability (hover a cell for its top 5; a "
        "report rebuilt from a saved trace shows the probability of the final prediction "
        "instead), and the decision depth is the first layer from which its top guess is the "
        "final one and stays so.",
        panes=[Pane(label) for label in inputs.labels],
    )
    residual = inputs.frame("residual")
    if residual.empty or residual["pos"].max() == 0:
        section.notes.append("The residual stream was not captured (or the prompt is 1 token).")
        return section
    norms = per_layer_norms(residual)
    section.images.append(image(figures.by_layer(norms, inputs.labels), "norms by layer"))
    wide = norms.pivot(index="layer", columns="prompt", values=stages_of(residual))
    wide.columns = [f"{inputs.labels[p]} {_short(stage)}" for stage, p in wide.columns]
    section.tables.append(table(wide.reset_index(), "median norms by layer", collapsed=True))
    last = norms["layer"].max()
    final = residual[(residual["layer"] == last) & (residual["stage"] == "resid_post")]
    sink = final[final["pos"] == 0].set_index("prompt")["norm"]
    final_norm = norms[norms["layer"] == last].set_index("prompt")["resid_post"]
    peak = norms.loc[norms.groupby("prompt")["attn_out"].idxmax()].set_index("prompt")["layer"]
    mlp_peak = norms.loc[norms.groupby("prompt")["mlp_out"].idxmax()].set_index("prompt")["layer"]
    prompts = range(len(inputs.prompts))
    section.measures = {
        "median |x| after the last layer": [final_norm.get(p) for p in prompts],
        "position 0 |x| / median (last layer)": [sink.get(p) / final_norm.get(p) for p in prompts],
        "layer of the largest attention write": [int(peak.get(p)) for p in prompts],
        "layer of the largest MLP write": [int(mlp_peak.get(p)) for p in prompts],
    }
    if "mamba_out" in norms:
        mamba = norms.loc[norms.groupby("prompt")["mamba_out"].idxmax()].set_index("prompt")
        section.measures["layer of the largest Mamba2 write"] = [
            int(mamba["layer"].get(p)) for p in prompts
        ]
    _deltas(inputs, section)
    _lens(inputs, section)
    return section


def _deltas(inputs: ReportInputs, section: Section) -> None:
    """Per prompt, the writes against the stream they land in: how much a layer could turn the
    stream (|write| / |x|) and how much it did (cos between the stream before and after)."""
    frame = inputs.derived("deltas")
    if frame is None:
        section.notes.append(f"Relative write sizes: not available: {inputs.reason('deltas')}.")
        return
    turn_layer, turn_cos = [], []
    for p in range(len(inputs.prompts)):
        summary = delta_summary(frame[frame["prompt"] == p])
        wide = summary.pivot(index="layer", columns="metric", values="without_sink")
        writes = ["attn_rel", "mlp_rel"] + (["mamba_rel"] if "mamba_rel" in wide else [])
        wide = wide[[*writes, "cos_next", "growth"]].reset_index()
        caption = "writes per layer, medians without the sink"
        section.panes[p].tables.append(table(wide, caption, collapsed=True))
        # Layer 0 always turns the stream most: it rewrites the bare token embedding.
        later = wide[wide["layer"] > 0]
        if len(later):
            turn = later.loc[later["cos_next"].idxmin()]
            turn_layer.append(int(turn["layer"]))
            turn_cos.append(turn["cos_next"])
    if len(turn_layer) == len(inputs.prompts):
        section.measures["layer that turns the stream most (after 0)"] = turn_layer
        section.measures["its cos(x_l, x_l+1)"] = turn_cos


def _short(stage: str) -> str:
    return {"resid_post": "|x|", "attn_out": "|attn|", "mlp_out": "|MLP|",
            "mamba_out": "|Mamba|"}[stage]  # fmt: skip


def _lens(inputs: ReportInputs, section: Section) -> None:
    lens = inputs.derived("lens")
    if lens is None:
        section.notes.append(f"Logit lens: not available: {inputs.reason('lens')}.")
        return
    tokens = inputs.frame("tokens")
    if not add_view(section, inputs, "lens"):  # the heatmap, where the view cannot be built
        for p, label in enumerate(inputs.labels):
            texts = list(tokens.loc[tokens["prompt"] == p, "token"].map(show_token))
            fig = lens_heatmap(lens[lens["prompt"] == p], texts)
            fig.axes[0].set_title(f"logit lens, {label}")
            section.images.append(image(fig, f"logit lens of {label}"))
    depth = decision_depth(lens).merge(tokens[["prompt", "pos", "token"]], on=["prompt", "pos"])
    last = []
    for p in range(len(inputs.prompts)):
        own = depth[depth["prompt"] == p].sort_values("pos")
        shown = own.assign(token=own["token"].map(show_token), final=own["final"].map(show_token))
        shown = shown[["pos", "token", "final", "depth"]].rename(columns={"final": "predicts"})
        section.panes[p].tables.append(table(shown, "decision depth by position", collapsed=True))
        prompt_end = tokens[(tokens["prompt"] == p) & ~tokens["generated"]]["pos"].max()
        last.append(own[own["pos"] == prompt_end].iloc[0])
    section.measures["prediction after the prompt"] = [show_token(r["final"]) for r in last]
    section.measures["its decision depth (layer)"] = [int(r["depth"]) for r in last]
    section.measures["mean decision depth over positions"] = list(
        depth.groupby("prompt")["depth"].mean()
    )
