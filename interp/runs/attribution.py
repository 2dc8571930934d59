"""Key attribution with its causal check: which prompt keys carried the answer.
`interp coverage` and the report call `key_attribution`; the math is
`interp.analysis.key_attribution`.

Three runs: one forward and one backward of prompt + continuation (every key's attribution),
batched forwards blocking each of the `top` keys with the largest attribution alone (exact), and
a greedy generation with every covered key blocked (does the answer change?).
"""

from __future__ import annotations

import pandas as pd
import torch

from interp.analysis import coverage as cv
from interp.analysis import key_attribution as ka
from interp.models.devices import input_device
from interp.runs.grad import with_grad
from interp.text import decode, token_texts
from interp.trace import trace

TOP = 32  # keys blocked one by one (in batches of BATCH copies of the prompt)
BATCH = 16


def key_attribution(
    model, ids: torch.Tensor, n_prompt: int, *, top: int = TOP, prompt: int = 0, bos_id=None
) -> dict:
    """Attribution of every prompt key to the continuation ids[n_prompt:] (teacher-forced).

    Returns {"keys": `ka.key_frame`, "spearman": attribution vs exact over the blocked keys,
    "baseline": log p of the continuation, "blocked": covered keys, "blocked_logprob": log p with
    them all blocked, "continuation" / "greedy_when_blocked": text}."""
    queries = cv.predicting_positions(n_prompt, len(ids))
    ids = ids.to(input_device(model))
    n_layers = model.cfg.n_layers
    names = [f"blocks.{layer}.attn.hook_pattern" for layer in range(n_layers)]
    grads = with_grad(model, ids, names, lambda x: ka.continuation_logprob(x, ids, queries).sum())
    patterns = torch.stack([grads.activations[n][0] for n in names])  # [layer head query key]
    slopes = torch.stack([grads.grads[n][0] for n in names])
    attribution = ka.edge_attribution(patterns, slopes, queries)[:n_prompt].cpu()
    tokens = token_texts(model.tokenizer, ids[:n_prompt])
    sinks = sorted({0, *(i for i in range(n_prompt) if bos_id is not None and ids[i] == bos_id)})
    order = attribution.abs().argsort(descending=True).tolist()
    candidates = [k for k in order if k not in sinks][:top]
    exact = blocked_one_by_one(model, ids, queries, candidates)
    keys = ka.key_frame(tokens, attribution, exact, sinks, prompt)
    checked = keys.dropna(subset=["exact"])
    covered = keys.loc[keys["covered"], "pos"].tolist()
    result = {
        "keys": keys,
        "spearman": ka.spearman(checked["attribution"], checked["exact"]),
        "baseline": grads.metric,
        "blocked": covered,
        "continuation": decode(model.tokenizer, ids[n_prompt:]),
        "blocked_logprob": grads.metric,
        "greedy_when_blocked": decode(model.tokenizer, ids[n_prompt:]),
    }
    if covered:
        hooks = cv.row_blocking_hooks([covered], queries, n_layers)
        with torch.no_grad(), model.hooks(fwd_hooks=hooks):
            logits = model(ids[None])
        result["blocked_logprob"] = float(ka.continuation_logprob(logits, ids, queries)[0])
        again = trace(model, ids[:n_prompt], max_new_tokens=len(ids) - n_prompt, capture=(),
                      fwd_hooks=cv.blocking_hooks(covered, queries, n_layers))  # fmt: skip
        result["greedy_when_blocked"] = decode(model.tokenizer, again.records[0].ids[n_prompt:])
    return result


def blocked_one_by_one(model, ids, queries, keys: list[int]) -> dict[int, float]:
    """{key: log p the continuation loses when G cannot read that key alone} (exact)."""
    sets = [[], *([k] for k in keys)]  # row 0 blocks nothing: the baseline, in the same batches
    values = []
    for start in range(0, len(sets), BATCH):
        chunk = sets[start : start + BATCH]
        hooks = cv.row_blocking_hooks(chunk, queries, model.cfg.n_layers)
        with torch.no_grad(), model.hooks(fwd_hooks=hooks):
            logits = model(ids[None].expand(len(chunk), -1))
        values.append(ka.continuation_logprob(logits, ids, queries))
    logp = torch.cat(values)
    return {k: float(logp[0] - logp[i + 1]) for i, k in enumerate(keys)}


def summary_row(result: dict, prompt: int = 0) -> dict:
    """One prompt's key attribution in one row: the rank correlation, the covered keys and what
    blocking them all does to the continuation."""
    keys = result["keys"]
    return {
        "prompt": prompt,
        "keys": int((~keys["sink"]).sum()),
        "checked": int(keys["exact"].notna().sum()),
        "spearman": result["spearman"],
        "covered": len(result["blocked"]),
        "covered_keys": " ".join(map(str, result["blocked"])),
        "baseline": result["baseline"],
        "blocked_logprob": result["blocked_logprob"],
        "continuation": result["continuation"],
        "greedy_when_blocked": result["greedy_when_blocked"],
        "flipped": result["greedy_when_blocked"] != result["continuation"],
    }


def summary_frame(results: list[dict]) -> pd.DataFrame:
    return pd.DataFrame([summary_row(r, p) for p, r in enumerate(results)])
