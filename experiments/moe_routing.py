"""MoE routing on tiny-moe: do code, prose and numbers open different doors?

The seed's picture: at each layer a router opens k doors out of N, and the token is mixed
from the experts behind them. Measured on held-out text of each domain (never trained on):
- specialisation per layer: Jensen-Shannon divergence (bits) between two domains' expert loads,
  against the same measure between two halves of one domain (sampling noise);
- temporal locality per layer: how many of a token's k experts the next token shares, against
  the chance level k/N;
- opening another door: forbid each token's top expert at one layer (the router's next choice
  takes its place), and force each expert in turn into every token's top-k at one layer;
  the change of the next-token distribution (KL, top-1 changes) on the tokens rerouted.

Position 0 of every window is the BOS token: the same context-free token in every window of
every domain, it would add one identical routing to each domain's load. It is left out.

    python experiments/moe_routing.py [--windows 48] [--seed 0] [--quick] [--out FILE.png]
"""

from __future__ import annotations

import random
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import torch  # noqa: E402

import interp  # noqa: E402
from interp import scripts  # noqa: E402
from interp.analysis import experts as ex  # noqa: E402
from interp.corpus import DOMAINS, held_out_windows  # noqa: E402
from interp.errors import InterpError  # noqa: E402
from interp.files import save_figure  # noqa: E402

SEQ_LEN = 64
NOISE_FACTOR = 2  # "routes differently": JS at least this many times the split-half noise
# Interventions cost a forward pass each (68 of them): run on this many windows per domain.
INTERVENE_WINDOWS = 16


def domain_windows(tokenizer, n: int, seed: int) -> dict[str, torch.Tensor]:
    """`n` held-out windows per domain, drawn reproducibly from `seed`."""
    out = {}
    for domain in DOMAINS:
        every = held_out_windows(tokenizer, domain, SEQ_LEN, 10_000)
        pick = random.Random(f"{seed}/{domain}").sample(range(len(every)), min(n, len(every)))
        out[domain] = every[sorted(pick)]
    return out


def specialisation(routing: pd.DataFrame, labels: dict[int, str]) -> pd.DataFrame:
    """Per layer and domain pair: JS between the domains, and the larger split-half JS of the
    two domains (each domain's windows cut in two halves), as the noise floor. The halves hold
    half the tokens, so the floor is, if anything, too high (JS of samples shrinks with size)."""
    across = ex.domain_divergence(routing, labels)
    halves = {}
    for domain in set(labels.values()):
        prompts = [p for p, d in labels.items() if d == domain]
        half = len(prompts) // 2
        halves.update({p: f"{domain}-{'ab'[i >= half]}" for i, p in enumerate(prompts)})
    within = ex.domain_divergence(routing, halves)
    within = within[within.domain.str[:-2] == within.other.str[:-2]]
    noise = within.assign(domain=within.domain.str[:-2]).groupby(["layer", "domain"]).js.max()
    across["noise"] = [
        max(noise[layer, a], noise[layer, b])
        for layer, a, b in zip(across.layer, across.domain, across.other, strict=True)
    ]
    across["ratio"] = across.js / across.noise
    return across


def routed(trace, frame: str = "routing") -> pd.DataFrame:
    """A routing frame (sparse, or "routing_dense") without position 0 (the BOS: see the
    module doc)."""
    routing = trace.frame(frame)
    return routing[routing.pos > 0]


def per_token(routing: pd.DataFrame, layer: int, column: str) -> np.ndarray:
    """[window, pos, expert]: one routing column at one layer (every window is SEQ_LEN long)."""
    g = routing[routing.layer == layer].sort_values(["prompt", "pos", "expert"])
    return g[column].to_numpy().reshape(g.prompt.nunique(), g.pos.nunique(), -1)


def effect_of(model, ids: torch.Tensor, base: torch.Tensor, hooks) -> tuple[np.ndarray, ...]:
    """(KL(before || after) in nats, top-1 changed) per [window, pos], position 0 dropped to
    match the routing frame."""
    with model.hooks(fwd_hooks=hooks):
        after = model(ids)
    effect = ex.intervention_effect(base, after)
    shape = ids.shape
    kl, changed = (effect[c].to_numpy().reshape(shape)[:, 1:] for c in ("kl", "changed"))
    return kl, changed


