"""Prompt-key coverage: which prompt tokens the answer actually read, and how evenly.

Queries G are the positions that predict the continuation: the last prompt position and every
generated position but the last (with nothing generated, the last prompt position alone);
`queries="all"` takes every query row the frame holds. Keys P are the prompt positions. Sinks S
(position 0 and any BOS token) soak up attention that carries little information, so their share
is reported apart as sink mass and the coverage numbers are over P \\ S.

- mass m_k: attention from G to k averaged over layers, heads and queries, renormalised over
  P \\ S. Before renormalising, the shares are sink_mass (on S), prompt_mass (on P \\ S) and the
  rest on generated keys. Heads are counted per query head: under GQA the query heads sharing a
  kv head (listed in `kv_head`) each count once.
- value-weighted (Kobayashi et al. 2020): each weight alpha_{q,k} is scaled by |v_k W_O| of its
  head, and every row renormalised to sum to 1 before averaging.
- coverage@tau: fraction of P \\ S whose largest weight from any (query, layer, head) reaches tau
  times the uniform level 1 / (q + 1) of that query.
- effective coverage: exp(H(m)) / |P \\ S|; keys_90: the smallest fraction of P \\ S holding 90%
  of the mass.

Only G's rows are needed, so this works from `trace.query_attention` (kept for any prompt
length); the full `trace.attention` frame gives the same numbers, or every row for "all".

A causal check backs the numbers: `blocking_hooks` cut G's attention to chosen keys (columns
zeroed in hook_pattern, rows renormalised) and `causal_check` compares the teacher-forced
log-probability of the continuation with and without the cut. Only G's direct reads are cut:
other positions may still carry a blocked key's content forward, as the coverage numbers, which
also look at G's rows only, assume.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch

from interp.errors import InterpError
from interp.vocab import Hook

# With 270 (layer, head) rows per query nearly every key reaches the uniform level somewhere
# (coverage@1 is 1.0 on SmolLM2 for 15- and 400-key prompts), so "covered" asks for 4x uniform.
TAU = 4.0
# Coverage is called trustworthy when blocking the uncovered keys moves the continuation's mean
# log-prob per token by at most UNCOVERED_MAX nats (p within about x0.8..x1.2) while blocking as
# many top-mass keys lowers it by at least TOP_MIN nats (p down to 0.6x or less).
UNCOVERED_MAX = 0.2
TOP_MIN = 0.5


@dataclass
class Coverage:
    summary: pd.DataFrame  # one row per prompt
    keys: pd.DataFrame  # one row per prompt position: attention share, mass, peak, covered
    layers: pd.DataFrame  # the summary numbers per layer
    heads: pd.DataFrame  # ... per (layer, query head)


def value_norms(values: torch.Tensor, W_O: torch.Tensor) -> torch.Tensor:
    """[L, H, T]: |v_k W_O^h|, the size of what head h writes per unit weight on key k.

    `values` [L, T, kv_heads, d_head] (hook_v per layer, stacked); `W_O` [L, H, d_head, d].
    GQA: query head h reads kv head h // (H // kv_heads).
    """
    group = W_O.shape[1] // values.shape[2]
    v = values.detach().float().repeat_interleave(group, dim=2)  # [L, T, H, d_head]
    return torch.einsum("lthe,lhed->lhtd", v, W_O.detach().float()).norm(dim=-1)


def predicting_positions(n_prompt: int, n_tokens: int) -> list[int]:
    """The positions whose next-token predictions make up the continuation (G)."""
    return list(range(n_prompt - 1, max(n_prompt, n_tokens - 1)))


def sink_positions(tokens: pd.DataFrame, bos_id: int | None = None) -> list[int]:
    """Position 0 plus every BOS token of one prompt's tokens frame."""
    bos = tokens["pos"][tokens["token_id"] == bos_id] if bos_id is not None else []
    return sorted({0, *map(int, bos)})


def _rows(attention: pd.DataFrame, queries: list[int] | None, T: int):
    """Dense [L, H, nq, T] weights and the query positions, from a long-form attention frame."""
    if queries is None:
        queries = sorted(attention["query"].unique().tolist())
    missing = set(queries) - set(attention["query"].unique().tolist())
    if missing:
        raise InterpError(
            f"the trace holds no attention rows for queries {sorted(missing)}; "
            "trace with query_positions='all'"
        )
    picked = attention[attention["query"].isin(queries)]
    L, H = int(attention["layer"].max()) + 1, int(attention["head"].max()) + 1
    rows = np.zeros((L, H, len(queries), T), dtype=np.float32)
    index = pd.Series(np.arange(len(queries)), index=queries)
    rows[picked["layer"], picked["head"], index[picked["query"]].to_numpy(), picked["key"]] = (
        picked["weight"].to_numpy()
    )
    return torch.from_numpy(rows), queries


