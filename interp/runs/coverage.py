"""Coverage with its causal check: which prompt keys the answer read, and whether blocking them
moves it. `interp coverage` (`measure`) and the report (`check_trace`) call the same code.

One generating trace gives the attention rows; teacher-forced traces of prompt + continuation,
without and with the blocking hooks, give the check.
"""

from __future__ import annotations

import pandas as pd
import torch

from interp.analysis import coverage as cv
from interp.errors import InterpError
from interp.runs.attribution import key_attribution, summary_frame
from interp.text import decode
from interp.trace import Trace, trace


def continuation(record) -> torch.Tensor:
    """Prompt + continuation ids; with nothing generated, the greedy next token is appended."""
    if len(record.ids) > record.n_prompt:
        return record.ids
    return torch.cat([record.ids, record.query_logits[-1].argmax()[None]])


def coverage_check(model, ids: torch.Tensor, n_prompt: int, cov, prompt: int = 0) -> pd.DataFrame:
    """Coverage's causal check for one prompt: `cv.causal_check` plus the greedy continuation
    under each block (`greedy_when_blocked`) and the checked `continuation`.

    `ids`: prompt + continuation (at least one continuation token); `cov`: the `cv.coverage` of
    the trace whose prompt `prompt` these ids are.
    """
    uncovered, top = cv.blocking_sets(cov, prompt)
    sets = {"uncovered": uncovered, "top": top}
    queries = cv.predicting_positions(n_prompt, len(ids))
    # On the blocked runs' kernel: their hook_pattern hooks run TL's eager attention, which
    # differs from the default kernel by float rounding (interp.models.kernel).
    unchanged = [(name, lambda pattern, hook: pattern)
                 for name, _ in cv.blocking_hooks([], [], model.cfg.n_layers)]  # fmt: skip
    base = trace(model, ids, capture=(), fwd_hooks=unchanged)
    blocked, greedy = {}, {}
    for name, keys in sets.items():
        if not keys:  # the hooks would change nothing: skip two runs, same numbers
            blocked[name], greedy[name] = base.tokens, "(nothing blocked)"
            continue
        hooks = cv.blocking_hooks(keys, queries, model.cfg.n_layers)
        blocked[name] = trace(model, ids, capture=(), fwd_hooks=hooks).tokens
        again = trace(model, ids[:n_prompt], max_new_tokens=len(ids) - n_prompt,
                      capture=(), fwd_hooks=hooks)  # fmt: skip
        greedy[name] = decode(model.tokenizer, again.records[0].ids[n_prompt:])
    check = cv.causal_check(base.tokens, blocked, sets, n_prompt)
    return check.assign(
        prompt=prompt,
        continuation=decode(model.tokenizer, ids[n_prompt:]),
        greedy_when_blocked=check["blocked"].map(greedy),
    )


def check_trace(
    run: Trace, model=None, tau: float = cv.TAU, value_norms=None
) -> tuple[cv.Coverage, pd.DataFrame | None]:
    """Coverage of every prompt of `run` and, with a live `model`, each prompt's causal check."""
    tokenizer = getattr(model, "tokenizer", None) or run.tokenizer
    cov = cv.coverage(run.query_attention, run.tokens, tau=tau, value_norms=value_norms,
                      bos_id=getattr(tokenizer, "bos_token_id", None))  # fmt: skip
    if model is None:
        return cov, None
    checks = [
        coverage_check(model, continuation(record), record.n_prompt, cov, prompt=p)
        for p, record in enumerate(run.records)
    ]
    return cov, pd.concat(checks, ignore_index=True)


def attribute_trace(run: Trace, model) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Key attribution (`interp.runs.attribution`) of every prompt of `run`: (keys, summary)."""
    bos_id = getattr(model.tokenizer, "bos_token_id", None)
    results = [
        key_attribution(model, continuation(record), record.n_prompt, prompt=p, bos_id=bos_id)
        for p, record in enumerate(run.records)
    ]
    return pd.concat([r["keys"] for r in results], ignore_index=True), summary_frame(results)


def measure(
    model, prompt, *, generate: int = 1, value_weighted: bool = False, tau: float = cv.TAU
) -> dict:
    """Coverage of `prompt` (text or 1-D ids) and the causal check, as frames.

    Returns {"attribution": key attribution frame (the headline), "attribution_summary": its one
    row, "coverage": Coverage, "causal": frame, "continuation": text, "blocked_text":
    {condition: greedy continuation under the block}}. With generate=0 the continuation checked
    is the greedy next token.
    """
    if generate < 0:
        raise InterpError("generate must be >= 0")
    if not tau > 0:
        raise InterpError("tau must be > 0")
    n_layers = model.cfg.n_layers
    v_names = [f"blocks.{layer}.attn.hook_v" for layer in range(n_layers)] if value_weighted else []
    run = trace(model, prompt, max_new_tokens=generate, capture=("attention", *v_names))
    norms = None
    if value_weighted:
        values = torch.stack([run.tensor(name) for name in v_names])
        norms = [cv.value_norms(values, run.weights["W_O"])]
    cov, check = check_trace(run, model, tau, norms)
    record = run.records[0]
    keys, summary = attribute_trace(run, model)
    return {
        "attribution": keys,
        "attribution_summary": summary,
        "coverage": cov,
        "causal": check.drop(columns=["prompt", "continuation", "greedy_when_blocked"]),
        "continuation": decode(model.tokenizer, continuation(record)[record.n_prompt :]),
        "blocked_text": dict(zip(check["blocked"], check["greedy_when_blocked"])),
    }
