"""The attention section: the most active heads and the induction heads of the model."""

from __future__ import annotations

import pandas as pd

from interp.plots import compare as figures
from interp.report.inputs import ReportInputs
from interp.report.parts import Pane, Section, Table, image, table
from interp.report.views.embed import add_view
from interp.runs.induction import MIN_DELTA, THRESHOLD
from interp.text import show_token

TOP = 8  # heads listed per prompt


def head_activity(inputs: ReportInputs) -> pd.DataFrame:
    """Per prompt and head: non_sink (share of the attention mass that goes past position 0,
    the sink most heads park on when they have nothing to do) and entropy (mean over queries
    1.., nats; query 0 can only see itself)."""
    mass = inputs.frame("attention_summary")
    keys = ["prompt", "layer", "head", "kv_head"]
    total = mass.groupby(keys)["mass"].sum()
    sink = mass[mass["key"] == 0].set_index(keys)["mass"]
    out = (1 - sink / total).rename("non_sink").to_frame()
    entropy = inputs.frame("query_entropy")
    out["entropy"] = entropy[entropy["query"] > 0].groupby(keys)["entropy"].mean()
    return out.reset_index()


def _reads(inputs: ReportInputs) -> pd.DataFrame:
    """Per prompt and head: the token the last prompt position attends to most."""
    rows = inputs.frame("query_attention")
    tokens = inputs.frame("tokens")
    last = tokens[~tokens["generated"]].groupby("prompt")["pos"].max().rename("query")
    rows = rows.merge(last.reset_index(), on=["prompt", "query"])
    best = rows.loc[rows.groupby(["prompt", "layer", "head"])["weight"].idxmax()]
    best = best.merge(tokens[["prompt", "pos", "token"]], left_on=["prompt", "key"],
                      right_on=["prompt", "pos"])  # fmt: skip
    best["reads"] = [f"{show_token(t)} (pos {k}, {w:.2f})"
                     for t, k, w in zip(best["token"], best["key"], best["weight"])]  # fmt: skip
    return best[["prompt", "layer", "head", "reads"]]


def attention_section(inputs: ReportInputs) -> Section:
    section = Section(
        "attention",
        "Attention",
        "Which heads do something with this text. Most heads put most of their weight on "
        "position 0 (the attention sink) when they have nothing to look up; the share of "
        "weight they put anywhere else is their activity. Entropy (nats) says how spread a "
        "head's attention is: exp(entropy) is the effective number of keys it reads. 'Reads' "
        "is what the last prompt position looks at most in that head. In the views below, pick "
        "a layer and a head (grouped by the KV head they share; a KV head's button shows the "
        "mean of its query heads) and hover or click a token: blue shades the keys it reads, "
        "an orange underline the later tokens that read it.",
    )
    if inputs.frame("attention_summary").empty:
        section.notes.append("Attention was not captured in this trace.")
    else:
        _active_heads(inputs, section)
        add_view(section, inputs, "attention")
    _induction(inputs, section)  # measured on its own probe: needs no capture of the prompts
    return section


def _active_heads(inputs: ReportInputs, section: Section) -> None:
    heads = head_activity(inputs)
    reads = _reads(inputs)
    if not reads.empty:
        heads = heads.merge(reads, on=["prompt", "layer", "head"], how="left")
    by_prompt = heads.groupby("prompt")
    maps = [g.pivot(index="layer", columns="head", values="non_sink") for _, g in by_prompt]
    figure = figures.head_maps(maps, inputs.labels, "non-sink share", cmap="magma", vmin=0, vmax=1)
    section.images.append(image(figure, "non-sink attention share per head"))
    active = []
    for p, prompt in enumerate(inputs.prompts):
        top = heads[heads["prompt"] == p].nlargest(TOP, "non_sink")
        active.append(top.iloc[0])
        shown = top.assign(head=[f"{r.layer}.{r.head}" for r in top.itertuples()])
        cols = ["head", "kv_head", "non_sink", "entropy"] + (["reads"] if "reads" in top else [])
        pane = Pane(prompt.label, tables=[table(shown[cols], "most active heads (layer.head)")])
        section.panes.append(pane)
    if len(inputs.prompts) > 1:
        section.tables.append(_differing_heads(heads, inputs.labels))
    section.measures = {
        "most active head (layer.head)": [f"{int(r['layer'])}.{int(r['head'])}" for r in active],
        "its non-sink share": [r["non_sink"] for r in active],
        "mean non-sink share": list(by_prompt["non_sink"].mean()),
        "mean attention entropy (nats)": list(by_prompt["entropy"].mean()),
    }


def _differing_heads(heads: pd.DataFrame, labels: list[str]) -> Table:
    wide = heads.pivot_table(index=["layer", "head"], columns="prompt", values="non_sink")
    wide.columns = [f"{labels[p]} non-sink" for p in wide.columns]
    wide["spread"] = wide.max(axis=1) - wide.min(axis=1)
    wide = wide.nlargest(TOP, "spread").reset_index()
    return table(wide, "heads whose activity differs most between the prompts")


def _induction(inputs: ReportInputs, section: Section) -> None:
    """Induction heads are a property of the model, measured on a probe of repeated random
    tokens, not on the prompts: they are listed once, not per prompt."""
    scores = inputs.derived("induction")
    if scores is None:
        section.notes.append(f"Induction heads: not available: {inputs.reason('induction')}.")
        return
    grid = scores.pivot(index="layer", columns="head", values="induction")
    found = scores[scores["induction_head"]]
    marks = [(int(r.layer), int(r.head)) for r in found.itertuples()]
    section.images.append(
        image(
            figures.marked_heatmap(grid, marks, "induction score (circled: induction heads)"),
            "induction score per head",
        )  # fmt: skip
    )
    top = scores.nlargest(10, "induction").drop(columns=["kv_head"])
    section.tables.append(
        table(top, "induction probe: random tokens repeated once; top heads by induction score")
    )
    ablation = inputs.derived("induction_ablation")
    if ablation is not None:
        section.tables.append(
            table(ablation, "second-copy loss with the top heads ablated vs random heads")
        )
    names = ", ".join(f"{layer}.{head}" for layer, head in marks) or "none"
    section.notes.append(
        f"Induction heads (score and ablation evidence both): {names}. A head counts only if "
        f"it attends to the token after the earlier copy (score >= {THRESHOLD}) AND ablating it "
        f"alone raises the second-copy loss by {MIN_DELTA} nats or more, and more than ablating "
        "any of a few random low-scoring heads (as `interp induction` decides)."
    )