def _stats(rows: torch.Tensor, peak: torch.Tensor, keys: torch.Tensor, sinks, tau: float):
    """Summary numbers for rows [..., nq, T] (already row-normalised) over keys P \\ S."""
    share = rows.reshape(-1, rows.shape[-1]).double().mean(0)
    mass = share[keys] / share[keys].sum()
    ordered = mass.sort(descending=True).values
    n90 = int(torch.searchsorted(ordered.cumsum(0), torch.tensor(0.9 - 1e-9))) + 1
    top = int(mass.argmax())
    return {
        "sink_mass": float(share[sinks].sum()),
        "prompt_mass": float(share[keys].sum()),
        "coverage": float((peak[keys] >= tau).double().mean()),
        "effective_coverage": float(torch.special.entr(mass).sum().exp() / len(keys)),
        "keys_90": min(n90, len(keys)) / len(keys),
        "top_key": int(keys[top]),
        "top_mass": float(mass[top]),
    }


def _peak(rows: torch.Tensor, queries: list[int]) -> torch.Tensor:
    """[..., T]: each key's largest weight over queries, in units of the query's uniform level."""
    visible = torch.tensor(queries, dtype=rows.dtype)[:, None] + 1
    return (rows * visible).amax(dim=-2)


def coverage(
    attention: pd.DataFrame,
    tokens: pd.DataFrame,
    *,
    tau: float = TAU,
    queries: str = "predicting",
    value_norms: Sequence[torch.Tensor] | None = None,
    bos_id: int | None = None,
) -> Coverage:
    """Coverage of the prompt keys per prompt, from `trace.query_attention` (or the full
    `trace.attention`) and `trace.tokens`.

    `queries`: "predicting" (G as in the module doc) or "all" (every row in `attention`).
    `value_norms[p]`: [L, H, T] from `value_norms` for prompt p, to weight by |v W_O|.
    """
    if queries not in ("predicting", "all"):
        raise InterpError(f"queries must be 'predicting' or 'all', not {queries!r}")
    group = int(attention["head"].max() + 1) // int(attention["kv_head"].max() + 1)
    parts = []
    for p, toks in tokens.groupby("prompt"):
        n_prompt, T = int((~toks["generated"]).sum()), len(toks)
        wanted = predicting_positions(n_prompt, T) if queries == "predicting" else None
        rows, qs = _rows(attention[attention["prompt"] == p], wanted, T)
        if value_norms is not None:
            rows = rows * value_norms[p][:, :, None, :T].float()
            rows = rows / rows.sum(-1, keepdim=True).clamp_min(1e-30)
        parts.append(_one_prompt(p, toks, rows, qs, sink_positions(toks, bos_id), tau, group))
    summary, keys, layers, heads = zip(*parts)
    summary = pd.DataFrame(summary).assign(value_weighted=value_norms is not None)
    return Coverage(
        summary, pd.concat(keys, ignore_index=True),
        pd.DataFrame([r for rs in layers for r in rs]),
        pd.DataFrame([r for rs in heads for r in rs]),
    )  # fmt: skip


def _one_prompt(p: int, toks: pd.DataFrame, rows, qs, sinks: list[int], tau: float, group: int):
    """(summary row, keys frame, layer rows, head rows) of one prompt's G rows [L, H, nq, T]."""
    n_prompt = int((~toks["generated"]).sum())
    keys = torch.tensor([k for k in range(n_prompt) if k not in sinks])
    if len(keys) == 0:
        raise InterpError("coverage needs a prompt of two tokens or more (0 is the sink)")
    peak = _peak(rows, qs)  # [L, H, T]
    summary = {"prompt": p, "queries": len(qs), "keys": len(keys), "tau": tau,
               **_stats(rows, peak.amax(dim=(0, 1)), keys, sinks, tau)}  # fmt: skip
    n_layers, n_heads = rows.shape[:2]
    layers = [
        {"prompt": p, "layer": layer, **_stats(rows[layer], peak[layer].amax(0), keys, sinks, tau)}
        for layer in range(n_layers)
    ]
    heads = [
        {
            "prompt": p,
            "layer": layer,
            "head": head,
            "kv_head": head // group,
            **_stats(rows[layer, head], peak[layer, head], keys, sinks, tau),
        }
        for layer in range(n_layers)
        for head in range(n_heads)
    ]
    share = rows.reshape(-1, rows.shape[-1]).double().mean(0)[:n_prompt]
    mass = torch.full((n_prompt,), float("nan"), dtype=share.dtype)
    mass[keys] = share[keys] / share[keys].sum()
    sink = np.isin(np.arange(n_prompt), sinks)
    top_peak = peak.amax(dim=(0, 1))[:n_prompt].numpy()
    frame = pd.DataFrame({
        "prompt": p, "pos": np.arange(n_prompt),
        "token": toks["token"].to_numpy()[:n_prompt], "sink": sink, "attention": share.numpy(),
        "mass": mass.numpy(), "peak": top_peak, "covered": ~sink & (top_peak >= tau),
    })  # fmt: skip
    return summary, frame, layers, heads