def forbid_top_expert(model, ids: torch.Tensor, base, routing: pd.DataFrame) -> pd.DataFrame:
    """Per MoE layer: forbid, at every position, the expert the router ranked first there most
    often (the layer's busiest door); KL of the next-token distribution and top-1 changes."""
    rows = []
    for layer in sorted(routing.layer.unique()):
        first = per_token(routing, layer, "rank").argmin(-1)  # [window, pos]: the top expert
        busiest = int(np.bincount(first.ravel()).argmax())
        kl, changed = effect_of(model, ids, base, ex.expert_hooks([layer], busiest, "forbid"))
        hit = first == busiest
        rows.append({"layer": layer, "expert": busiest, "tokens_rerouted": hit.mean(),
                     "kl_mean": kl.mean(), "kl_rerouted": kl[hit].mean(),
                     "kl_others": kl[~hit].mean(), "top1_changed": changed.mean()})  # fmt: skip
    return pd.DataFrame(rows)


def force_each_expert(model, ids: torch.Tensor, base, routing: pd.DataFrame) -> pd.DataFrame:
    """Per MoE layer and expert: force it into every token's top-k at that layer. It takes the
    place of the router's last choice at the weight the router gives it (OLMoE does not
    renormalise the top-k), so a door the router would keep shut also opens only a little.
    KL and top-1 changes over the tokens that did not have the expert already."""
    rows = []
    for layer in sorted(routing.layer.unique()):
        selected, prob, rank = (per_token(routing, layer, c) for c in ("selected", "prob", "rank"))
        top_k = int(selected[0, 0].sum())
        last_choice = prob[rank == top_k - 1].reshape(prob.shape[:2])
        for expert in range(selected.shape[-1]):
            kl, changed = effect_of(model, ids, base, ex.expert_hooks([layer], expert, "force"))
            new = ~selected[..., expert]
            rows.append({"layer": layer, "expert": expert, "usual_load": 1 - new.mean(),
                         "weight": prob[..., expert][new].mean(),
                         "replaced": last_choice[new].mean(), "kl": kl[new].mean(),
                         "top1_changed": changed[new].mean()})  # fmt: skip
    return pd.DataFrame(rows)


def summarise_force(force: pd.DataFrame) -> pd.DataFrame:
    """Per layer, over the experts forced: median and largest KL and top-1 change."""
    worst = force.loc[force.groupby("layer").kl.idxmax()].set_index("layer")
    g = force.groupby("layer")
    return pd.DataFrame({
        "weight_median": g.weight.median(), "replaced_median": g.replaced.median(),
        "kl_median": g.kl.median(), "kl_max": g.kl.max(),
        "top1_median": g.top1_changed.median(), "top1_max": g.top1_changed.max(),
        "worst_expert": worst.expert, "worst_usual_load": worst.usual_load,
    }).reset_index()  # fmt: skip


def plot(spec, locality, forbid, force, out: Path) -> None:
    fig, axes = plt.subplots(1, 4, figsize=(18, 3.8))
    for (a, b), g in spec.groupby(["domain", "other"]):
        axes[0].plot(g.layer, g.js, "o-", label=f"{a} vs {b}")
    axes[0].plot(spec.groupby("layer").noise.max(), "k--", label="split-half noise (max)")
    axes[0].set(xlabel="layer", ylabel="JS divergence (bits)", title="domain specialisation")
    axes[0].set_yscale("log")
    axes[0].legend(fontsize=7)
    for domain, g in locality.groupby("domain"):
        axes[1].plot(g.layer, g.overlap, "o-", label=domain)
    axes[1].axhline(locality.chance.iloc[0], color="k", ls="--", label="chance k/N")
    axes[1].set(xlabel="layer", ylabel="shared experts / k", title="consecutive tokens")
    axes[1].legend(fontsize=7)
    axes[2].bar(forbid.layer - 0.2, forbid.kl_rerouted, 0.4, label="KL (nats), rerouted tokens")
    axes[2].bar(forbid.layer + 0.2, forbid.top1_changed, 0.4, label="top-1 changed (share)")
    axes[2].set(xlabel="layer", title="forbid the busiest expert")
    axes[2].legend(fontsize=7)
    for layer, g in force.groupby("layer"):
        axes[3].scatter(g.weight, g.kl, s=14, label=f"layer {layer}")
    axes[3].set(xlabel="router weight of the forced expert", ylabel="KL (nats), rerouted tokens",
                title="force each expert in turn", xscale="log", yscale="log")  # fmt: skip
    axes[3].legend(fontsize=7)
    for ax in axes[:3]:
        ax.set_xticks(sorted(spec.layer.unique()))
    fig.tight_layout()
    save_figure(fig, out)


