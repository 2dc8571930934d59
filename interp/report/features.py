"""The features section: what the trace's sparse dictionaries read at each token."""

from __future__ import annotations

import pandas as pd

from interp.report.inputs import ReportInputs
from interp.report.parts import Pane, Section, image, table
from interp.report.views.embed import add_view
from interp.text import show_text, show_token

SHOWN = 8  # top features listed per prompt's last token


def features_section(inputs: ReportInputs) -> Section:
    section = Section(
        "features",
        "Features",
        "A sparse dictionary (an SAE, or a transcoder) rewrites the activation at one hook as a "
        "few active features out of thousands, plus a reconstruction error. L0: the features "
        "active at a token; relative error: |activation - reconstruction| / |activation|. In "
        "the view, click a token for its top features and a feature to shade the prompt by it "
        "(and, with a survey, to see its top contexts and its density).",
    )
    frame, errors = inputs.frame("features"), inputs.frame("feature_error")
    if errors.empty:
        section.notes.append(
            "Traced without dictionaries: give --features DIR (interp report) or "
            "features=[...] (interp.trace)."
        )
        return section
    add_view(section, inputs, "features")
    summary = (
        errors.groupby(["prompt", "dictionary", "hook"], sort=True)
        .agg(tokens=("pos", "size"), l0=("l0", "mean"), relative_error=("relative", "mean"))
        .reset_index()
    )
    summary["prompt"] = [inputs.labels[p] for p in summary["prompt"]]
    section.tables.append(table(summary, "each dictionary's L0 and error, per prompt"))
    for p, prompt in enumerate(inputs.prompts):
        pane = Pane(prompt.label)
        rows = frame[frame["prompt"] == p]
        last = int(errors.loc[errors["prompt"] == p, "pos"].max())
        top = rows[rows["pos"] == last].groupby("dictionary", sort=True).head(SHOWN)
        top = top.assign(token=top["token"].map(show_token))
        pane.tables.append(
            table(
                top[["dictionary", "pos", "token", "feature", "activation"]],
                "top features at the last token",
            )  # fmt: skip
        )
        section.panes.append(pane)
    for name, column in (("mean L0", "l0"), ("mean relative error", "relative")):
        by = errors.groupby(["dictionary", "prompt"])[column].mean()
        for dictionary in sorted(errors["dictionary"].unique()):
            values = by.get(dictionary, pd.Series(dtype=float))
            section.measures[f"{dictionary}: {name}"] = [
                values.get(p) for p in range(len(inputs.prompts))
            ]
    return section


def survey_features_section(survey) -> Section:
    """The features of a saved survey: density, dead and dense shares, top contexts."""
    from interp.plots.features import density_histogram

    section = Section(
        "features",
        "Features",
        "Per dictionary over the whole corpus: L0 (features active per token), the share of "
        "dead features (never fired) and dense ones (firing on more than "
        f"{float(survey.feature_summary['dense_threshold'].iloc[0]):.0%} of tokens), the "
        "density histogram, and the top activating contexts of the most frequent features "
        "(the token itself in [brackets]).",
    )
    section.tables.append(table(survey.feature_summary, "dictionaries"))
    section.images.append(
        image(density_histogram(survey.feature_density, survey.feature_summary), "density")
    )
    counts = survey.features.sort_values(["dictionary", "count"], ascending=[True, False])
    frequent = counts.groupby("dictionary").head(SHOWN)[["dictionary", "feature"]]
    contexts = survey.feature_contexts.merge(frequent, on=["dictionary", "feature"])
    contexts = contexts[contexts["rank"] < 3]
    text = [
        "".join(f"[{t}]" if i == focus else t for i, t in enumerate(context))
        for context, focus in zip(contexts["context"], contexts["focus"])
    ]
    shown = contexts[["dictionary", "feature", "rank", "activation"]].assign(
        context=[show_text(t) for t in text]
    )
    section.tables.append(table(shown, "top contexts of the most frequent features"))
    return section
