"""Induction heads, found and confirmed by running the model: scores on a repeated-token probe,
then ablations of each candidate against random heads. `interp induction`, the report and the
experiments all call `induction_heads`.
"""

from __future__ import annotations

import random

import pandas as pd
import torch

from interp.analysis import induction as ind
from interp.analysis.attribution import read_norm
from interp.errors import InterpError
from interp.trace import ModelFacts, trace

DEFAULT_SEQ_LEN = 50
THRESHOLD = 0.4  # induction score: 40% of the attention on the one right key out of T
MIN_DELTA = 0.1  # nats per second-copy token: the least rise that counts as "ablation matters"
SET_RATIO = 2.0  # the top set must hurt this many times more than the worst random set
DRAWS = 3  # random head sets per mode, and random single heads for the per-head null


def induction_probe(model, seq_len: int | None, batch: int, seed: int) -> dict:
    """The repeated random tokens for `model`: {"tokens" [batch, T], "seq_len", "sink" (the
    leading token's id, or None), "low", "high"} (ids drawn from [low, high), never special)."""
    tok = model.tokenizer
    if tok is None:
        # Token-only models (the attn-only zoo) are trained with id 0 as BOS.
        low, high, sink = 1, model.cfg.d_vocab, 0
    else:
        # all_special_ids misses added special tokens (SmolLM2's ids 3..16).
        special = set(tok.all_special_ids)
        special |= {i for i, added in tok.added_tokens_decoder.items() if added.special}
        low, high = ind.token_range(min(model.cfg.d_vocab, len(tok)), sorted(special))
        sink = tok.bos_token_id
    room = (model.cfg.n_ctx - int(sink is not None)) // 2
    if seq_len is None:
        seq_len = min(DEFAULT_SEQ_LEN, room)
    if not 2 <= seq_len <= room:
        raise InterpError(f"seq_len must be in 2..{room}: the context holds {model.cfg.n_ctx}")
    if batch <= 0:
        raise InterpError("batch must be > 0")
    tokens = ind.repeated_tokens(batch, seq_len, seed, low, high, sink)
    return {"tokens": tokens, "seq_len": seq_len, "sink": sink, "low": low, "high": high}


def induction_heads(
    model, *, seq_len: int | None = None, batch: int = 8, seed: int = 0, top: int = 10,
    draws: int = DRAWS,
) -> dict:  # fmt: skip
    """Scores, in-context learning and ablations of `model` on the repeated-token probe.

    Returns {"heads": the `top` heads by induction score, with `ablation_delta` (second-copy
    loss rise when the head alone is mean-ablated; measured for heads scoring >= THRESHOLD)
    and `induction_head`; "scores": every head; "losses"; "null": the deltas of random single
    heads scoring below THRESHOLD; "ablation": top-k set vs k random heads (k = min(top,
    heads / 2)), zero and mean; "effects": per mode, whether the top set beats the random
    ones; "probe": settings}.
    """

    if top <= 0:
        raise InterpError("top must be > 0")
    if draws <= 0:
        raise InterpError("draws must be > 0")
    settings = induction_probe(model, seq_len, batch, seed)
    tokens, seq_len = settings.pop("tokens"), settings["seq_len"]
    has_sink = settings["sink"] is not None
    cfg = model.cfg
    n_kv = ModelFacts.of(model).n_key_value_heads
    score_hooks, head_scores = ind.score_hooks(cfg.n_layers, seq_len, has_sink, n_kv)
    z_names = [f"blocks.{layer}.attn.hook_z" for layer in range(cfg.n_layers)]
    base = trace(model, tokens, capture=z_names, fwd_hooks=score_hooks)
    # Mean over the random tokens: the sink's output is not a typical one.
    z = [torch.stack([r.tensors[name][int(has_sink) :] for r in base.records]) for name in z_names]
    means = torch.stack([layer_z.mean((0, 1)) for layer_z in z])
    copying = ind.copy_scores(model.W_E, model.W_V, model.W_O, model.W_U, *_norm_weights(model))
    scores = head_scores().merge(copying)
    losses = _losses(base, seq_len, has_sink)

    def second_copy_loss(heads, mode: str) -> float:
        if not heads:
            return losses["second_copy_loss"]
        ablated = trace(model, tokens, capture=(), fwd_hooks=ind.ablation_hooks(heads, mode, means))
        return _losses(ablated, seq_len, has_sink)["second_copy_loss"]

    def delta(head) -> float:
        return second_copy_loss([head], "mean") - losses["second_copy_loss"]

    ranked = scores.sort_values("induction", ascending=False, kind="stable", ignore_index=True)
    all_heads = _heads(ranked)
    heads = ranked.head(top).copy()
    heads["ablation_delta"] = [
        delta(h) if score >= THRESHOLD else float("nan")
        for h, score in zip(_heads(heads), heads.induction, strict=True)
    ]
    # The null: what ablating a head that is no induction candidate does.
    pool = _heads(ranked[ranked.induction < THRESHOLD])
    null = pd.DataFrame(
        [{"head": f"{h[0]}.{h[1]}", "ablation_delta": delta(h)}
         for h in random.Random(seed).sample(pool, min(draws, len(pool)))],
        columns=["head", "ablation_delta"],
    )  # fmt: skip
    heads["induction_head"] = ind.is_induction_head(
        heads, null.ablation_delta, THRESHOLD, MIN_DELTA
    )
    k = min(top, len(all_heads) // 2)
    ablation = ind.ablation_frame(
        second_copy_loss, all_heads[:k], all_heads, seeds=range(seed, seed + draws)
    )
    return {
        "heads": heads,
        "scores": scores,
        "losses": losses,
        "null": null,
        "ablation": ablation,
        "effects": ind.set_effects(ablation, SET_RATIO, MIN_DELTA),
        "probe": {**settings, "batch": batch, "seed": seed},
    }


def _norm_weights(model):
    """(ln1 [layers, d_model], ln_final [d_model]): the scale each norm applies (w, or 1 + w
    for Gemma's norms, as DLA reads them), None where the model has none."""
    kind = model.cfg.normalization_type or "none"
    kind = {"RMSPre": "RMS", "LNPre": "LN"}.get(kind, kind)

    def scale(module):
        if getattr(module, "weight", None) is None:
            return None
        return read_norm(module, kind, model.cfg.eps).weight

    ln1 = [scale(getattr(block, "ln1", None)) for block in model.blocks]
    final = scale(getattr(model, "ln_final", None))
    return (torch.stack(ln1) if all(w is not None for w in ln1) else None), final


def _heads(frame) -> list[tuple[int, int]]:
    return list(zip(frame.layer.tolist(), frame["head"].tolist(), strict=True))


def _losses(run, seq_len: int, has_sink: bool) -> dict[str, float]:
    logprobs = torch.stack([record.logprob for record in run.records])
    return ind.icl_losses(logprobs, seq_len, has_sink)
