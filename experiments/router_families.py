"""Two router families on the same held-out text: softmax top-k with an auxiliary loss
(tiny-moe, OLMoE) against DeepSeek-V3's sigmoid router balanced by a bias (tiny-deepseek).

The seed pictures MoE as Kimi K2 does it: many experts, 8 chosen per token, one shared expert
always on, and a sigmoid router balanced by a bias instead of an auxiliary loss. Measured per
model on `--windows` held-out windows of each domain (position 0, the BOS, left out):
- balance: N * sum f_i P_i, MaxVio = max load / mean load - 1 (DeepSeek-V3's measure), dead
  experts (never chosen), all over routed experts only (the shared expert is outside the load);
  MaxVio of random routing with the same N, k and tokens is the floor sampling alone gives;
- specialisation: Jensen-Shannon divergence between domains' expert loads against the same
  measure between two halves of one domain (moe_routing.specialisation);
- the shared expert's share of the block's output: mean over tokens of
  |weight * shared(x)| / |block output|.

    python experiments/router_families.py [--windows 48] [--seed 0] [--quick] [--out FILE.png]
"""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import torch  # noqa: E402
from moe_routing import NOISE_FACTOR, domain_windows, routed, specialisation  # noqa: E402

import interp  # noqa: E402
from interp import scripts  # noqa: E402
from interp.analysis import experts as ex  # noqa: E402
from interp.errors import InterpError  # noqa: E402
from interp.files import save_figure  # noqa: E402

BASELINE = "tiny-moe"  # softmax top-k + auxiliary loss; --model is the sigmoid + bias one


def shared_hooks(hook_names, layers: list[int]) -> dict[int, tuple[str, str]]:
    """layer -> (shared expert's output hook, block output hook), where the bridge has both."""
    out = {}
    for layer in layers:
        for sub in ("shared_experts", "shared_expert"):
            name = f"blocks.{layer}.mlp.{sub}.hook_out"
            if name in hook_names:
                out[layer] = (name, f"blocks.{layer}.mlp.hook_out")
    return out


def shared_share(trace, hooks: dict[int, tuple[str, str]]) -> float:
    """Mean over tokens (pos > 0) and MoE layers of |weight * shared(x)| / |block output|."""
    shares = []
    for p in range(len(trace.records)):
        weights = trace.tensor("shared_weights", p)  # [layer pos shared]
        for i, layer in enumerate(trace.facts.moe_layers):
            if layer not in hooks:
                continue
            shared, block = (trace.tensor(name, p)[1:] for name in hooks[layer])
            part = weights[i, 1:, :1] * shared
            shares.append((part.norm(dim=-1) / block.norm(dim=-1)).mean().item())
    return float(np.mean(shares)) if shares else float("nan")


def chance_max_vio(n_exp: int, k: int, tokens: int, seed: int, draws: int = 20) -> float:
    """MaxVio of a router that picks k distinct experts uniformly at random for each of
    `tokens` tokens (mean over `draws`): the imbalance sampling alone gives at this size."""
    gen = torch.Generator().manual_seed(seed)
    vio = []
    for _ in range(draws):
        picks = torch.rand(tokens, n_exp, generator=gen).topk(k, dim=-1).indices
        load = torch.bincount(picks.reshape(-1), minlength=n_exp).double()
        vio.append(float(load.max() / load.mean() - 1))
    return float(np.mean(vio))


