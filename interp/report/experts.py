"""The experts section (mixture-of-experts models only), from `interp.analysis.experts`."""

from __future__ import annotations

import pandas as pd

from interp.analysis import experts
from interp.plots import experts as expert_plots
from interp.report.inputs import ReportInputs
from interp.report.parts import Pane, Section, image, table
from interp.report.views.embed import add_view


def experts_section(inputs: ReportInputs) -> Section:
    section = Section(
        "experts",
        "Experts",
        "In a mixture-of-experts layer a router sends each token to k of N expert MLPs and "
        "mixes their outputs by its weights. Load: the share of the top-k slots each expert "
        "got (uniform is 1/N). Balance N*sum(f*P) is 1 when routing is uniform; entropy is "
        "the normalised entropy of the load (1: every expert used equally); routing entropy "
        "(nats) is how unsure the router is per token. Jensen-Shannon divergence (bits, 0 to "
        "1) says how differently two prompts use the experts. In the views, hover a token for "
        "the experts it went to in every layer; pick a layer and click an expert to shade the "
        "tokens routed to it by the weight it got.",
    )
    routing = inputs.frame("routing")
    if not inputs.facts.moe_layers:
        section.notes.append("Not available for this model: it has no experts (dense MLPs).")
        return section
    if routing.empty:
        section.notes.append("Routing was not captured in this trace.")
        return section
    section.images.append(image(expert_plots.load_heatmap(experts.expert_load(routing)),
                                "expert load, all prompts together"))  # fmt: skip
    add_view(section, inputs, "routing")
    overall = []
    for p, prompt in enumerate(inputs.prompts):
        own = routing[routing["prompt"] == p]
        row = experts.balance_overall(own).assign(prompt=prompt.label)
        overall.append(row)
        per_layer = experts.balance(own).drop(columns=["tokens"])
        section.panes.append(Pane(prompt.label, tables=[table(per_layer, "per layer")]))
    summary = pd.concat(overall, ignore_index=True)
    section.tables.append(table(summary[["prompt", *summary.columns[:-1]]], "averaged over layers"))
    middle = inputs.facts.moe_layers[len(inputs.facts.moe_layers) // 2]
    coact = experts.coactivation(routing)
    section.images.append(image(expert_plots.coactivation_heatmap(coact, middle),
                                f"co-activation at layer {middle}"))  # fmt: skip
    section.measures = {
        "expert balance (1 = uniform)": list(summary["balance"]),
        "routing entropy (nats)": list(summary["routing_entropy"]),
        "dead experts (summed over layers)": [int(d) for d in summary["dead"]],
    }
    if len(inputs.prompts) > 1:
        domains = dict(enumerate(inputs.labels))
        loads = experts.domain_load(routing, domains)
        section.images.append(image(expert_plots.domain_heatmap(loads), "expert load by prompt"))
        js = experts.domain_divergence(routing, domains)
        js = js.rename(columns={"domain": "prompt", "other": "other prompt"})
        section.tables.append(table(js, "how differently the prompts use the experts (JS, bits)"))
    return section
