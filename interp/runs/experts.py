"""Expert utilisation of an MoE model on labelled prompts: one trace (routing captured), then
`interp.analysis.experts` on its routing frame. `interp experts` and the experiments call it."""

from __future__ import annotations

from interp.analysis import experts as ex
from interp.errors import InterpError
from interp.trace import trace as run_trace


def check(prompts: list[str], domains: list[str] | None, top: int) -> None:
    """The user's mistakes, found before a model is loaded."""
    if domains is not None and len(domains) != len(prompts):
        raise InterpError(f"{len(domains)} domain labels for {len(prompts)} prompts")
    if top <= 0:
        raise InterpError("top must be > 0")
    for text in prompts:
        if not text.strip():
            raise InterpError("a prompt is empty")


def measure(model, prompts: list[str], domains: list[str] | None = None, top: int = 3) -> dict:
    """{"layers": per-layer utilisation, locality and transition information; "overall": one
    row; "domains": per layer and domain, its `top` experts by load; "divergence": JS (bits)
    between every pair of domains per layer; "labels": the domain of each prompt; "tokens":
    routed tokens per domain}."""
    check(prompts, domains, top)
    trace = run_trace(model, prompts, capture=("routing",))
    if not trace.facts.moe_layers:
        raise InterpError(f"{trace.meta['model']} has no MoE layers: nothing routes")
    routing = trace.routing
    labels = domains or [f"p{i}" for i in range(len(prompts))]
    by_prompt = dict(enumerate(labels))
    layers = ex.balance(routing).merge(ex.temporal_locality(routing), on="layer", how="left")
    info = ex.transition_information(routing)
    if not info.empty:
        layers = layers.merge(info, on="layer", how="left")
    load = ex.domain_load(routing, by_prompt).sort_values(
        ["layer", "domain", "load"], ascending=[True, True, False]
    )
    top_experts = load.groupby(["layer", "domain"]).head(top).reset_index(drop=True)
    divergence = ex.domain_divergence(routing, by_prompt) if len(set(labels)) > 1 else None
    return {
        "layers": layers,
        "overall": ex.balance_overall(routing),
        "domains": top_experts,
        "divergence": divergence,
        "labels": labels,
        "tokens": routing.drop_duplicates(["prompt", "pos"]).prompt.map(by_prompt).value_counts(),
        "facts": trace.facts,
    }
