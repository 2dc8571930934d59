"""Captured tensors -> tidy long-form frames (one row per prompt/layer/head/position/...).

Column names are shared across the package so frames join: prompt, pos, token, layer, head,
kv_head, expert, shared, stage, step, query, key; values norm, weight, prob, entropy, mass.
"""

from __future__ import annotations

import os

import numpy as np
import pandas as pd
import torch

from interp.errors import InterpError
from interp.features.frames import feature_error_frame, features_frame
from interp.text import token_texts
from interp.trace import streams, v4_attention
from interp.trace.hooks import stage_of
from interp.trace.routers import softmax_topk
from interp.vocab import long_frame

STAGES = ["resid_pre", "attn_out", "resid_mid", "mlp_out", "resid_post"]
ROW_BYTES = 80  # one attention-frame row: 7 columns of 8 bytes, plus pandas' overhead


def check_fits(n_bytes: float, what: str) -> None:
    """Refuse, in one line, what would not fit in the memory this machine has free."""
    try:
        free = os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError):  # not every platform says
        return
    if n_bytes > free:
        raise InterpError(
            f"{what} would take {n_bytes / 2**30:.1f} GiB; {free / 2**30:.1f} GiB is free"
        )


def _texts(trace, ids) -> np.ndarray:
    return np.array(token_texts(trace.tokenizer, ids), dtype=object)


def tokens_frame(trace) -> pd.DataFrame:
    out = []
    for p, r in enumerate(trace.records):
        out.append(pd.DataFrame({
            "prompt": p, "pos": np.arange(len(r.ids)), "token_id": r.ids.numpy(),
            "token": _texts(trace, r.ids), "generated": np.arange(len(r.ids)) >= r.n_prompt,
            "logprob": r.logprob.numpy(), "entropy": r.entropy.numpy(),
        }))  # fmt: skip
    return pd.concat(out, ignore_index=True)


def _layer_stages(tensors: dict, layer: int, kinds: tuple[str, ...]) -> list:
    """(stage, [pos d] tensor) of one layer: resid_pre, each sub-block's delta (resid_mid
    between two), resid_post. A hybrid layer with one sub-block has no resid_mid."""
    resid = tensors["resid"]
    out, running = [("resid_pre", resid[layer])], resid[layer]
    for i, kind in enumerate(kinds):
        if i:
            out.append(("resid_mid", running))
        delta = tensors[stage_of(kind)][layer]
        out.append((stage_of(kind), delta))
        running = running + delta
    return out + [("resid_post", resid[layer + 1])]


def _hybrid_norms(trace, r) -> pd.DataFrame:
    grids = []
    for layer, kinds in enumerate(trace.facts.layer_kinds):
        stages = _layer_stages(r.tensors, layer, kinds)
        grid = long_frame(torch.stack([t.norm(dim=-1) for _, t in stages]), "stage pos", "norm")
        grid["stage"] = np.array([name for name, _ in stages])[grid["stage"]]
        grid.insert(0, "layer", layer)
        grids.append(grid)
    return pd.concat(grids, ignore_index=True)


def _stream_norms(r) -> pd.DataFrame:
    """Several streams (mHC): every stage per stream; a sub-block's delta into stream s is
    post[s] * its output (interp.trace.streams)."""
    t = r.tensors
    resid, post = t["resid"], t["hc_post"]  # [layer+1 pos N d], [layer sub pos N]
    writes = [post[:, sub, ..., None] * t[name][:, :, None] for sub, name in
              enumerate(("attn_out", "mlp_out"))]  # fmt: skip
    stacks = [resid[:-1], writes[0], t["resid_mid"], writes[1], resid[1:]]
    norms = torch.stack([s.norm(dim=-1) for s in stacks], dim=1)
    grid = long_frame(norms, "layer stage pos stream", "norm")
    grid["stage"] = np.array(STAGES)[grid["stage"]]
    return grid


def residual_frame(trace) -> pd.DataFrame:
    """Per layer, the stream before it, what each sub-block writes, and the stream after it
    (STAGES; a hybrid's layers have only their own sub-blocks' stages, e.g. mamba_out)."""
    out = []
    for p, r in enumerate(trace.records):
        if "resid" not in r.tensors:
            continue
        if "hc_post" in r.tensors:
            grid = _stream_norms(r)
        elif "mamba_out" in r.tensors or any(len(k) != 2 for k in trace.facts.layer_kinds):
            grid = _hybrid_norms(trace, r)
        else:
            resid, attn, mlp = r.tensors["resid"], r.tensors["attn_out"], r.tensors["mlp_out"]
            stacks = [resid[:-1], attn, resid[:-1] + attn, mlp, resid[1:]]
            norms = torch.stack([s.norm(dim=-1) for s in stacks], dim=1)
            grid = long_frame(norms, "layer stage pos", "norm")
            grid["stage"] = np.array(STAGES)[grid["stage"]]
        grid.insert(0, "prompt", p)
        grid["token"] = _texts(trace, r.ids)[grid["pos"]]
        out.append(grid)
    stream = ["stream"] if trace.facts.n_streams > 1 else []
    return _concat(out, ["prompt", "pos", "token", "layer", "stage", *stream, "norm"])


