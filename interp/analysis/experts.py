"""Expert utilisation: how a mixture-of-experts model spreads tokens over its experts.

Everything reads a long-form routing frame: the trace's sparse `routing` (one row per prompt,
pos, layer and chosen expert, plus shared experts flagged `shared`; a token's router
`entropy`) or a dense one (`routing_dense`, `interp.trace.frames.routing_rows`: every expert
for every token, with `prob` and `selected`). Shared experts
are always on and kept out of every load metric. P_i needs every expert's probability:
from a dense frame, or from the trace's `router_probs` frame passed as `probs`.

Notation used below, per layer: T routed tokens, N experts, k experts per token,
f_i = share of the T*k top-k assignments that went to expert i (sums to 1),
P_i = mean router probability of expert i (sums to 1).
Entropies are in nats except where a docstring says normalised; JS divergence is in bits.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence

import numpy as np
import pandas as pd
import torch

from interp.errors import InterpError
from interp.vocab import long_frame

TOKEN = ["prompt", "pos"]


def _routed(routing: pd.DataFrame) -> pd.DataFrame:
    """Rows of routed (not shared) experts."""
    return routing[~routing["shared"]] if "shared" in routing else routing


def _top_k(routing: pd.DataFrame) -> int:
    """k per token, read off the frame itself."""
    routed = _routed(routing)
    first = routed[routed["layer"] == routed["layer"].iloc[0]]
    return int(first["selected"].sum() // len(first.drop_duplicates(TOKEN)))


def _normalised_entropy(p: np.ndarray) -> float:
    """Entropy over log(len(p)): dead experts (p = 0) count towards the maximum."""
    nz = p[p > 0]
    return float(-(nz * np.log(nz)).sum() / np.log(p.size)) if p.size > 1 else 0.0


def expert_load(routing: pd.DataFrame, probs: pd.DataFrame | None = None) -> pd.DataFrame:
    """Per layer and routed expert: count (tokens routed there), load f_i and mean router
    prob P_i. `probs`: the trace's router_probs frame (per prompt, layer, expert: tokens,
    prob); without it P_i comes from a dense frame, or is NaN for a sparse one."""
    routed = _routed(routing)
    count = routed[routed["selected"]].groupby(["layer", "expert"]).size()
    if probs is not None:
        mass = probs.assign(mass=probs["prob"] * probs["tokens"]).groupby(["layer", "expert"])
        prob = mass["mass"].sum() / mass["tokens"].sum()
    elif "prob" in routed:
        prob = routed.groupby(["layer", "expert"])["prob"].mean()
    else:  # sparse, no probs: every expert up to the highest seen, P unknown
        top = routed.groupby("layer")["expert"].max()
        index = pd.MultiIndex.from_tuples(
            [(layer, e) for layer, n in top.items() for e in range(n + 1)], names=count.index.names
        )
        prob = pd.Series(np.nan, index=index)
    out = pd.DataFrame({"prob": prob})
    out["count"] = count.reindex(out.index, fill_value=0)
    out["load"] = out["count"] / out.groupby("layer")["count"].transform("sum")
    return out.reset_index()[["layer", "expert", "count", "load", "prob"]]


def routing_entropy(routing: pd.DataFrame) -> pd.DataFrame:
    """Per token and layer: entropy (nats) of the router distribution over all experts."""
    keys = [*TOKEN, "token", "layer"]
    if "entropy" in routing:  # sparse: the trace recorded it per token
        return routing.drop_duplicates(keys)[[*keys, "entropy"]].reset_index(drop=True)
    routed = _routed(routing)
    plogp = routed["prob"] * np.log(routed["prob"].clip(lower=1e-30))
    out = routed.assign(entropy=-plogp).groupby(keys, sort=False)
    return out["entropy"].sum().reset_index()


def balance(routing: pd.DataFrame, probs: pd.DataFrame | None = None) -> pd.DataFrame:
    """Per layer: tokens, balance N*sum f_i P_i, normalised utilisation entropy of f,
    max_vio (max load - mean load) / mean load, cv (std/mean of f), dead (experts never
    selected), routing_entropy (mean per-token router entropy, nats). Shared experts are
    left out. `probs`: see `expert_load`. With a `router` column (the routing frame's), also
    load_fixed_by: "token table" for hash-routed layers (DeepSeek-V4: which experts a token
    uses is a fixed function of its id, so the load follows the text's token counts, not the
    learned gate), "router" otherwise.

    Uniform routing gives balance 1, entropy 1, max_vio 0, cv 0.
    """
    top_k = _top_k(routing)
    load = expert_load(routing, probs)
    ent = routing_entropy(routing).groupby("layer")["entropy"].mean()
    rows = []
    for layer, g in load.groupby("layer"):
        metrics = balance_metrics(g["count"].to_numpy(), g["prob"].to_numpy(), top_k)
        rows.append({"layer": layer, **metrics, "routing_entropy": float(ent[layer])})
    out = pd.DataFrame(rows)
    if "router" in routing.columns and len(out):
        family = routing.groupby("layer")["router"].first()
        out["load_fixed_by"] = np.where(family[out.layer] == "hash", "token table", "router")
    return out


def balance_metrics(count: np.ndarray, prob: np.ndarray, top_k: int) -> dict:
    """The `balance` columns of one layer from its per-expert counts and mean router probs
    (the one formula behind the frame analysis and the corpus survey)."""
    n_exp = len(count)
    f = count / count.sum()
    return {
        "tokens": int(count.sum() // top_k),
        "balance": n_exp * float((f * prob).sum()),
        "entropy": _normalised_entropy(f),
        "max_vio": n_exp * float(f.max()) - 1.0,
        "cv": float(f.std() / f.mean()),
        "dead": int((count == 0).sum()),
    }


def balance_overall(routing: pd.DataFrame, probs: pd.DataFrame | None = None) -> pd.DataFrame:
    """One row: each per-layer balance metric averaged over layers; dead experts summed."""
    per_layer = balance(routing, probs).drop(
        columns=["layer", "tokens", "load_fixed_by"], errors="ignore"
    )
    row = per_layer.mean().to_dict()
    row["dead"] = int(per_layer["dead"].sum())
    return pd.DataFrame([row])


def _indicator(routing: pd.DataFrame, layer: int) -> pd.DataFrame:
    """Token x expert 0/1 matrix of top-k selections at one layer (rows: prompt, pos)."""
    routed = _routed(routing)
    rows = routed[routed["layer"] == layer].astype({"selected": float})
    return rows.pivot_table(index=TOKEN, columns="expert", values="selected", aggfunc="max")


def coactivation(routing: pd.DataFrame) -> pd.DataFrame:
    """Per layer and expert pair: rate = share of tokens routed to both expert and partner,
    expected = the product of their selection rates (independence). Diagonal: selection rate."""
    frames = []
    for layer in sorted(routing["layer"].unique()):
        table = _indicator(routing, layer).fillna(0.0)
        m = table.to_numpy()
        rate = m.T @ m / len(m)
        sel = np.diag(rate)
        ids = table.columns.to_numpy()  # a sparse frame lists only experts that were chosen
        pairs = long_frame(rate, "expert partner", "rate")
        pairs["expert"], pairs["partner"] = ids[pairs["expert"]], ids[pairs["partner"]]
        pairs.insert(0, "layer", layer)
        frames.append(pairs.assign(expected=np.outer(sel, sel).ravel()))
    return pd.concat(frames, ignore_index=True)


def _selections(routing: pd.DataFrame) -> pd.DataFrame:
    routed = _routed(routing)
    return routed.loc[routed["selected"], [*TOKEN, "token", "layer", "expert"]]


def layer_transitions(routing: pd.DataFrame) -> pd.DataFrame:
    """P(expert at layer+1 | expert at layer): every (e at l, e' at l+1) pair of one token's
    top-k sets counts once, so each token contributes k*k pairs."""
    sel = _selections(routing)
    nxt = sel.assign(layer=sel["layer"] - 1).rename(columns={"expert": "next_expert"})
    pairs = sel.merge(nxt[[*TOKEN, "layer", "next_expert"]], on=[*TOKEN, "layer"])
    counts = pairs.groupby(["layer", "expert", "next_expert"]).size().rename("count")
    out = counts.reset_index()
    out["prob"] = out["count"] / out.groupby(["layer", "expert"])["count"].transform("sum")
    return out


def transition_information(routing: pd.DataFrame) -> pd.DataFrame:
    """Per layer l: mutual information (nats) between the expert at l and at l+1 over the
    transition pairs, and normalised_mi = MI / min(H_l, H_l+1). 0: the next layer's choice
    ignores this one's. Plug-in estimate, biased upward on few tokens."""
    rows = []
    for layer, g in layer_transitions(routing).groupby("layer"):
        joint = g.pivot_table(index="expert", columns="next_expert", values="count", fill_value=0)
        pj = joint.to_numpy() / joint.to_numpy().sum()
        pa, pb = pj.sum(1, keepdims=True), pj.sum(0, keepdims=True)
        nz = pj > 0
        mi = float((pj[nz] * np.log(pj[nz] / (pa @ pb)[nz])).sum())
        h = min(-(x[x > 0] * np.log(x[x > 0])).sum() for x in (pa, pb))
        rows.append({"layer": layer, "mutual_information": mi, "normalised_mi": mi / h})
    return pd.DataFrame(rows)


def temporal_locality(routing: pd.DataFrame) -> pd.DataFrame:
    """Per layer: overlap = mean |S_t & S_t+1| / k of consecutive tokens' top-k sets in a
    prompt, chance = k/N (two independent uniform k-sets), and their ratio."""
    n_exp, top_k = int(_routed(routing)["expert"].max()) + 1, _top_k(routing)
    sel = _selections(routing)
    nxt = sel.assign(pos=sel["pos"] - 1)[[*TOKEN, "layer", "expert"]]
    shared = sel.merge(nxt, on=[*TOKEN, "layer", "expert"]).groupby("layer").size()
    # Consecutive pairs: every token that has a successor within its prompt.
    last = routing.groupby("prompt")["pos"].transform("max")
    pairs = routing[(routing["pos"] < last)].drop_duplicates([*TOKEN, "layer"])
    n_pairs = pairs.groupby("layer").size()
    overlap = shared.reindex(n_pairs.index, fill_value=0) / (n_pairs * top_k)
    out = pd.DataFrame({"overlap": overlap, "chance": top_k / n_exp}).reset_index()
    out["ratio"] = out["overlap"] / out["chance"]
    return out


def js_divergence(p: np.ndarray, q: np.ndarray) -> float:
    """Jensen-Shannon divergence (bits, in [0, 1]) between two distributions (normalised here)."""
    p = np.asarray(p, dtype=float) / np.sum(p)
    q = np.asarray(q, dtype=float) / np.sum(q)
    m = (p + q) / 2

    def kl(a: np.ndarray) -> float:
        nz = a > 0
        return float((a[nz] * np.log2(a[nz] / m[nz])).sum())

    return 0.5 * kl(p) + 0.5 * kl(q)


def domain_load(routing: pd.DataFrame, domains: Mapping) -> pd.DataFrame:
    """Per layer, domain and expert: load (share of the domain's top-k assignments) and count.
    `domains` maps each prompt to its domain label; prompts not in it are left out."""
    routed = _routed(routing)
    labelled = routed[routed["prompt"].isin(domains.keys())]
    labelled = labelled.assign(domain=labelled["prompt"].map(domains))
    counts = labelled.groupby(["layer", "domain", "expert"])["selected"].sum().rename("count")
    out = counts.reset_index()
    out["load"] = out["count"] / out.groupby(["layer", "domain"])["count"].transform("sum")
    return out


def per_expert(
    routing: pd.DataFrame, domains: Mapping, n_experts: int | None = None
) -> pd.DataFrame:
    """Per layer, expert and domain (each prompt's label in `domains`, and "all"): shared
    (always on), count (tokens that used the expert), load (share of the domain's routed
    assignments; NaN for a shared expert, which is outside the load) and weight (mean weight
    the expert's output was mixed with when used). `n_experts`: list never-chosen routed
    experts too (count 0)."""
    sel = routing[routing["selected"] & routing["prompt"].isin(domains.keys())]
    sel = sel.assign(domain=sel["prompt"].map(domains))
    if "shared" not in sel:
        sel = sel.assign(shared=False)
    sel = pd.concat([sel, sel.assign(domain="all")], ignore_index=True)
    keys = ["layer", "expert", "shared", "domain"]
    out = sel.groupby(keys).agg(count=("weight", "size"), weight=("weight", "mean"))
    if n_experts is not None:
        layers, names = sel["layer"].unique(), sel["domain"].unique()
        full = pd.MultiIndex.from_product(
            [layers, range(n_experts), [False], names], names=keys
        ).union(out.index)
        out = out.reindex(full).fillna({"count": 0})
    out = out.reset_index()
    routed = ~out["shared"]
    total = out[routed].groupby(["layer", "domain"])["count"].transform("sum")
    out["load"] = np.nan
    out.loc[routed, "load"] = out.loc[routed, "count"] / total
    out["count"] = out["count"].astype(int)
    return out[["layer", "expert", "shared", "domain", "count", "load", "weight"]]


def domain_divergence(routing: pd.DataFrame, domains: Mapping) -> pd.DataFrame:
    """Per layer and pair of domains: JS divergence (bits) between their expert loads."""
    loads = domain_load(routing, domains)
    rows = []
    for layer, g in loads.groupby("layer"):
        table = g.pivot_table(index="domain", columns="expert", values="load", fill_value=0)
        names = list(table.index)
        for i, a in enumerate(names):
            for b in names[i + 1 :]:
                js = js_divergence(table.loc[a].to_numpy(), table.loc[b].to_numpy())
                rows.append({"layer": layer, "domain": a, "other": b, "js": js})
    return pd.DataFrame(rows)


def vocabulary_specialisation(
    routing: pd.DataFrame, top: int = 10, min_count: int = 3
) -> pd.DataFrame:
    """Per layer and expert, its `top` most frequent tokens: count (times routed there) and
    seen (occurrences of the token) and share = count / seen (1: it always goes there).
    Tokens seen fewer than `min_count` times are skipped as noise."""
    sel = _selections(routing)
    seen = routing.drop_duplicates([*TOKEN, "layer"]).groupby(["layer", "token"]).size()
    counts = sel.groupby(["layer", "expert", "token"]).size().rename("count").reset_index()
    counts = counts.merge(seen.rename("seen").reset_index(), on=["layer", "token"])
    counts = counts[counts["seen"] >= min_count].assign(share=lambda d: d["count"] / d["seen"])
    counts = counts.sort_values(["layer", "expert", "count", "share"], ascending=[1, 1, 0, 0])
    counts["rank"] = counts.groupby(["layer", "expert"]).cumcount()
    return counts[counts["rank"] < top].reset_index(drop=True)


HookFn = Callable[[torch.Tensor, object], torch.Tensor | None]


def expert_hooks(
    layers: Sequence[int],
    expert: int,
    mode: str = "forbid",
    positions: Sequence[int] | None = None,
) -> list[tuple[str, HookFn]]:
    """TL-style forward hooks that force or forbid `expert` at `layers` (and `positions`,
    negative counting from the end; None = all) on a TransformerBridge MoE model.

    The bridge's router fires ``gate.hook_out`` (logits [batch*T, N]) and then
    ``gate.hook_expert_weights`` ([batch*T, N], zero off the top-k); an edit of the latter
    re-derives the top-k from the edited tensor and uses its values as the expert weights.
    So: remember the router softmax from the logits, then hand back weights that are the
    unrenormalised softmax at the new selection -- forbid: the best k experts other than
    `expert`; force: `expert` plus the best k-1 others. Untargeted tokens are left alone.
    """
    if mode not in ("force", "forbid"):
        raise InterpError(f"mode must be 'force' or 'forbid', not {mode!r}")
    state: dict[str, torch.Tensor | int] = {}

    def remember_length(x: torch.Tensor, hook: object) -> None:
        state["seq_len"] = x.shape[-2]  # mlp input is [batch, T, d_model]; the router's is flat

    def remember_probs(logits: torch.Tensor, hook: object) -> None:
        state["probs"] = logits.float().softmax(-1)

    def edit_weights(weights: torch.Tensor, hook: object) -> torch.Tensor:
        probs, seq_len = state["probs"], state["seq_len"]
        top_k = int((weights != 0).sum(-1).max())
        rows = torch.ones(len(weights), dtype=torch.bool, device=weights.device)
        if positions is not None:
            pos = torch.arange(len(weights), device=weights.device) % seq_len
            wanted = torch.tensor([p % seq_len for p in positions], device=weights.device)
            rows = torch.isin(pos, wanted)
        masked = probs.clone()
        masked[:, expert] = -1.0  # out of the running (probabilities are >= 0)
        if mode == "forbid":
            chosen = masked.topk(top_k, dim=-1).indices
        else:
            others = masked.topk(top_k - 1, dim=-1).indices
            chosen = torch.cat([torch.full_like(others[:, :1], expert), others], dim=-1)
        # The smallest normal float keeps an underflowed forced expert inside the top-k.
        values = probs.gather(-1, chosen).clamp_min(torch.finfo(torch.float32).tiny)
        new = torch.zeros_like(probs).scatter_(-1, chosen, values).to(weights.dtype)
        return torch.where(rows[:, None], new, weights)

    hooks: list[tuple[str, HookFn]] = []
    for layer in layers:
        hooks += [
            (f"blocks.{layer}.mlp.hook_in", remember_length),
            (f"blocks.{layer}.mlp.gate.hook_out", remember_probs),
            (f"blocks.{layer}.mlp.gate.hook_expert_weights", edit_weights),
        ]
    return hooks


def intervention_effect(logits_before: torch.Tensor, logits_after: torch.Tensor) -> pd.DataFrame:
    """Per prompt (batch row) and pos: kl = KL(before || after) in nats of the next-token
    distributions, the top-1 token ids before and after, and whether it changed."""
    before = logits_before.detach().float().reshape(-1, *logits_before.shape[-2:])
    after = logits_after.detach().float().reshape(-1, *logits_after.shape[-2:])
    lp, lq = before.log_softmax(-1), after.log_softmax(-1)
    kl = (lp.exp() * (lp - lq)).sum(-1)
    batch, n_tok = kl.shape
    top_b, top_a = before.argmax(-1), after.argmax(-1)
    return pd.DataFrame(
        {
            "prompt": np.repeat(np.arange(batch), n_tok),
            "pos": np.tile(np.arange(n_tok), batch),
            "kl": kl.numpy().ravel(),
            "top1_before": top_b.numpy().ravel(),
            "top1_after": top_a.numpy().ravel(),
            "changed": (top_b != top_a).numpy().ravel(),
        }
    )