def measure(model, name: str, windows: int, seed: int) -> tuple[dict, pd.DataFrame]:
    """One model: its summary row, and its per-layer expert loads (for the figure)."""
    if model.tokenizer is None:
        raise InterpError(f"{name} has no tokenizer")
    by_domain = domain_windows(model.tokenizer, windows, seed)
    ids = torch.cat(list(by_domain.values()))
    labels = dict(enumerate(d for d, w in by_domain.items() for _ in range(len(w))))
    names = dict.fromkeys(model.hook_dict)
    probe = interp.trace(model, ids[:1], capture=("routing",))
    if not probe.facts.moe_layers:
        raise InterpError(f"{name} has no MoE layers")
    hooks = shared_hooks(names, probe.facts.moe_layers)
    raw = [h for pair in hooks.values() for h in pair]
    trace = interp.trace(model, ids, capture=("routing", *raw))
    facts, routing = trace.facts, routed(trace)
    probs = trace.router_probs
    per_layer = ex.balance(routing, probs)
    spec = specialisation(routing, labels)
    load = ex.expert_load(routing, probs)
    row = {
        "model": name,
        "router": facts.router,
        "experts": facts.n_experts,
        "top_k": facts.top_k,
        "shared": facts.n_shared,
        "tokens": int(per_layer.tokens.iloc[0]),
        "balance": per_layer.balance.mean(),
        "max_vio": per_layer.max_vio.mean(),
        "max_vio_worst": per_layer.max_vio.max(),
        "max_vio_chance": chance_max_vio(
            facts.n_experts, facts.top_k, len(routing.drop_duplicates(["prompt", "pos"])), seed
        ),
        "dead": int(per_layer.dead.sum()),
        "spec_ratio_max": spec.ratio.max(),
        "spec_above": f"{int((spec.ratio > NOISE_FACTOR).sum())}/{len(spec)}",
        "shared_share": shared_share(trace, hooks),
    }
    return row, load.assign(model=name)


def plot(loads: pd.DataFrame, out) -> None:
    fig, axes = plt.subplots(1, loads.model.nunique(), figsize=(10, 3.5), squeeze=False)
    for ax, (name, g) in zip(axes[0], loads.groupby("model", sort=False)):
        for layer, gl in g.groupby("layer"):
            f = np.sort(gl.load.to_numpy())[::-1] * len(gl)
            ax.plot(np.arange(len(f)) / len(f), f, label=f"layer {layer}")
        ax.axhline(1, color="k", ls="--", lw=1)
        ax.set(title=name, xlabel="experts, busiest first (fraction)", ylabel="load / mean load")
        ax.legend(fontsize=7)
    fig.tight_layout()
    save_figure(fig, out)


def verdicts(table: pd.DataFrame) -> list[str]:
    soft, sig = (table.set_index("router").loc[r] for r in ("softmax_topk", "sigmoid_group"))
    # MaxVio grows with N at a fixed token count: compare each to random routing of its size.
    sig_excess, soft_excess = (m.max_vio / m.max_vio_chance for m in (sig, soft))
    balanced = sig_excess <= soft_excess and sig.dead <= soft.dead
    return [
        f"bias instead of an auxiliary loss balances at least as well: {balanced} "
        f"(MaxVio {sig.max_vio:.2f} = {sig_excess:.1f}x random routing's vs {soft.max_vio:.2f} = "
        f"{soft_excess:.1f}x; dead experts {sig.dead} vs {soft.dead})",
        f"experts specialise by domain with the sigmoid router: {sig.spec_ratio_max > NOISE_FACTOR}"
        f" (JS up to {sig.spec_ratio_max:.1f}x split-half noise; softmax: "
        f"{soft.spec_ratio_max:.1f}x)",
        f"one shared expert, always on: its weight is 1 for every token by construction; it "
        f"carries {sig.shared_share:.0%} of the block's output norm on average",
        f"not tested here: the seed's scale (384 experts, top-8, 61 layers); this model has "
        f"{sig.experts} experts, top-{sig.top_k}",
    ]


def main(argv: list[str] | None = None) -> pd.DataFrame:
    parser = scripts.parser(__doc__, "router_families", model="tiny-deepseek",
                            seed_help="picks the windows")  # fmt: skip
    scripts.add_windows(parser, "64-token windows per domain")
    args = parser.parse_args(argv)
    scripts.check_windows(args)
    model = scripts.start(args, argv)
    rows, loads = [], []
    for name, m in [(BASELINE, interp.load(BASELINE)), (args.model, model)]:
        row, load = measure(m, name, args.windows, args.seed)
        rows.append(row)
        loads.append(load)
    table = pd.DataFrame(rows)
    with pd.option_context("display.width", 200, "display.max_columns", 30):
        print(table.to_string(index=False, float_format="{:.3f}".format))
    if set(table.router) >= {"softmax_topk", "sigmoid_group"}:
        print("\n" + "\n".join(verdicts(table)))
    plot(pd.concat(loads), args.out)
    print(f"figure: {args.out}")
    return table


if __name__ == "__main__":
    scripts.run_script(main)
