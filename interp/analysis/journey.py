"""The token journey: one position followed through every layer to the sampling boundary.

Each layer row says how big the position's residual stream is after the layer, what the layer
wrote into it, where its heads read from, which experts it visited (MoE) and what the logit lens
guesses at that point. The last row is the boundary: the model's distribution over the next token
and the token that was actually chosen (sampled when the trace generated, else the prompt's next).
"""

from __future__ import annotations

import pandas as pd
import torch

from interp.analysis.streams import mixing_gain
from interp.errors import InterpError
from interp.text import show_token, token_texts

SOURCES = 3  # prompt tokens listed per layer
CANDIDATES = 5  # next-token candidates listed at the boundary


def _attention_rows(record, pos: int) -> torch.Tensor:
    """[L, T]: attention weights of query `pos` over keys, averaged over heads."""
    t = record.tensors
    if pos in record.query_positions and "query_rows" in t:
        rows = t["query_rows"][:, :, record.query_positions.index(pos)]
    elif "patterns" in t:
        rows = t["patterns"][:, :, pos]
    elif "top_weights" in t:
        # Streaming capture keeps only each head's top sources: the rest count as zero.
        weights, keys = t["top_weights"][:, :, pos], t["top_keys"][:, :, pos]
        rows = torch.zeros(*weights.shape[:2], len(record.ids))
        rows.scatter_add_(-1, keys.clamp_min(0), weights * (keys >= 0))
    else:
        raise InterpError("the journey needs a trace captured with 'attention'")
    return rows[..., : pos + 1].mean(dim=1)


def _expert_cells(trace, prompt: int, pos: int) -> dict[int, str]:
    routing = trace.routing
    if routing.empty:
        return {}
    chosen = routing[(routing["prompt"] == prompt) & (routing["pos"] == pos) & routing["selected"]]
    return {
        layer: " ".join(
            f"{'S' if shared else 'E'}{e}:{w:.2f}"
            for e, w, shared in zip(g["expert"], g["weight"], g["shared"])
        )
        for layer, g in chosen.sort_values("rank").groupby("layer")
    }


def _boundary(
    trace, prompt: int, pos: int, probs: torch.Tensor
) -> tuple[str, str, str, float, bool]:
    """(candidates, top candidate, chosen token, its probability, whether it was sampled) for
    the step after `pos`."""
    sampling = trace.sampling
    if not sampling.empty:
        step = sampling[(sampling["prompt"] == prompt) & (sampling["pos"] == pos + 1)]
        if not step.empty:
            top = step.sort_values("rank").head(CANDIDATES)
            cells = [
                f"{show_token(t)} {p:.3f} (s {s:.3f})"
                for t, p, s in zip(top["token"], top["prob"], top["sample_prob"])
            ]
            chosen = step[step["chosen"]].iloc[0]
            top1 = show_token(top["token"].iloc[0])
            return " | ".join(cells), top1, show_token(chosen["token"]), float(chosen["prob"]), True
    # No sampling step here: the model's distribution, and the token that followed in the text.
    top = probs.topk(CANDIDATES)
    texts = token_texts(trace.tokenizer, top.indices.tolist())
    cells = [f"{show_token(t)} {p:.3f}" for t, p in zip(texts, top.values.tolist())]
    ids = trace.records[prompt].ids
    if pos + 1 >= len(ids):
        return " | ".join(cells), show_token(texts[0]), "", float("nan"), False
    nxt = int(ids[pos + 1])
    chosen = show_token(token_texts(trace.tokenizer, [nxt])[0])
    return " | ".join(cells), show_token(texts[0]), chosen, float(probs[nxt]), False


def _mixing_gains(trace, prompt: int, pos: int) -> dict[int, float]:
    """layer -> the gain of the streams' mixing composed up to the end of that layer."""
    hc = trace.hc
    gain = mixing_gain(hc[(hc["prompt"] == prompt) & (hc["pos"] == pos)])
    return dict(zip(gain.query("block == 'mlp'").layer, gain.query("block == 'mlp'").gain))


