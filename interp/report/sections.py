"""Report sections: each a function from `ReportInputs` to a `Section` (heading, plain
explanation, figures, the numbers behind them, per-prompt panes, and `measures` for the
comparison summary). `SECTIONS` is their order in the report; the summary comes last.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pandas as pd

from interp.plots import compare as figures
from interp.plots.memory import memory_by_kind
from interp.report.attention import attention_section
from interp.report.coverage import coverage_section
from interp.report.experts import experts_section
from interp.report.features import features_section
from interp.report.inputs import ReportInputs
from interp.report.parts import Pane, Section, Token, fmt, image, table
from interp.report.patching import contributions_section, patching_section
from interp.report.stream import journey_section, residual_section
from interp.text import show_text, show_token
from interp.trace.kv_cache import kv_cache_bytes
from interp.trace.memory import formula, layer_memory

CANDIDATES = 5  # next-token candidates shown per prompt


def model_section(inputs: ReportInputs) -> Section:
    cfg = inputs.facts
    held, mha = kv_cache_bytes(cfg, 1)
    experts = (
        f"{cfg.n_experts} per MoE layer, top-{cfg.top_k}, in {len(cfg.moe_layers)} "
        f"of {cfg.n_layers} layers"
        if cfg.moe_layers
        else "none (dense MLP in every layer)"
    )
    facts = pd.DataFrame(
        [
            ("model", inputs.meta.get("model", "?")),
            ("layers", cfg.n_layers),
            ("attention heads (query)", cfg.n_heads),
            ("KV heads", cfg.n_key_value_heads),
            ("d_head", cfg.d_head),
            ("d_model", cfg.d_model),
            ("vocabulary", cfg.d_vocab),
            ("context", cfg.n_ctx),
            ("experts", experts),
            ("KV cache bytes per token (float32)", held),
            ("... with one KV head per query head (MHA)", mha),
            ("GQA saving", f"{mha / held:.3g}x smaller ({1 - held / mha:.0%} less)"),
        ],
        columns=["property", "value"],
    )
    longest = int(inputs.frame("tokens").groupby("prompt").size().max())
    positions = np.arange(1, max(longest, 2) + 1)
    # Per token count: a Mamba state's bytes do not grow, so each count has its own total.
    totals = [kv_cache_bytes(cfg, int(n)) for n in positions]
    curves = pd.DataFrame({"positions": positions, "bytes": [t[0] for t in totals],
                           "mha_bytes": [t[1] for t in totals]})  # fmt: skip
    kv = inputs.frame("kv_cache")
    last = kv.groupby("prompt").tail(1) if not kv.empty else kv
    section = Section(
        "model",
        "The model",
        "Its size, and the memory its KV cache needs: every layer keeps a key and a value "
        "vector per KV head for each position seen. Grouped-query attention (GQA) shares each "
        "KV head between several query heads, which divides that memory.",
        images=[image(figures.kv_bytes(curves, kv), "KV cache bytes against positions")],
        tables=[table(facts, "model facts")],
    )
    if len({kind for _, kind, _ in layer_memory(cfg)}) > 1:  # several kinds of memory
        section.images.append(image(_memory_figure(inputs, positions), "memory per kind"))
    if not last.empty:
        measured = last[["prompt", "positions", "bytes", "mha_bytes", "measured_bytes"]]
        measured = measured.assign(prompt=[inputs.labels[p] for p in measured["prompt"]])
        section.tables.append(table(measured, "KV cache after the last generated token"))
        section.measures["KV cache at the end (bytes)"] = _per_prompt(
            inputs, last.set_index("prompt")["measured_bytes"]
        )
    return section


def _memory_figure(inputs: ReportInputs, positions):
    cfg = inputs.facts
    rows = [{"tokens": int(n), "kind": kind, "bytes": formula(cfg, kind, int(n), sub)["bytes"]}
            for n in positions for _, kind, sub in layer_memory(cfg)]  # fmt: skip
    curves = pd.DataFrame(rows).groupby(["kind", "tokens"], sort=False).bytes.sum().reset_index()
    memory = inputs.frame("memory")
    if memory.empty:
        return memory_by_kind(curves, pd.DataFrame(columns=["tokens", "kind", "measured_bytes"]))
    tokens = inputs.frame("tokens")
    n_prompt = tokens[~tokens["generated"]].groupby("prompt").size()
    memory = memory.assign(tokens=memory["prompt"].map(n_prompt) + memory["step"])
    measured = memory.groupby(["prompt", "tokens", "kind"]).measured_bytes.sum().reset_index()
    return memory_by_kind(curves, measured)


def text_section(inputs: ReportInputs) -> Section:
    tokens = inputs.frame("tokens")
    sampling = inputs.frame("sampling")
    section = Section(
        "text",
        "The text",
        "Each prompt and its continuation, token by token. The darker a token, the more "
        "probable the model found it given everything before it (hover for the numbers); "
        "generated tokens are underlined. The first token has no prefix, so no probability.",
        images=[image(figures.token_probs(tokens, inputs.labels), "probability of each token")],
        scale=[Token(f"p = {p:g}", p, "", False) for p in (0.0, 0.25, 0.5, 0.75, 1.0)],
    )
    measures: dict[str, list] = {}
    for p, prompt in enumerate(inputs.prompts):
        rows = tokens[tokens["prompt"] == p]
        pane = Pane(prompt.label, tokens=[_token(r) for r in rows.itertuples()])
        if not sampling.empty:  # only generation records candidates
            first_step = sampling[(sampling["prompt"] == p) & (sampling["step"] == 1)]
            top = first_step.nsmallest(CANDIDATES, "rank")[["rank", "token", "prob", "chosen"]]
            top = top.assign(token=top["token"].map(show_token))
            pane.tables.append(table(top, "candidates for the first generated token"))
        section.panes.append(pane)
        gen = rows[rows["generated"]]
        first = gen.iloc[0] if len(gen) else None
        for name, value in [
            ("prompt tokens", int((~rows["generated"]).sum())),
            ("generated tokens", len(gen)),
            ("continuation", prompt.continuation if len(gen) else "-"),
            ("mean log p, prompt (nats)", rows.loc[~rows["generated"], "logprob"].mean()),
            ("mean log p, continuation (nats)", gen["logprob"].mean() if len(gen) else None),
            ("first generated token", show_token(first.token) if first is not None else "-"),
            ("p(first generated token)", np.exp(first.logprob) if first is not None else None),
            ("entropy before it (nats)", first.entropy if first is not None else None),
        ]:
            measures.setdefault(name, []).append(value)
    section.measures = measures
    return section


def shapes_section(inputs: ReportInputs) -> Section:
    shapes = inputs.frame("shapes")
    section = Section(
        "shapes",
        "The shape journey of one block",
        "The tensors one transformer block passes along, in the order its hooks fire, for the "
        "first forward pass of the first prompt: [batch, positions, ...]. The bars show how "
        "many numbers each position carries at that point: heads split d_model, the MLP "
        "widens it and narrows it back.",
    )
    if shapes.empty:
        section.notes.append("Shapes were not captured in this trace.")
        return section
    shapes = shapes.assign(
        per_token=[_per_token(list(s), d) for s, d in zip(shapes["shape"], shapes["dims"])],
        shape=["[" + ", ".join(map(str, s)) + "]" for s in shapes["shape"]],
    )
    section.images.append(image(figures.shape_journey(shapes), "numbers per token at each hook"))
    section.tables.append(table(shapes, "hook shapes", collapsed=True))
    return section


def summary_section(inputs: ReportInputs, sections: list[Section]) -> Section:
    """One row per measure, one column per prompt; rows whose values differ are marked."""
    rows, differs = [], []
    for s in sections:
        for name, values in s.measures.items():
            rows.append([name, *values])
            differs.append(_differs(values))
    section = Section(
        "summary",
        "Comparison summary",
        "The measures of the sections above side by side, one column per prompt. "
        + ("Highlighted rows differ between the prompts (numbers: by more than 10% and 0.01)."
           if len(inputs.prompts) > 1 else "With one prompt there is nothing to compare."),
    )  # fmt: skip
    frame = pd.DataFrame(rows, columns=["measure", *inputs.labels])
    compare = len(inputs.labels) > 1
    section.tables.append(table(frame, "summary", differs=differs if compare else None))
    return section


def _per_token(shape: list[int], dims: str) -> int:
    """Numbers per position: all elements over batch x positions (queries, for patterns)."""
    names = [d.strip() for d in dims.split(",")]
    per_row = [shape[names.index(n)] for n in ("batch", "pos", "query_pos") if n in names]
    return int(np.prod(shape) // max(int(np.prod(per_row)), 1))


def _differs(values: list) -> bool:
    numbers = [v for v in values if isinstance(v, int | float | np.number) and not pd.isna(v)]
    if len(numbers) == len(values) and numbers:
        spread = max(numbers) - min(numbers)
        # Relative, with an absolute floor so values near 0 (a cosine, a probability) do not
        # count as different over noise.
        return bool(spread > max(0.1 * max(abs(v) for v in numbers), 0.01))
    return len({fmt(v) for v in values}) > 1


def _per_prompt(inputs: ReportInputs, series: pd.Series) -> list:
    return [series.get(p) for p in range(len(inputs.prompts))]


def _token(row) -> Token:
    prob = float(np.exp(row.logprob)) if not pd.isna(row.logprob) else None
    title = f"id {row.token_id}" + (
        f" | p = {prob:.3g} | entropy before {row.entropy:.3g} nats" if prob is not None else ""
    )
    return Token(show_text(row.token), prob or 0.0, title, bool(row.generated))


SECTIONS: list[Callable[[ReportInputs], Section]] = [
    model_section,
    text_section,
    journey_section,
    residual_section,
    attention_section,
    coverage_section,
    contributions_section,
    patching_section,
    experts_section,
    features_section,
    shapes_section,
]
