"""Captured tensors -> tidy long-form frames (one row per prompt/layer/head/position/...).

Column names are shared across the package so frames join: prompt, pos, token, layer, head,
kv_head, expert, stage, step, query, key; values norm, weight, prob, entropy, mass.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import torch

from interp.capture import Capture
from interp.sampling import TOP_CANDIDATES, entropy

STAGES = ["resid_pre", "attn_out", "resid_mid", "mlp_out", "resid_post"]
# Capture fields kept per MoE layer and token (see interp.capture.router_hooks).
ROUTER_TENSORS = (
    "router_logits", "router_dist", "router_scores", "router_choice",
    "router_experts", "router_weights", "router_entropy", "shared_weights",
)  # fmt: skip


def slice_capture(cap: Capture, b: int, n: int, model, keys: int | None = None, release=False):
    """Prompt `b`'s tensors: `n` query positions and `keys` key positions (default `n`; a
    KV-cache step has one query and every earlier key).

    `release`: this is the capture's last reader, so each layer's tensor is dropped once copied
    (a long prompt's capture then never exists twice in memory).
    """
    keys = keys or n
    layers = range(model.cfg.n_layers)

    def stack(store: dict, cut) -> torch.Tensor:
        """Layer-major stack of `cut(tensor)`; hooks fire, and so fill `store`, in layer order."""
        out, count = None, len(store)
        for j, layer in enumerate(list(store)):
            part = cut(store.pop(layer) if release else store[layer])
            if out is None:
                out = part.new_empty((count, *part.shape))
            out[j] = part
        return out

    out: dict[str, torch.Tensor] = {}
    if cap.resid_pre:
        final = cap.resid_post[layers[-1]][b, :n]
        pre = stack(cap.resid_pre, lambda t: t[b, :n])
        out["resid"] = torch.cat([pre, final[None]])
        out["attn_out"] = stack(cap.attn_out, lambda t: t[b, :n])
        out["mlp_out"] = (
            stack(cap.mlp_out, lambda t: t[b, :n]) if cap.mlp_out else torch.zeros_like(pre)
        )
        out["z"] = stack(cap.z, lambda t: t[b, :n])
    if cap.key_mass:
        out["key_mass"] = stack(cap.key_mass, lambda t: t[b, :, :keys])
        out["query_entropy"] = stack(cap.query_entropy, lambda t: t[b, :, :n])
        out["top_weights"] = torch.stack([cap.top_sources[i][0][b, :, :n] for i in layers])
        out["top_keys"] = torch.stack([cap.top_sources[i][1][b, :, :n] for i in layers])
        if cap.query_rows:
            out["query_rows"] = stack(cap.query_rows, lambda t: t[b, :, :, :keys])
        if cap.patterns:
            out["patterns"] = stack(cap.patterns, lambda t: t[b, :, :n, :keys])
    for name in ROUTER_TENSORS:
        store = getattr(cap, name)
        if store:
            out[name] = stack(store, lambda t: t[b, :n])
    return out


def _pad_keys(t: torch.Tensor, total: int) -> torch.Tensor:
    return torch.nn.functional.pad(t, (0, total - t.shape[-1]))


def concat_steps(parts: list[dict[str, torch.Tensor]], total: int) -> dict[str, torch.Tensor]:
    """Join the prompt's capture with one capture per generated token (KV-cache steps)."""
    out: dict[str, torch.Tensor] = {}
    first = parts[0]
    by_position = {"resid": 1, "attn_out": 1, "mlp_out": 1, "z": 1,
                   "query_entropy": 2, "top_weights": 2, "top_keys": 2}  # fmt: skip
    by_position.update(dict.fromkeys(ROUTER_TENSORS, 1))
    for name, axis in by_position.items():
        if name in first:
            out[name] = torch.cat([p[name] for p in parts], dim=axis)
    if "key_mass" in first:
        out["key_mass"] = sum(_pad_keys(p["key_mass"], total) for p in parts)
        out["query_rows"] = torch.cat([_pad_keys(p["query_rows"], total) for p in parts], dim=2)
    if "patterns" in first:
        n0 = first["patterns"].shape[-1]
        full = _pad_keys(first["patterns"], total)
        rows = [_pad_keys(p["patterns"], total) for p in parts[1:]]
        out["patterns"] = torch.cat([full] + rows, dim=2)
        assert out["patterns"].shape[2] == total and n0 + len(rows) == total
    return out


def sampling_rows(step, pos, logits, sampling, token, model) -> list[dict]:
    """The top candidates of one generation step (plus the chosen token if it ranked lower)."""
    probs = logits.float().softmax(-1)
    sampled = sampling.distribution(logits)
    top = probs.topk(TOP_CANDIDATES).indices.tolist()
    if token not in top:
        top.append(token)
    ent = float(entropy(logits))
    tok = getattr(model, "tokenizer", None)
    return [
        {
            "step": step,
            "pos": pos,
            "rank": int((probs > probs[t]).sum()),
            "token_id": t,
            "token": tok.decode([t]) if tok is not None else str(t),
            "prob": float(probs[t]),
            "sample_prob": float(sampled[t]),
            "chosen": t == token,
            "entropy": ent,
        }  # fmt: skip
        for t in top
    ]


def _texts(trace, ids: torch.Tensor) -> list[str]:
    tok = trace.tokenizer
    if tok is None:
        return [str(i) for i in ids.tolist()]
    return [tok.decode([i]) for i in ids.tolist()]


def _grid(**axes) -> pd.DataFrame:
    """Cartesian product of named integer ranges, in C order (last axis fastest)."""
    names = list(axes)
    mesh = np.meshgrid(*[np.arange(n) for n in axes.values()], indexing="ij")
    return pd.DataFrame({name: m.ravel() for name, m in zip(names, mesh)})


def _kv_head(trace, heads: np.ndarray) -> np.ndarray:
    cfg = trace.meta["cfg"]
    return heads // (cfg["n_heads"] // cfg["n_key_value_heads"])


def tokens_frame(trace) -> pd.DataFrame:
    out = []
    for p, r in enumerate(trace.records):
        out.append(pd.DataFrame({
            "prompt": p, "pos": np.arange(len(r.ids)), "token_id": r.ids.numpy(),
            "token": _texts(trace, r.ids), "generated": np.arange(len(r.ids)) >= r.n_prompt,
            "logprob": r.logprob.numpy(), "entropy": r.entropy.numpy(),
        }))  # fmt: skip
    return pd.concat(out, ignore_index=True)


def residual_frame(trace) -> pd.DataFrame:
    out = []
    for p, r in enumerate(trace.records):
        if "resid" not in r.tensors:
            continue
        resid, attn, mlp = r.tensors["resid"], r.tensors["attn_out"], r.tensors["mlp_out"]
        stacks = [resid[:-1], attn, resid[:-1] + attn, mlp, resid[1:]]
        norms = torch.stack([s.norm(dim=-1) for s in stacks], dim=1)  # [L, stage, T]
        grid = _grid(layer=norms.shape[0], stage=len(STAGES), pos=norms.shape[2])
        grid["stage"] = np.array(STAGES)[grid["stage"]]
        grid["norm"] = norms.reshape(-1).numpy()
        grid.insert(0, "prompt", p)
        grid["token"] = np.array(_texts(trace, r.ids), dtype=object)[grid["pos"]]
        out.append(grid)
    return _concat(out, ["prompt", "pos", "token", "layer", "stage", "norm"])


def _per_head(trace, name: str, value: str, axis_name: str) -> pd.DataFrame:
    out = []
    for p, r in enumerate(trace.records):
        if name not in r.tensors:
            continue
        t = r.tensors[name]  # [L, H, X]
        grid = _grid(layer=t.shape[0], head=t.shape[1], **{axis_name: t.shape[2]})
        grid[value] = t.reshape(-1).numpy()
        grid.insert(0, "prompt", p)
        grid.insert(3, "kv_head", _kv_head(trace, grid["head"].to_numpy()))
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
        t, queries = picked  # [L, H, nq, keys]
        grid = _grid(layer=t.shape[0], head=t.shape[1], query=t.shape[2], key=t.shape[3])
        grid["query"] = np.asarray(queries)[grid["query"]]
        grid["weight"] = t.reshape(-1).numpy()
        grid = grid[grid["key"] <= grid["query"]]
        grid.insert(0, "prompt", p)
        grid.insert(3, "kv_head", _kv_head(trace, grid["head"].to_numpy()))
        out.append(grid)
    return _concat(out, ["prompt", "layer", "head", "kv_head", "query", "key", "weight"])


def attention_frame(trace) -> pd.DataFrame:
    """Every attention weight (only when full patterns were kept)."""

    def rows(r):
        if "patterns" not in r.tensors:
            return None
        return r.tensors["patterns"], range(r.tensors["patterns"].shape[2])

    return _rows_frame(trace, rows)


def query_attention_frame(trace) -> pd.DataFrame:
    """Full attention rows of the query positions (last prompt token, generated tokens)."""

    def rows(r):
        return (r.tensors["query_rows"], r.query_positions) if "query_rows" in r.tensors else None

    return _rows_frame(trace, rows)


def _moe_grid(trace, r, **axes) -> pd.DataFrame:
    grid = _grid(**axes)
    grid["layer"] = np.asarray(trace.meta["cfg"]["moe_layers"])[grid["layer"]]
    grid["token"] = np.array(_texts(trace, r.ids), dtype=object)[grid["pos"]]
    return grid


ROUTING_COLUMNS = ["prompt", "pos", "token", "layer", "expert", "shared", "selected", "rank",
                   "weight", "entropy"]  # fmt: skip


def routing_frame(trace) -> pd.DataFrame:
    """Sparse: per token and MoE layer, its chosen experts (rank 0 = best) and then its shared
    experts (shared, numbered from E, rank k, k+1...), with the weight the block mixes each
    with and the token's router entropy (nats of softmax p, or of s / sum(s) for sigmoid
    routers). Every row is selected."""
    out = []
    for p, r in enumerate(trace.records):
        if "router_experts" not in r.tensors:
            continue
        experts, weights = r.tensors["router_experts"], r.tensors["router_weights"]
        shared = r.tensors["shared_weights"]  # [Lm, T, S]
        n_exp, k = trace.meta["cfg"]["n_experts"], experts.shape[-1]
        ids = torch.arange(n_exp, n_exp + shared.shape[-1]).expand_as(shared)
        experts, weights = torch.cat([experts, ids], -1), torch.cat([weights.float(), shared], -1)
        grid = _moe_grid(trace, r, layer=experts.shape[0], pos=experts.shape[1],
                         rank=experts.shape[2])  # fmt: skip
        grid["expert"] = experts.reshape(-1).numpy()
        grid["shared"] = grid["rank"] >= k
        grid["selected"] = True
        grid["weight"] = weights.reshape(-1).numpy()
        grid["entropy"] = r.tensors["router_entropy"][..., None].expand_as(experts).reshape(-1)
        grid.insert(0, "prompt", p)
        out.append(grid)
    return _concat(out, ROUTING_COLUMNS)


def routing_dense_frame(trace) -> pd.DataFrame:
    """Opt-in (capture "routing_dense"): every routed expert for every token. logit; score
    (what the router ranks by: softmax p, sigmoid s, or the logit); choice (score + bias,
    -inf in masked groups); prob (the scores as a distribution); selected, rank, weight."""
    out = []
    for p, r in enumerate(trace.records):
        if "router_choice" not in r.tensors:
            continue
        t = r.tensors
        choice = t["router_choice"]  # [Lm, T, E]
        rank = choice.argsort(dim=-1, descending=True, stable=True).argsort(-1)
        k = t["router_experts"].shape[-1]
        weight = torch.zeros_like(choice).scatter_(-1, t["router_experts"], t["router_weights"])
        grid = _moe_grid(trace, r, layer=choice.shape[0], pos=choice.shape[1],
                         expert=choice.shape[2])  # fmt: skip
        for name, v in [("logit", t["router_logits"]), ("score", t["router_scores"]),
                        ("choice", choice), ("prob", t["router_dist"]),
                        ("selected", rank < k), ("rank", rank), ("weight", weight)]:  # fmt: skip
            grid[name] = v.reshape(-1).numpy()
        grid.insert(0, "prompt", p)
        out.append(grid)
    cols = ["prompt", "pos", "token", "layer", "expert", "logit", "score", "choice", "prob",
            "selected", "rank", "weight"]  # fmt: skip
    return _concat(out, cols)


def router_probs_frame(trace) -> pd.DataFrame:
    """Per prompt, MoE layer and routed expert: tokens, and prob = the mean over the prompt's
    tokens of the router's scores as a distribution (P_i of the balance metric)."""
    out = []
    for p, r in enumerate(trace.records):
        if "router_dist" not in r.tensors:
            continue
        dist = r.tensors["router_dist"]  # [Lm, T, E]
        grid = _grid(layer=dist.shape[0], expert=dist.shape[2])
        grid["layer"] = np.asarray(trace.meta["cfg"]["moe_layers"])[grid["layer"]]
        grid["tokens"] = dist.shape[1]
        grid["prob"] = dist.mean(1).reshape(-1).numpy()
        grid.insert(0, "prompt", p)
        out.append(grid)
    return _concat(out, ["prompt", "layer", "expert", "tokens", "prob"])


def _records_frame(trace, attr: str) -> pd.DataFrame:
    rows = [{"prompt": p, **row} for p, r in enumerate(trace.records) for row in getattr(r, attr)]
    return pd.DataFrame(rows)


def shapes_frame(trace) -> pd.DataFrame:
    return pd.DataFrame(trace.meta.get("shapes", []), columns=["hook", "shape", "dims"])


def _concat(frames: list[pd.DataFrame], columns: list[str]) -> pd.DataFrame:
    return (
        pd.concat(frames, ignore_index=True)[columns] if frames else pd.DataFrame(columns=columns)
    )


BUILDERS = {
    "tokens": tokens_frame,
    "residual": residual_frame,
    "attention": attention_frame,
    "attention_summary": attention_summary_frame,
    "query_entropy": query_entropy_frame,
    "query_attention": query_attention_frame,
    "routing": routing_frame,
    "routing_dense": routing_dense_frame,
    "router_probs": router_probs_frame,
    "sampling": lambda trace: _records_frame(trace, "sampling"),
    "kv_cache": lambda trace: _records_frame(trace, "kv_cache"),
    "shapes": shapes_frame,
}
