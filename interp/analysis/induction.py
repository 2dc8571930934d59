"""Induction heads: scores computed from attention patterns, weights and log-probs.

Pure functions: no model loading, no hooks registered. The caller runs the model (with
`ablation_hooks` passed to the trace when it ablates) and hands tensors in.

The probe is a random sequence repeated once, `[sink] A A` with len(A) = seq_len. On the second
copy an induction head at query q attends to the token right after the earlier occurrence of the
current token, q - seq_len + 1, and copies it (Elhage et al. 2021; Olsson et al. 2022).
"""

from __future__ import annotations

import random
from collections.abc import Callable, Sequence

import pandas as pd
import torch

from interp.errors import InterpError
from interp.vocab import Hook, long_frame, prob_entropy

Head = tuple[int, int]  # (layer, head)


def repeated_tokens(
    batch: int, seq_len: int, seed: int, low: int, high: int, sink_token: int | None = None
) -> torch.Tensor:
    """LongTensor [batch, (1 if sink) + 2 * seq_len]: random ids in [low, high), repeated once.

    Choose [low, high) to exclude special tokens; `sink_token` (e.g. BOS) leads every row.
    """
    if not 0 <= low < high:
        raise InterpError(f"need 0 <= low < high, got [{low}, {high})")
    generator = torch.Generator().manual_seed(seed)
    first = torch.randint(low, high, (batch, seq_len), generator=generator)
    parts = [first, first]
    if sink_token is not None:
        parts.insert(0, torch.full((batch, 1), sink_token, dtype=torch.long))
    return torch.cat(parts, dim=1)


def token_range(vocab_size: int, special_ids: Sequence[int]) -> tuple[int, int]:
    """[low, high): the longest run of ids in [0, vocab_size) holding no special token."""
    bounds = sorted({-1, vocab_size, *(i for i in special_ids if 0 <= i < vocab_size)})
    low, high = max(zip(bounds, bounds[1:]), key=lambda pair: pair[1] - pair[0])
    if high - low < 2:
        raise InterpError(f"no ordinary token ids in [0, {vocab_size})")
    return low + 1, high


def pattern_scores(pattern: torch.Tensor, seq_len: int, has_sink: bool) -> dict[str, torch.Tensor]:
    """Induction, previous-token and duplicate-token scores of `pattern` [..., T, T], each [...].

    - induction: mean attention from each second-copy token to the token after its first copy.
    - duplicate_token: mean attention from each second-copy token to its first copy.
    - previous_token: mean attention from every query q >= 1 to q - 1.
    """
    T = pattern.shape[-1]
    offset = int(has_sink)
    if T != offset + 2 * seq_len:
        raise InterpError(f"patterns cover {T} positions, expected {offset + 2 * seq_len}")
    second = torch.arange(offset + seq_len, T)
    queries = torch.arange(1, T)
    p = pattern.detach().float()
    return {
        "induction": p[..., second, second - seq_len + 1].mean(-1),
        "previous_token": p[..., queries, queries - 1].mean(-1),
        "duplicate_token": p[..., second, second - seq_len].mean(-1),
    }


def text_masks(ids: torch.Tensor, valid: torch.Tensor) -> dict[str, torch.Tensor]:
    """What `natural_text_scores` needs of `ids` [batch, pos] (`valid`: False on padding). It
    depends on the tokens only, so a batch builds it once for every layer: the real queries
    q >= 1 [batch, pos], and per score the (batch, query, key) triples it sums, as index
    tensors [3, pairs]; they are few (repeats of a token), so the scores gather them from the
    pattern instead of reading all of it."""
    queries = valid.clone()
    queries[:, 0] = False
    # duplicate_token: the earlier copies j < q of the query's token; induction: the keys
    # j + 1 < q right after them.
    same = ((ids[:, :, None] == ids[:, None, :]) & queries[:, :, None]).tril_(-1)
    batch, query, copy = same.nonzero(as_tuple=True)
    after = copy + 1 < query
    seen = torch.zeros_like(queries)
    seen[batch[after], query[after]] = True
    return {
        "queries": queries,
        "duplicate_token": torch.stack([batch, query, copy]),
        "duplicate_token_queries": same.any(-1).sum(),
        "induction": torch.stack([batch[after], query[after], copy[after] + 1]),
        "induction_queries": seen.sum(),
    }


