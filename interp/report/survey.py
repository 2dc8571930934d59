"""The HTML report of a saved survey (`interp report --survey DIR`): balance per layer, load
heatmaps, co-activation, domain maps, head roles and layer statistics. It reads only the
survey's tables, so it needs no model and reruns in seconds."""

from __future__ import annotations

from pathlib import Path

import matplotlib
import pandas as pd

from interp.files import write_atomic
from interp.plots import experts as expert_plots
from interp.report.features import survey_features_section
from interp.report.html import render_page
from interp.report.parts import RC, Section, image, table
from interp.survey.heads import SCORES
from interp.survey.output import Survey

TOP_HEADS = 5


def build_survey_report(directory: str | Path, path: str | Path) -> Path:
    survey = Survey.load(directory)
    with matplotlib.rc_context(RC):
        sections = [experts_section(survey), heads_section(survey), layers_section(survey)]
        if "feature_summary" in survey.tables:
            sections.append(survey_features_section(survey))
    meta = survey.meta
    corpus = (
        f"{meta['tokens']:,} tokens in {meta['windows']:,} windows of at most {meta['seq_len']} "
        f"from {meta['data']} (domains: {', '.join(meta['domains'])}), "
        f"{meta['world_size']} process(es)"
    )
    runs = [{"prompts": "", "command": meta.get("command", "?"), "seed": str(meta.get("seed")),
             "sampling": corpus}]  # fmt: skip
    model = str(meta.get("model", "?"))
    html = render_page(f"interp survey: {model}", model, runs, [], sections)
    write_atomic(Path(path), html)
    return Path(path)


def experts_section(survey: Survey) -> Section:
    section = Section(
        "experts", "Experts",
        "Per layer over the whole corpus: balance N*sum(f*P) (1 = uniform), normalised "
        "utilisation entropy, MaxVio (max load over mean load, minus 1) over the corpus and "
        "its mean per batch, dead experts (never chosen), and locality (share of a token's "
        "experts the next token shares; chance k/N). Co-activation counts every pair of the "
        "k chosen. Domain JS (bits) sits beside its split-half noise: the JS between two "
        "random halves of one domain, the divergence that sampling alone produces.",
    )  # fmt: skip
    if "experts" not in survey.tables:
        section.notes.append("Not surveyed (a dense model, or --stats without experts).")
        return section
    if "absent" in survey.meta:  # a survey of recorded routing (interp.survey.from_routing)
        section.notes.append(f"Counted from recorded routing; absent: {survey.meta['absent']}.")
    section.tables.append(table(survey.expert_layers, "balance per layer"))
    section.images.append(image(expert_plots.load_heatmap(survey.experts), "expert load"))
    layers = sorted(survey.experts["layer"].unique())
    middle = layers[len(layers) // 2]
    section.images.append(image(expert_plots.coactivation_heatmap(survey.coactivation, middle),
                                f"co-activation at layer {middle}"))  # fmt: skip
    if len(survey.meta["domains"]) > 1:
        section.images.append(image(expert_plots.domain_heatmap(survey.domain_load),
                                    "expert load by domain"))  # fmt: skip
        caption = "domain JS divergence (bits) and split-half noise"
        section.tables.append(table(survey.domain_divergence, caption))
    tokens = survey.expert_tokens
    if tokens.empty:  # a survey saved before the summaries, above its size limit
        section.notes.append("Top tokens per expert left out: the model's [layer, expert, "
                             "vocab] counts exceeded the survey's size limit.")  # fmt: skip
    else:
        # Counts from bounded summaries: each true count lies in [count, count + error].
        columns = ["layer", "expert", "rank", "token", "count", "error", "share"]
        tokens = tokens[tokens["rank"] < 3][[c for c in columns if c in tokens]]
        caption = "top tokens per expert (true count within [count, count + error])"
        section.tables.append(table(tokens, caption, collapsed=True))
    return section


def heads_section(survey: Survey) -> Section:
    section = Section(
        "heads", "Head roles",
        "Per head, each score averaged over the queries it is defined on: previous-token "
        "(attention to q-1), induction (to the token after an earlier copy of the current "
        "token), duplicate-token (to the earlier copies), sink (to position 0) and the entropy "
        "(nats) of the attention row.",
    )  # fmt: skip
    if "heads" not in survey.tables:
        section.notes.append("Not surveyed (--stats without heads).")
        return section
    heads = survey.heads
    rows = []
    for score in SCORES:
        ranked = heads.sort_values(score, ascending=score == "entropy", kind="stable")
        for _, r in ranked.head(TOP_HEADS).iterrows():
            rows.append({"score": score, "head": f"{int(r['layer'])}.{int(r['head'])}",
                         "value": float(r[score])})  # fmt: skip
    section.tables.append(table(pd.DataFrame(rows), f"top {TOP_HEADS} heads per score "
                                "(entropy: the most focused)"))  # fmt: skip
    section.tables.append(table(heads, "every head", collapsed=True))
    return section


def layers_section(survey: Survey) -> Section:
    section = Section(
        "layers", "Layers",
        "Mean norm of the residual stream and of what attention and the MLP write, per "
        "layer; the logit lens's decision depth (the first stream from which the lens's top-1 "
        "stays the model's own; the model's depth is the number of layers); loss per domain "
        "(nats per token).",
    )  # fmt: skip
    if "norms" not in survey.tables:
        section.notes.append("Not surveyed (--stats without layers).")
        return section
    norms = survey.norms.pivot_table(index="layer", columns="stage", values="norm").reset_index()
    section.tables.append(table(norms, "mean norm per layer"))
    depth = survey.decision_depth.assign(share=lambda d: d["count"] / max(int(d["count"].sum()), 1))
    every = survey.meta.get("lens_every")
    section.tables.append(table(depth, f"decision depth (one position in {every})"))
    section.tables.append(table(survey.loss, "loss per domain"))
    return section