def _per_head(trace, name: str, value: str, axis_name: str) -> pd.DataFrame:
    out = []
    for p, r in enumerate(trace.records):
        if name not in r.tensors:
            continue
        grid = long_frame(r.tensors[name], f"layer head {axis_name}", value)
        grid.insert(0, "prompt", p)
        grid.insert(3, "kv_head", trace.facts.kv_head(grid["head"].to_numpy()))
        out.append(grid)
    return _concat(out, ["prompt", "layer", "head", "kv_head", axis_name, value])


def attention_summary_frame(trace) -> pd.DataFrame:
    """Attention mass each key receives, summed over all queries (streaming-safe)."""
    return _per_head(trace, "key_mass", "mass", "key")


def query_entropy_frame(trace) -> pd.DataFrame:
    return _per_head(trace, "query_entropy", "entropy", "query")


def _rows_frame(trace, rows_of) -> pd.DataFrame:
    out = []
    for p, r in enumerate(trace.records):
        picked = rows_of(r)
        if picked is None:
            continue
        t, queries = picked  # [layer head query key]
        grid = long_frame(t, "layer head query key", "weight")
        grid["query"] = np.asarray(queries)[grid["query"]]
        grid = grid[grid["key"] <= grid["query"]]
        grid.insert(0, "prompt", p)
        grid.insert(3, "kv_head", trace.facts.kv_head(grid["head"].to_numpy()))
        out.append(grid)
    return _concat(out, ["prompt", "layer", "head", "kv_head", "query", "key", "weight"])


def attention_frame(trace) -> pd.DataFrame:
    """Every attention weight (only when full patterns were kept); refused when the frame, one
    row per (layer, head, query, key <= query), would not fit in free memory."""
    f = trace.facts
    cells = sum(
        len(r.ids) * (len(r.ids) + 1) // 2 for r in trace.records if "patterns" in r.tensors
    )
    split = any("compressed_patterns" in r.tensors for r in trace.records)  # rows by source
    check_fits(cells * f.n_layers * f.n_heads * ROW_BYTES * (2 if split else 1),
               "trace.attention (read trace.tensor('patterns') instead)")  # fmt: skip

    def rows(r, name="patterns"):
        if name not in r.tensors:
            return None
        return r.tensors[name], range(r.tensors[name].shape[2])

    frame = _rows_frame(trace, rows)
    if split:  # DeepSeek-V4 (interp.trace.v4_attention)
        compressed = _rows_frame(trace, lambda r: rows(r, "compressed_patterns"))
        return v4_attention.with_source(frame, compressed, f.layer_kinds)
    return frame


def query_attention_frame(trace) -> pd.DataFrame:
    """Full attention rows of the query positions (last prompt token, generated tokens)."""

    def rows(r):
        return (r.tensors["query_rows"], r.query_positions) if "query_rows" in r.tensors else None

    return _rows_frame(trace, rows)


DENSE_COLUMNS = ["prompt", "pos", "token", "layer", "expert", "logit", "score", "choice",
                 "prob", "selected", "rank", "weight"]  # fmt: skip


def _dense_rows(t: dict, tokens, layers, prompt: int) -> pd.DataFrame:
    """Dense rows from router tensors [layer pos expert] (choice, experts, weights, ...)."""
    choice = t["choice"]
    rank = choice.argsort(dim=-1, descending=True, stable=True).argsort(dim=-1)
    weight = torch.zeros_like(choice).scatter_(-1, t["experts"], t["weights"].float())
    grid = long_frame(t["logits"], "layer pos expert", "logit")
    grid["layer"] = np.asarray(layers)[grid["layer"]]
    grid["token"] = np.asarray(tokens, dtype=object)[grid["pos"]]
    for name, v in [("score", t["scores"]), ("choice", choice), ("prob", t["dist"]),
                    ("selected", rank < t["experts"].shape[-1]), ("rank", rank),
                    ("weight", weight)]:  # fmt: skip
        grid[name] = v.reshape(-1).numpy()
    grid["prompt"] = prompt
    return grid[DENSE_COLUMNS]


def routing_rows(
    router_logits: torch.Tensor,
    top_k: int,
    tokens,
    layers=None,
    renormalise_top_k: bool = False,
    prompt: int = 0,
) -> pd.DataFrame:
    """A dense routing frame from a softmax router's logits [layer pos expert].

    prob = score = choice: softmax over all experts; rank 0 = most likely; selected: in the
    top k; weight: what the expert's output was scaled by (0 unselected; renormalised to sum 1
    where the model does). `layers`: the layer number of each row (default 0, 1, ...).
    """
    n_layers, n_pos, n_exp = router_logits.shape
    d = softmax_topk(router_logits.reshape(-1, n_exp), top_k, renormalise_top_k)
    t = {name: getattr(d, name).reshape(n_layers, n_pos, -1)
         for name in ("logits", "scores", "choice", "experts", "weights", "dist")}  # fmt: skip
    return _dense_rows(t, tokens, range(n_layers) if layers is None else layers, prompt)