def natural_text_scores(
    pattern: torch.Tensor, masks: dict[str, torch.Tensor]
) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    """Head scores on ordinary text, as (sum over queries [head], number of queries) pairs.

    `pattern` [batch, head, query, key]; `masks` from `text_masks`. Over queries q >= 1:
    previous_token = attention to q - 1; sink = attention to position 0; entropy (nats) of the
    row. Over queries whose token occurred before: induction = attention to the tokens right
    after its earlier occurrences (keys before q), the probe's score without the probe;
    duplicate_token = attention to the earlier occurrences.
    """
    p = pattern.detach()
    queries = masks["queries"]
    n = queries.sum()
    out = {}
    for name in ("induction", "duplicate_token"):
        batch, query, key = masks[name]
        out[name] = (p[batch, :, query, key].float().sum(0), masks[f"{name}_queries"])
    prev = p.diagonal(offset=-1, dim1=-2, dim2=-1).float()  # [batch, head, query - 1]
    out["previous_token"] = ((prev * queries[:, None, 1:]).sum((0, 2)), n)
    out["sink"] = ((p[..., 0].float() * queries[:, None]).sum((0, 2)), n)
    out["entropy"] = ((prob_entropy(p) * queries[:, None]).sum((0, 2)), n)
    return out


def head_scores(
    patterns: torch.Tensor, seq_len: int, has_sink: bool, n_kv_heads: int | None = None
) -> pd.DataFrame:
    """One row per (layer, head): the `pattern_scores`, averaged over the batch.

    `patterns`: [batch, layers, heads, T, T] attention weights on `repeated_tokens` rows.
    GQA: query head h reads kv head h // (heads // n_kv_heads).
    """
    scores = pattern_scores(patterns, seq_len, has_sink)
    return _scores_frame({name: s.mean(0) for name, s in scores.items()}, n_kv_heads)


def score_hooks(
    n_layers: int, seq_len: int, has_sink: bool, n_kv_heads: int | None = None
) -> tuple[list[Hook], Callable[[], pd.DataFrame]]:
    """Hooks on `blocks.{l}.attn.hook_pattern` that reduce each pattern to its scores as the
    model runs, so no [T, T] pattern outlives its layer; after the run, the returned function
    gives the `head_scores` frame."""
    store: dict[int, list[dict[str, torch.Tensor]]] = {layer: [] for layer in range(n_layers)}

    def make_hook(layer: int):
        def hook(pattern: torch.Tensor, hook: object = None) -> None:
            store[layer].append(pattern_scores(pattern, seq_len, has_sink))

        return hook

    def frame() -> pd.DataFrame:
        if not all(store.values()):
            raise RuntimeError("the score hooks have not run on every layer")
        per_layer = [
            {name: torch.cat([s[name] for s in runs]).mean(0) for name in runs[0]}
            for runs in store.values()
        ]
        stacked = {name: torch.stack([s[name] for s in per_layer]) for name in per_layer[0]}
        return _scores_frame(stacked, n_kv_heads)

    hooks = [(f"blocks.{layer}.attn.hook_pattern", make_hook(layer)) for layer in range(n_layers)]
    return hooks, frame


