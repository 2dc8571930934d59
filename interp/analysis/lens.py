"""Logit lens: read the residual stream after every layer as if it were the last one.

The stream after layer l goes through the model's own final norm and unembedding
(`trace.readout`), so the last layer's lens is exactly the model's output, and earlier layers
show when the eventual prediction first surfaces (nostalgebraist 2020). The norm is recomputed
from each layer's own stream, as the model would if the later layers were skipped.

Several streams (DeepSeek-V4's mHC): the lens reads the streams after layer l as the model
would if the later layers were skipped: its own head collapses them (hc_head, with the weights
it computes from those streams), then the final norm and unembedding; at the last layer that is
the model's output. `stream=s` reads one stream alone through the final norm and unembedding
instead (no collapse), and `stream_lens` lays every stream next to the collapse.
"""

from __future__ import annotations

import pandas as pd
import torch

from interp.errors import InterpError
from interp.text import token_texts


def _logprobs(trace, resid: torch.Tensor, collapse: bool = True) -> torch.Tensor:
    """log-softmax of the readout of a residual [T, d] ([T, N, d] collapsed, or one stream
    [T, d] with collapse=False): [T, vocab], in float64 for the KL."""
    with torch.no_grad():
        return trace.readout(resid, collapse=collapse).double().log_softmax(-1)


def _streams(trace, prompt: int, stream: int | None) -> torch.Tensor:
    """The residual after each layer, [layer+1 T (N) d]; one stream of it if `stream`."""
    resid = trace.tensor("resid", prompt)
    if stream is None:
        return resid
    n = trace.facts.n_streams
    if n == 1:
        raise InterpError("this model keeps one residual stream: leave stream unset")
    if not 0 <= stream < n:
        raise InterpError(f"stream {stream} is outside the model's streams [0, {n})")
    return resid[:, :, stream]


def logit_lens(
    trace, prompt: int = 0, k: int = 5, target: int | None = None, stream: int | None = None
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(top, lens) frames for every layer and position of one traced prompt.

    top: (prompt, layer, pos, rank, token_id, token, prob), the lens's k best tokens.
    lens: one row per (layer, pos): the target's prob, logprob and rank (rank 0 = top), the
    lens's own top-1, and kl = KL(lens_l || final) in nats. The target is `target` (a token id)
    at every position, else the model's final top-1 at that position. `stream`: read that one
    stream of a several-stream model (see the module's docstring); KL and target still refer to
    the model's own output.
    """
    if trace.readout is None:
        raise InterpError("the logit lens needs a live trace (a saved one has no readout)")
    resid = _streams(trace, prompt, stream)
    vocab = trace.facts.d_vocab
    if target is not None and not 0 <= target < vocab:
        raise InterpError(f"target token id {target} is outside the vocabulary [0, {vocab})")
    final = _logprobs(trace, trace.tensor("resid", prompt)[-1])  # the model's own output
    targets = torch.full((final.shape[0],), target) if target is not None else final.argmax(-1)
    top_rows, lens_rows = [], []
    # One layer at a time: all layers at once would hold L x T x vocab floats.
    for layer in range(resid.shape[0] - 1):
        logp = _logprobs(trace, resid[layer + 1], collapse=stream is None)
        positions = torch.arange(logp.shape[0])
        target_logp = logp[positions, targets]
        rank = (logp > target_logp[:, None]).sum(-1)
        kl = (logp.exp() * (logp - final)).sum(-1)
        best = logp.topk(k, dim=-1)
        for pos in positions.tolist():
            ids = best.indices[pos].tolist()
            for r, (tid, text) in enumerate(zip(ids, token_texts(trace.tokenizer, ids))):
                top_rows.append(
                    (prompt, layer, pos, r, tid, text, float(best.values[pos, r].exp()))
                )
            lens_rows.append(
                (prompt, layer, pos, int(targets[pos]), float(target_logp[pos].exp()),
                 float(target_logp[pos]), int(rank[pos]), ids[0], float(best.values[pos, 0].exp()),
                 float(kl[pos]))
            )  # fmt: skip
    top = pd.DataFrame(
        top_rows, columns=["prompt", "layer", "pos", "rank", "token_id", "token", "prob"]
    )
    lens = pd.DataFrame(
        lens_rows,
        columns=["prompt", "layer", "pos", "target_id", "prob", "logprob", "rank", "top1_id",
                 "top1_prob", "kl"],
    )  # fmt: skip
    lens.insert(4, "target", token_texts(trace.tokenizer, lens["target_id"].tolist()))
    lens.insert(9, "top1", token_texts(trace.tokenizer, lens["top1_id"].tolist()))
    return top, lens


def stream_lens(trace, prompt: int = 0, target: int | None = None) -> pd.DataFrame:
    """Several streams: `logit_lens`'s lens frame for each stream read alone (stream 0..N-1)
    and for the model's collapse of them (stream -1), one frame with a `stream` column."""
    n = trace.facts.n_streams
    if n == 1:
        raise InterpError("the per-stream lens needs a model with several residual streams")
    frames = []
    for s in [-1, *range(n)]:
        lens = logit_lens(trace, prompt, k=1, target=target, stream=None if s < 0 else s)[1]
        frames.append(lens.assign(stream=s))
    return pd.concat(frames, ignore_index=True)


def lasting_agreement(top1: torch.Tensor, final: torch.Tensor) -> torch.Tensor:
    """The decision depth itself, shared by the lens here and the survey's histogram: per
    column of `top1` [streams, n] (the lens's top-1 at each stream, in depth order), the first
    stream index from which it equals `final` [n] through the last stream; `streams` when even
    the last disagrees. Depth = 1 + the last disagreement."""
    order = torch.arange(1, top1.shape[0] + 1, device=top1.device)[:, None]
    return (order * (top1 != final)).max(0).values


def decision_depth(lens: pd.DataFrame) -> pd.DataFrame:
    """Per (prompt, pos): the first layer from which the lens top-1 equals the final top-1 and
    stays equal through the last layer (the model's own top-1 at that position)."""
    rows = []
    for (prompt, pos), g in lens.groupby(["prompt", "pos"], sort=True):
        g = g.sort_values("layer")
        top1 = torch.tensor(g["top1_id"].to_numpy())
        depth = int(lasting_agreement(top1[:, None], top1[-1:])[0])
        rows.append(
            (prompt, pos, int(top1[-1]), g["top1"].iloc[-1], int(g["layer"].iloc[depth]),
             len(top1))
        )  # fmt: skip
    return pd.DataFrame(rows, columns=["prompt", "pos", "final_id", "final", "depth", "n_layers"])