def journey(trace, prompt: int = 0, position: int | None = None) -> pd.DataFrame:
    """One row per layer (stage "layer") and a last row (stage "boundary") for `position`
    (default: the last prompt position) of a live trace captured with residual and attention.

    Columns: kind the layer's sub-blocks ("attention+mlp", "mamba2", ...: ModelFacts.layer_kinds),
    resid_norm |x| after the layer, attn_write / mlp_write (and mamba_write in a model with
    Mamba layers) the norms of its writes,
    sources the prompt tokens its heads draw most from (weight averaged over heads), experts
    the MoE experts it visited with their weights (no sources in a layer without attention),
    lens the logit lens's top-3 after the layer
    (top1 / top1_prob for the first). At the boundary lens holds the next-token candidates (as
    "token prob", plus "(s sample_prob)" when the step was sampled: sampled is True) and chosen
    the token that came next, with its probability chosen_prob.

    Several streams (DeepSeek-V4's mHC): resid_norm is over all streams together, the lens
    reads them through the model's own head (it collapses them first), attn_write / mlp_write
    are the norms of the sub-block outputs (before post spreads them over the streams), and
    two more columns: streams (each stream's norm after the layer) and mix_gain (the gain of
    the comb matrices composed so far, interp.analysis.streams).
    """
    if trace.readout is None:
        raise InterpError("the journey needs a live trace (a saved one has no readout)")
    record = trace.records[prompt]
    n = len(record.ids)
    position = record.n_prompt - 1 if position is None else position
    if not 0 <= position < n:
        raise InterpError(f"position {position} is outside the traced positions [0, {n - 1}]")
    resid = trace.tensor("resid", prompt)[:, position]
    with torch.no_grad():
        lens = trace.readout(resid).double().softmax(-1)  # [L+1, vocab]
    attn = trace.tensor("attn_out", prompt)[:, position].norm(dim=-1)
    mlp = trace.tensor("mlp_out", prompt)[:, position].norm(dim=-1)
    mamba = (
        trace.tensor("mamba_out", prompt)[:, position].norm(dim=-1)
        if "mamba_out" in record.tensors else None
    )  # fmt: skip
    kinds = trace.facts.layer_kinds or [("attention", "mlp")] * len(attn)
    attention = _attention_rows(record, position)
    experts = _expert_cells(trace, prompt, position)
    texts = token_texts(trace.tokenizer, record.ids.tolist())
    token = show_token(texts[position])
    several = resid.ndim == 3  # [L+1 N d]: several streams (mHC)
    gains = _mixing_gains(trace, prompt, position) if several else {}

    rows = []
    for layer in range(len(attn)):
        weights, keys = attention[layer].topk(min(SOURCES, position + 1))
        sources = " | ".join(
            f"{show_token(texts[k])}@{k} {w:.2f}" for k, w in zip(keys.tolist(), weights.tolist())
        ) if any(k.endswith("attention") for k in kinds[layer]) else ""  # fmt: skip
        guesses = lens[layer + 1].topk(3)
        words = token_texts(trace.tokenizer, guesses.indices.tolist())
        rows.append({
            "stage": "layer", "layer": layer, "kind": "+".join(kinds[layer]),
            "resid_norm": float(resid[layer + 1].norm()),
            "attn_write": float(attn[layer]), "mlp_write": float(mlp[layer]),
            "sources": sources, "experts": experts.get(layer, ""),
            "lens": " | ".join(f"{show_token(w)} {p:.2f}" for w, p in zip(words, guesses.values)),
            "top1": show_token(words[0]), "top1_prob": float(guesses.values[0]), "chosen": "",
            "chosen_prob": float("nan"), "sampled": False,
        })  # fmt: skip
        if several:  # each stream's norm after the layer, and the mixing composed so far
            rows[-1]["streams"] = " ".join(f"{v:.1f}" for v in resid[layer + 1].norm(dim=-1))
            rows[-1]["mix_gain"] = gains.get(layer, float("nan"))
        if mamba is not None:
            rows[-1]["mamba_write"] = float(mamba[layer])
    candidates, top1, chosen, chosen_prob, sampled = _boundary(trace, prompt, position, lens[-1])
    rows.append({
        "stage": "boundary", "layer": len(attn), "kind": "", "resid_norm": float(resid[-1].norm()),
        "attn_write": float("nan"), "mlp_write": float("nan"), "sources": "", "experts": "",
        "lens": candidates, "top1": top1, "top1_prob": float(lens[-1].max()),
        "chosen": chosen, "chosen_prob": chosen_prob, "sampled": sampled,
    })  # fmt: skip
    frame = pd.DataFrame(rows)
    frame.insert(0, "prompt", prompt)
    frame.insert(1, "pos", position)
    frame.insert(2, "token", token)
    return frame


def _table(frame: pd.DataFrame) -> str:
    """Fixed-width columns: numbers right-aligned with one decimal, text left-aligned."""
    cells = {
        name: [f"{v:.1f}" if isinstance(v, float) else str(v) for v in frame[name]]
        for name in frame.columns
    }
    widths = {name: max(len(name), *map(len, col)) for name, col in cells.items()}
    numeric = {name: pd.api.types.is_numeric_dtype(frame[name]) for name in frame.columns}

    def line(values: dict[str, str]) -> str:
        parts = [
            v.rjust(widths[n]) if numeric[n] else v.ljust(widths[n]) for n, v in values.items()
        ]
        return "  ".join(parts).rstrip()

    header = line({name: name for name in frame.columns})
    rows = [line({name: cells[name][i] for name in frame.columns}) for i in range(len(frame))]
    return "\n".join([header, *rows])


def format_journey(frame: pd.DataFrame) -> str:
    """A readable terminal table of a `journey` frame."""
    first = frame.iloc[0]
    layers = frame[frame["stage"] == "layer"]
    boundary = frame[frame["stage"] == "boundary"].iloc[0]
    columns = {"layer": "layer", "resid_norm": "|x| after", "attn_write": "|attn|",
               "mlp_write": "|mlp|", "sources": "draws from (token@pos weight)",
               "experts": "experts", "lens": "logit lens top-3"}  # fmt: skip
    if not layers["experts"].astype(bool).any():
        del columns["experts"]
    if "streams" in frame.columns:  # several streams (mHC): each one's norm, the mixing gain
        columns.update(streams="|stream| each", mix_gain="mixing gain")
    if layers["kind"].nunique() > 1:  # a hybrid: say what each layer is
        columns = {"layer": "layer", "kind": "kind", **columns}
    if "mamba_write" in frame:  # after |mlp|
        items = list(columns.items())
        at = [k for k, _ in items].index("mlp_write") + 1
        columns = dict(items[:at] + [("mamba_write", "|mamba|")] + items[at:])
    chosen = boundary["chosen"] or "(none: the trace ends here)"
    prob = f" (p={boundary['chosen_prob']:.3f})" if boundary["chosen"] else ""
    # s: the probability under the sampling settings (1 for the greedy choice).
    legend = "p, s = p under the sampling settings" if boundary["sampled"] else "p"
    return "\n".join([
        f"token {first['token']!r} at position {first['pos']}, layer by layer",
        _table(layers[list(columns)].rename(columns=columns)),
        f"boundary: |x|={boundary['resid_norm']:.1f}, next-token candidates ({legend}):",
        f"  {boundary['lens']}",
        f"chosen: {chosen}{prob}",
    ])  # fmt: skip