def _scores_frame(scores: dict[str, torch.Tensor], n_kv_heads: int | None) -> pd.DataFrame:
    """scores: name -> [layer head]; one row per head with layer, head, kv_head first.
    `n_kv_heads` None: multi-head attention."""
    (first, values), *rest = scores.items()
    n_heads = values.shape[1]
    frame = long_frame(values, "layer head", first)
    frame.insert(2, "kv_head", frame["head"] // (n_heads // (n_kv_heads or n_heads)))
    return frame.assign(**{name: s.flatten().numpy() for name, s in rest})


def copy_scores(
    W_E: torch.Tensor,
    W_V: torch.Tensor,
    W_O: torch.Tensor,
    W_U: torch.Tensor,
    ln1: torch.Tensor | None = None,
    ln_final: torch.Tensor | None = None,
) -> pd.DataFrame:
    """One row per (layer, head): copying = sum(eig) / sum(|eig|) of the OV circuit W_E W_V W_O W_U.

    +1 when the head's output raises the logit of the token it attends to (copying), -1 when it
    suppresses it. Shapes in TL convention (x @ W): W_E [vocab, d_model], W_V [layers, kv_heads,
    d_model, d_head], W_O [layers, heads, d_head, d_model], W_U [d_model, vocab]; with fewer kv
    heads than heads (GQA), query head h uses W_V of kv head h // (heads // kv_heads).
    `ln1` [layers, d_model] and `ln_final` [d_model], the per-channel weights of the norm before
    the attention and before the unembedding, scale the channels they feed when the model keeps
    them unfolded. The normalising division is ignored, as in Elhage et al. 2021: a positive
    factor does not change the score.
    """
    n_heads, n_kv_heads = W_O.shape[1], W_V.shape[1]
    W_E, W_V, W_O, W_U = (w.detach().double() for w in (W_E, W_V, W_O, W_U))
    if ln1 is not None:
        W_V = ln1.detach().double().to(W_V.device)[:, None, :, None] * W_V
    if ln_final is not None:
        W_U = ln_final.detach().double().to(W_U.device)[:, None] * W_U
    W_V = W_V.repeat_interleave(n_heads // n_kv_heads, dim=1)
    # The nonzero eigenvalues of ABCD equal those of its cyclic shift CDAB, so the
    # [vocab, vocab] circuit reduces to [d_head, d_head]: W_O W_U W_E W_V.
    reduced = W_O @ (W_U @ W_E) @ W_V
    eig = torch.linalg.eigvals(reduced)
    copying = eig.sum(-1).real / eig.abs().sum(-1).clamp_min(1e-12)
    return _scores_frame({"copying": copying.float()}, n_kv_heads)


def token_logprobs(logits: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
    """[batch, T]: log p(tokens[:, t] | tokens[:, :t]); NaN at t = 0, which has no prefix."""
    logprobs = torch.log_softmax(logits.detach().float(), dim=-1)[:, :-1]
    picked = logprobs.gather(-1, tokens[:, 1:, None]).squeeze(-1)
    return torch.cat([torch.full_like(picked[:, :1], float("nan")), picked], dim=1)


def icl_losses(logprobs: torch.Tensor, seq_len: int, has_sink: bool) -> dict[str, float]:
    """Mean loss on the first and second copy of `repeated_tokens` rows.

    `logprobs` [batch, T] as from `token_logprobs`. The first token of each copy is left out:
    it follows a random token, so not even an induction head can predict it.
    """
    offset = int(has_sink)
    if logprobs.shape[1] != offset + 2 * seq_len:
        raise InterpError(
            f"logprobs cover {logprobs.shape[1]} positions, expected {offset + 2 * seq_len}"
        )
    first = logprobs[:, offset + 1 : offset + seq_len]
    second = logprobs[:, offset + seq_len + 1 :]
    return {"first_copy_loss": -first.mean().item(), "second_copy_loss": -second.mean().item()}


def ablation_hooks(
    heads: Sequence[Head], mode: str, means: torch.Tensor | None = None
) -> list[Hook]:
    """TL forward hooks on `blocks.{l}.attn.hook_z` [batch, pos, heads, d_head] that ablate `heads`.

    mode "zero" sets the head's z to 0; "mean" sets it to `means[layer, head]` ([layers, heads,
    d_head], the head's mean z over a reference batch and positions), which keeps the output's
    average and removes only what depends on the input.
    """
    if mode not in ("zero", "mean"):
        raise InterpError(f"mode must be 'zero' or 'mean', not {mode!r}")
    if mode == "mean" and means is None:
        raise InterpError("mean ablation needs `means` [layers, heads, d_head]")
    by_layer: dict[int, list[int]] = {}
    for layer, head in heads:
        by_layer.setdefault(layer, []).append(head)

    def make_hook(layer: int, layer_heads: list[int]):
        def hook(z: torch.Tensor, hook: object = None) -> torch.Tensor:
            z = z.clone()
            if mode == "zero":
                z[:, :, layer_heads] = 0.0
            else:
                z[:, :, layer_heads] = means[layer, layer_heads].to(z.dtype)
            return z

        return hook

    return [(f"blocks.{layer}.attn.hook_z", make_hook(layer, hs)) for layer, hs in by_layer.items()]


def ablation_frame(
    measure: Callable[[Sequence[Head], str], float],
    top: Sequence[Head],
    all_heads: Sequence[Head],
    seeds: Sequence[int],
    modes: Sequence[str] = ("zero", "mean"),
) -> pd.DataFrame:
    """Second-copy loss with the `top` heads ablated vs as many random heads, per mode.

    `measure(heads, mode)` runs the model with `ablation_hooks(heads, mode, ...)` and returns the
    second-copy loss; `measure([], mode)` is the baseline (mode "none" in the frame). Random
    heads are drawn from `all_heads` minus `top`, one draw per seed. Columns: condition
    (baseline | top | random), mode, seed, k, heads ("L.H ..."), second_copy_loss, delta (vs
    baseline).
    """
    others = [h for h in all_heads if h not in set(top)]
    runs = [("baseline", "none", None, [])]
    for mode in modes:
        runs.append(("top", mode, None, list(top)))
        for seed in seeds:
            draw = random.Random(seed).sample(others, min(len(top), len(others)))
            runs.append(("random", mode, seed, sorted(draw)))
    frame = pd.DataFrame(
        [
            {
                "condition": condition,
                "mode": mode,
                "seed": seed,
                "k": len(heads),
                "heads": " ".join(f"{layer}.{head}" for layer, head in heads),
                # No heads ablated: any mode gives the baseline.
                "second_copy_loss": measure(heads, modes[0] if mode == "none" else mode),
            }
            for condition, mode, seed, heads in runs
        ]
    )
    frame["seed"] = frame.seed.astype("Int64")
    frame["delta"] = frame.second_copy_loss - frame.second_copy_loss.iloc[0]
    return frame


def set_effects(ablation: pd.DataFrame, ratio: float, min_delta: float) -> pd.DataFrame:
    """Per mode of an `ablation_frame`: the top set's delta, the random sets' mean and max
    delta, and `confirmed`: the top delta exceeds ratio x max(largest random delta,
    `min_delta`), so random sets that barely hurt cannot make a tiny top delta count."""
    rows = []
    for mode, group in ablation[ablation.condition != "baseline"].groupby("mode", sort=False):
        top = group.delta[group.condition == "top"].iloc[0]
        random_deltas = group.delta[group.condition == "random"]
        bar = ratio * max(random_deltas.max(), min_delta)
        rows.append(
            {
                "mode": mode,
                "top_delta": top,
                "random_mean": random_deltas.mean(),
                "random_max": random_deltas.max(),
                "confirmed": bool(top > bar),
            }
        )
    return pd.DataFrame(rows)


def is_induction_head(
    heads: pd.DataFrame, null: Sequence[float], threshold: float, min_delta: float
) -> pd.Series:
    """Both kinds of evidence, per row of `heads`: an induction score of at least `threshold`,
    and an `ablation_delta` (the second-copy loss rise when the head alone is ablated) of at
    least `min_delta` that beats every delta in `null` (the same ablation of random single
    heads). A NaN delta (not measured) is no evidence."""
    bar = max([min_delta, *null])
    return (heads.induction >= threshold) & (heads.ablation_delta >= bar)