def token_masses(cov: Coverage, prompt: int = 0) -> list[tuple[str, float | None]]:
    """(token, mass) per prompt position for the HTML report; sinks get None (their share is the
    summary's sink_mass)."""
    keys = cov.keys[cov.keys["prompt"] == prompt]
    return [
        (tok, None if sink else float(mass))
        for tok, sink, mass in zip(keys["token"], keys["sink"], keys["mass"])
    ]


def blocking_sets(cov: Coverage, prompt: int = 0) -> tuple[list[int], list[int]]:
    """(uncovered keys, as many top-mass keys): the two key sets the causal check blocks. With
    more than half the keys uncovered the two sets overlap."""
    keys = cov.keys[(cov.keys["prompt"] == prompt) & ~cov.keys["sink"]]
    uncovered = keys.loc[~keys["covered"], "pos"].tolist()
    top = keys.sort_values("mass", ascending=False)["pos"].head(len(uncovered)).tolist()
    return sorted(uncovered), sorted(top)


def blocking_hooks(keys: Sequence[int], queries: Sequence[int], n_layers: int) -> list[Hook]:
    """fwd_hooks that stop the query positions attending to `keys`, in every layer and head.

    Each hook_pattern row of a query in `queries` has the blocked columns zeroed and is
    renormalised (the same as -inf on the scores). Works on a full forward and on KV-cache steps,
    whose rows are the last positions.
    """
    blocked, wanted = torch.tensor(sorted(keys), dtype=torch.long), set(queries)

    def hook(pattern: torch.Tensor, hook) -> torch.Tensor:
        n_q, n_k = pattern.shape[-2:]
        rows = [i for i in range(n_q) if n_k - n_q + i in wanted]
        cols = blocked[blocked < n_k]
        if not rows or len(cols) == 0:
            return pattern
        pattern = pattern.clone()
        picked = pattern[..., rows, :]
        picked[..., cols] = 0
        pattern[..., rows, :] = picked / picked.sum(-1, keepdim=True).clamp_min(1e-30)
        return pattern

    return [(f"blocks.{layer}.attn.hook_pattern", hook) for layer in range(n_layers)]


def causal_check(
    baseline: pd.DataFrame,
    blocked: dict[str, pd.DataFrame],
    blocked_keys: dict[str, list[int]],
    n_prompt: int,
) -> pd.DataFrame:
    """Change in the continuation's teacher-forced log-prob when keys are blocked.

    `baseline` / `blocked[name]`: tokens frames of one prompt + continuation (positions from
    `n_prompt` on) traced without / with `blocking_hooks`. One row per condition; every row
    carries the verdict: trustworthy when blocking "uncovered" moves the mean log-prob per
    continuation token by at most UNCOVERED_MAX nats and blocking "top" lowers it by TOP_MIN or
    more. With no uncovered keys there is nothing to block and the verdict is False (untested).
    """

    def continuation(tokens: pd.DataFrame) -> pd.Series:
        return tokens.loc[tokens["pos"] >= n_prompt, "logprob"]

    base = continuation(baseline)
    if base.empty:
        raise InterpError("the causal check needs at least one continuation token")
    rows = []
    for name, tokens in blocked.items():
        delta = float(continuation(tokens).sum() - base.sum())
        rows.append({"blocked": name, "n_keys": len(blocked_keys[name]),
                     "keys": " ".join(map(str, blocked_keys[name])),
                     "baseline": float(base.sum()), "logprob": float(base.sum()) + delta,
                     "delta": delta, "delta_per_token": delta / len(base)})  # fmt: skip
    out = pd.DataFrame(rows)
    per = dict(zip(out["blocked"], out["delta_per_token"]))
    tested = len(blocked_keys.get("uncovered", [])) > 0
    out["trustworthy"] = bool(
        tested and abs(per["uncovered"]) <= UNCOVERED_MAX and per.get("top", 0.0) <= -TOP_MIN
    )
    return out
