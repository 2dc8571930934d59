"""MoE routing on tiny-moe: do code, prose and numbers open different doors?

The seed's picture: at each layer a router opens k doors out of N, and the token is mixed
from the experts behind them. Measured on held-out text of each domain (never trained on):
- specialisation per layer: Jensen-Shannon divergence (bits) between two domains' expert loads,
  against the same measure between two halves of one domain (sampling noise);
- temporal locality per layer: how many of a token's k experts the next token shares, against
  the chance level k/N;
- opening another door: forbid each token's top expert at one layer (the router's next choice
  takes its place) and measure the change of the next-token distribution (KL, top-1 changes).

    python experiments/moe_routing.py [--windows 8] [--seed 0] [--quick] [--out FILE.png]
"""

from __future__ import annotations

import argparse
import random
import sys
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import pandas as pd  # noqa: E402
import torch  # noqa: E402

import interp  # noqa: E402
from interp.analysis import experts as ex  # noqa: E402
from interp.corpus import DOMAINS, held_out_windows  # noqa: E402
from interp.errors import InterpError  # noqa: E402
from interp.files import run_script, save_figure  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
SEQ_LEN = 64


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
    two domains (each domain's windows cut in two halves), as the noise floor."""
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


def forbid_top_expert(model, ids: torch.Tensor, routing: pd.DataFrame) -> pd.DataFrame:
    """Per MoE layer: forbid, at every position, the expert the router ranked first there most
    often (the layer's busiest door); KL of the next-token distribution and top-1 changes."""
    base = model(ids)
    rows = []
    for layer, g in routing[routing["rank"] == 0].groupby("layer"):
        busiest = int(g.expert.mode().iloc[0])
        with model.hooks(fwd_hooks=ex.expert_hooks([layer], busiest, "forbid")):
            after = model(ids)
        effect = ex.intervention_effect(base, after)
        # Tokens that lost their top door, in the effect frame's (prompt, pos) order.
        hit = g.sort_values(["prompt", "pos"]).expert.eq(busiest).to_numpy()
        rows.append({"layer": layer, "expert": busiest, "tokens_rerouted": hit.mean(),
                     "kl_mean": effect.kl.mean(), "kl_rerouted": effect.kl[hit].mean(),
                     "kl_others": effect.kl[~hit].mean(),
                     "top1_changed": effect.changed.mean()})  # fmt: skip
    return pd.DataFrame(rows)


def plot(spec: pd.DataFrame, locality: pd.DataFrame, forbid: pd.DataFrame, out: Path) -> None:
    fig, axes = plt.subplots(1, 3, figsize=(14, 3.8))
    for (a, b), g in spec.groupby(["domain", "other"]):
        axes[0].plot(g.layer, g.js, "o-", label=f"{a} vs {b}")
    axes[0].plot(spec.groupby("layer").noise.max(), "k--", label="split-half noise (max)")
    axes[0].set(xlabel="layer", ylabel="JS divergence (bits)", title="domain specialisation")
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
    fig.tight_layout()
    save_figure(fig, out)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="tiny-moe")
    parser.add_argument("--windows", type=int, default=16, help=f"{SEQ_LEN}-token windows/domain")
    parser.add_argument("--seed", type=int, default=0, help="picks the windows")
    parser.add_argument("--quick", action="store_true", help="seconds-long smoke run")
    parser.add_argument("--out", type=Path, default=ROOT / "reports" / "moe_routing.png")
    args = parser.parse_args()
    if args.quick:
        args.windows = 4
    print(f"seed {args.seed}; command: {' '.join(sys.argv)}")
    torch.set_grad_enabled(False)
    model = interp.load(args.model)
    if model.tokenizer is None:
        raise InterpError(f"{args.model} has no tokenizer")
    windows = domain_windows(model.tokenizer, args.windows, args.seed)
    ids = torch.cat(list(windows.values()))
    labels = dict(enumerate(d for d, w in windows.items() for _ in range(len(w))))
    trace = interp.trace(model, ids, capture=("routing",))
    if not trace.meta["cfg"]["moe_layers"]:
        raise InterpError(f"{args.model} has no MoE layers")
    routing = trace.routing
    spec = specialisation(routing, labels)
    locality = pd.concat(
        ex.temporal_locality(routing[routing.prompt.map(labels) == d]).assign(domain=d)
        for d in DOMAINS
    )
    forbid = forbid_top_expert(model, ids, routing)

    print(f"\n{args.windows} held-out windows of {SEQ_LEN} tokens per domain")
    print("\nspecialisation: JS (bits) between domains vs the split-half noise of each domain:")
    print(spec.to_string(index=False, float_format="{:.3f}".format))
    best = spec.loc[spec.ratio.idxmax()]
    print(f"\nclaim 'domains route differently' holds: {bool((spec.ratio > 2).any())} "
          f"(largest: {best.domain} vs {best.other} at layer {best.layer}, JS {best.js:.3f} = "
          f"{best.ratio:.1f}x noise)")  # fmt: skip
    print("\ntemporal locality: shared experts of consecutive tokens / k, chance = k/N:")
    table = locality.pivot(index="layer", columns="domain", values="overlap")
    table["chance"] = locality.chance.iloc[0]
    print(table.to_string(float_format="{:.3f}".format))
    print(f"claim 'consecutive tokens reuse experts above chance' holds: "
          f"{bool((locality.overlap > locality.chance).all())}")  # fmt: skip
    print("\nforbid each layer's busiest expert (the router's next choice replaces it):")
    print(forbid.to_string(index=False, float_format="{:.3f}".format))
    plot(spec, locality, forbid, args.out)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    run_script(main)