def routing_dense_frame(trace) -> pd.DataFrame:
    """Opt-in (capture "routing_dense"): every routed expert for every token. logit; score
    (what the router ranks by: softmax p, sigmoid s, or the logit); choice (score + bias,
    -inf in masked groups); prob (the scores as a distribution); selected, rank, weight."""
    out = []
    for p, r in enumerate(trace.records):
        if "router_choice" not in r.tensors:
            continue
        t = {name: r.tensors[f"router_{name}"]
             for name in ("logits", "scores", "choice", "experts", "weights", "dist")}  # fmt: skip
        out.append(_dense_rows(t, _texts(trace, r.ids), trace.facts.moe_layers, p))
    return _concat(out, DENSE_COLUMNS)


ROUTING_COLUMNS = ["prompt", "pos", "token", "layer", "router", "expert", "shared", "selected",
                   "rank", "weight", "entropy"]  # fmt: skip


def routing_frame(trace) -> pd.DataFrame:
    """Sparse: per token and MoE layer, its chosen experts (rank 0 = best) and then its shared
    experts (shared, numbered from E, ranks k, k+1...), with the weight the block mixes each
    with and the token's router entropy (nats of softmax p, or of s / sum(s) for sigmoid
    routers). Every row is selected."""
    facts, out = trace.facts, []
    for p, r in enumerate(trace.records):
        if "router_experts" not in r.tensors:
            continue
        experts, weights = r.tensors["router_experts"], r.tensors["router_weights"].float()
        shared = r.tensors["shared_weights"]  # [layer pos shared]
        ids = torch.arange(facts.n_experts, facts.n_experts + shared.shape[-1])
        experts = torch.cat([experts, ids.expand_as(shared)], -1)
        weights = torch.cat([weights, shared], -1)
        grid = long_frame(experts, "layer pos rank", "expert")
        families = facts.router_families or [facts.router] * len(facts.moe_layers)
        grid["router"] = np.asarray(families)[grid["layer"]]
        grid["layer"] = np.asarray(facts.moe_layers)[grid["layer"]]
        grid["token"] = _texts(trace, r.ids)[grid["pos"]]
        grid["shared"] = grid["rank"] >= facts.top_k
        grid["selected"] = True
        grid["weight"] = weights.reshape(-1).numpy()
        entropy = r.tensors["router_entropy"][..., None].expand_as(experts)
        grid["entropy"] = entropy.reshape(-1).numpy()
        grid["prompt"] = p
        out.append(grid)
    return _concat(out, ROUTING_COLUMNS)


def router_probs_frame(trace) -> pd.DataFrame:
    """Per prompt, MoE layer and routed expert: tokens, and prob = the mean over the prompt's
    tokens of the router's scores as a distribution (P_i of the balance metric)."""
    out = []
    for p, r in enumerate(trace.records):
        if "router_dist" not in r.tensors:
            continue
        dist = r.tensors["router_dist"]  # [layer pos expert]
        grid = long_frame(dist.mean(1), "layer expert", "prob")
        grid["layer"] = np.asarray(trace.facts.moe_layers)[grid["layer"]]
        grid["tokens"] = dist.shape[1]
        grid["prompt"] = p
        out.append(grid)
    return _concat(out, ["prompt", "layer", "expert", "tokens", "prob"])


def _records_frame(trace, attr: str) -> pd.DataFrame:
    rows = [{"prompt": p, **row} for p, r in enumerate(trace.records) for row in getattr(r, attr)]
    return pd.DataFrame(rows)


def hc_frame(trace) -> pd.DataFrame:
    """Several streams (mHC): per token, layer and sub-block, the hyper-connection's collapse
    (pre), expand (post) and mixing (comb) weights (interp.trace.streams.hc_rows)."""
    out = []
    for p, r in enumerate(trace.records):
        if "hc_comb" in r.tensors:
            grid = streams.hc_rows(r.tensors, _texts(trace, r.ids))
            grid.insert(0, "prompt", p)
            out.append(grid)
    return _concat(out, streams.HC_COLUMNS)


def shapes_frame(trace) -> pd.DataFrame:
    return pd.DataFrame(trace.meta.get("shapes", []), columns=["hook", "shape", "dims"])


def _concat(frames: list[pd.DataFrame], columns: list[str]) -> pd.DataFrame:
    return (
        pd.concat(frames, ignore_index=True)[columns] if frames else pd.DataFrame(columns=columns)
    )


BUILDERS = {
    "tokens": tokens_frame,
    "residual": residual_frame,
    "hc": hc_frame,
    "attention": attention_frame,
    "attention_summary": attention_summary_frame,
    "query_entropy": query_entropy_frame,
    "query_attention": query_attention_frame,
    "routing": routing_frame,
    "routing_dense": routing_dense_frame,
    "router_probs": router_probs_frame,
    "sampling": lambda trace: _records_frame(trace, "sampling"),
    "kv_cache": lambda trace: _records_frame(trace, "kv_cache"),
    "memory": lambda trace: _records_frame(trace, "memory"),
    "shapes": shapes_frame,
    "features": features_frame,
    "feature_error": feature_error_frame,
}