def main(argv: list[str] | None = None) -> dict[str, pd.DataFrame]:
    parser = scripts.parser(__doc__, "moe_routing", model="tiny-moe", seed_help="picks the windows")
    scripts.add_windows(parser, f"{SEQ_LEN}-token windows/domain")
    args = parser.parse_args(argv)
    scripts.check_windows(args)
    model = scripts.start(args, argv)
    if model.tokenizer is None:
        raise InterpError(f"{args.model} has no tokenizer")
    windows = domain_windows(model.tokenizer, args.windows, args.seed)
    ids = torch.cat(list(windows.values()))
    labels = dict(enumerate(d for d, w in windows.items() for _ in range(len(w))))
    trace = interp.trace(model, ids, capture=("routing",))
    if not trace.facts.moe_layers:
        raise InterpError(f"{args.model} has no MoE layers")
    routing = routed(trace)
    spec = specialisation(routing, labels)
    locality = pd.concat(
        ex.temporal_locality(routing[routing.prompt.map(labels) == d]).assign(domain=d)
        for d in DOMAINS
    )
    few = torch.cat([w[:INTERVENE_WINDOWS] for w in windows.values()])
    few_routing = routed(interp.trace(model, few, capture=("routing_dense",)), "routing_dense")
    base = model(few)
    forbid = forbid_top_expert(model, few, base, few_routing)
    force = force_each_expert(model, few, base, few_routing)

    print(f"\n{args.windows} held-out windows of {SEQ_LEN} tokens per domain")
    print("\nspecialisation: JS (bits) between domains vs the split-half noise of each domain:")
    print(spec.to_string(index=False, float_format="{:.3f}".format))
    best = spec.loc[spec.ratio.idxmax()]
    print(f"\nclaim 'domains route differently' holds: {bool((spec.ratio > NOISE_FACTOR).any())} "
          f"(largest: {best.domain} vs {best.other} at layer {best.layer}, JS {best.js:.3f} = "
          f"{best.ratio:.1f}x noise)")  # fmt: skip
    cp = spec[(spec.domain == "code") & (spec.other == "prose")]
    above = cp.layer[cp.ratio > NOISE_FACTOR].tolist()
    print(f"code vs prose: JS {cp.js.min():.3f}..{cp.js.max():.3f} bits, "
          f"{cp.ratio.min():.1f}..{cp.ratio.max():.1f}x noise; above {NOISE_FACTOR}x noise in "
          f"layers {above}")  # fmt: skip
    print("\ntemporal locality: shared experts of consecutive tokens / k, chance = k/N:")
    table = locality.pivot(index="layer", columns="domain", values="overlap")
    table["chance"] = locality.chance.iloc[0]
    print(table.to_string(float_format="{:.3f}".format))
    below = locality[locality.overlap <= locality.chance]
    exceptions = ", ".join(f"{d} at layer {layer}" for d, layer in zip(below.domain, below.layer))
    print(
        f"claim 'consecutive tokens reuse experts above chance' holds: {below.empty}"
        + (f" (not for {exceptions})" if exceptions else "")
    )
    n_few = len(few) // len(windows)
    print(f"\nforbid each layer's busiest expert (the router's next choice replaces it; "
          f"{n_few} windows per domain):")  # fmt: skip
    print(forbid.to_string(index=False, float_format="{:.3f}".format))
    print("\nforce each expert in turn into every token's top-k (median and max over the "
          "experts of a layer; KL and top-1 on the tokens rerouted; weight: the forced expert's, "
          "replaced: the weight of the door it took the place of):")  # fmt: skip
    print(summarise_force(force).to_string(index=False, float_format="{:.3f}".format))
    spread = force.groupby("layer").kl.agg(lambda kl: kl.max() / kl.min()).max()
    print(f"which expert is forced moves the KL by at most {spread:.2f}x within a layer: the "
          f"forced door opens at weight {force.weight.median():.3f} (median) in place of one at "
          f"{force.replaced.median():.3f} (median)")  # fmt: skip
    plot(spec, locality, forbid, force, args.out)
    print(f"wrote {args.out}")
    return {"specialisation": spec, "locality": locality, "forbid": forbid, "force": force}


if __name__ == "__main__":
    scripts.run_script(main)
