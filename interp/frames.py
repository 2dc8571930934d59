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
    if cap.router_logits:
        out["router_logits"] = stack(cap.router_logits, lambda t: t[b, :n])
    return out


def _pad_keys(t: torch.Tensor, total: int) -> torch.Tensor:
    return torch.nn.functional.pad(t, (0, total - t.shape[-1]))


def concat_steps(parts: list[dict[str, torch.Tensor]], total: int) -> dict[str, torch.Tensor]:
    """Join the prompt's capture with one capture per generated token (KV-cache steps)."""
    out: dict[str, torch.Tensor] = {}
    first = parts[0]
    by_position = {"resid": 1, "attn_out": 1, "mlp_out": 1, "z": 1, "router_logits": 1,
                   "query_entropy": 2, "top_weights": 2, "top_keys": 2}  # fmt: skip
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


def routing_frame(trace) -> pd.DataFrame:
    cfg = trace.meta["cfg"]
    out = []
    for p, r in enumerate(trace.records):
        if "router_logits" not in r.tensors:
            continue
        logits = r.tensors["router_logits"].float()  # [Lm, T, E]
        probs = logits.softmax(-1)
        order = probs.argsort(-1, descending=True)
        rank = order.argsort(-1)
        selected = rank < cfg["top_k"]
        weight = probs * selected
        if cfg["renormalize_top_k"]:
            weight = weight / weight.sum(-1, keepdim=True)
        grid = _grid(layer=logits.shape[0], pos=logits.shape[1], expert=logits.shape[2])
        grid["layer"] = np.asarray(cfg["moe_layers"])[grid["layer"]]
        grid["token"] = np.array(_texts(trace, r.ids), dtype=object)[grid["pos"]]
        for name, t in [("logit", logits), ("prob", probs), ("selected", selected),
                        ("rank", rank), ("weight", weight)]:  # fmt: skip
            grid[name] = t.reshape(-1).numpy()
        grid.insert(0, "prompt", p)
        out.append(grid)
    cols = [
        "prompt",
        "pos",
        "token",
        "layer",
        "expert",
        "logit",
        "prob",
        "selected",
        "rank",
        "weight",
    ]
    return _concat(out, cols)


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
    "sampling": lambda trace: _records_frame(trace, "sampling"),
    "kv_cache": lambda trace: _records_frame(trace, "kv_cache"),
    "shapes": shapes_frame,
}
