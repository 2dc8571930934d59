"""The prompt-key coverage section, from the frames `derived._coverage` computes with
`interp.analysis.coverage` (the numbers `interp coverage` prints for the same trace)."""

from __future__ import annotations

import pandas as pd

from interp.analysis.coverage import TAU, TOP_MIN, UNCOVERED_MAX
from interp.analysis.key_attribution import MOVES
from interp.plots import compare as figures
from interp.report.inputs import ReportInputs
from interp.report.parts import Pane, Section, Token, fmt, image, table
from interp.text import show_text, show_token

TOP_KEYS = 5  # most-read prompt tokens listed per prompt
SUMMARY = {  # summary column -> row name in the numbers table and the comparison summary
    "coverage": f"coverage: share of prompt keys read (peak >= {TAU:g}x uniform)",
    "effective_coverage": "effective coverage exp(H(mass)) / keys",
    "keys_90": "share of keys holding 90% of the mass",
    "sink_mass": "sink mass (attention to position 0, before renormalising)",
}
CAUSAL = {  # causal frame column -> shown as
    "blocked": "blocked",
    "n_keys": "keys",
    "keys": "positions",
    "delta": "delta log p (nats)",
    "delta_per_token": "per token",
    "greedy_when_blocked": "greedy continuation when blocked",
}


def coverage_section(inputs: ReportInputs) -> Section:
    section = Section(
        "coverage",
        "Prompt-key coverage",
        "Which prompt tokens carried the answer, then which the model looks up while it "
        "answers. First, key attribution: the log-probability of the continuation each prompt "
        "token supplies through attention, estimated for every token at once by attribution "
        "patching (gradient x the change in the attention weights when the answering positions "
        "may not read that token; one forward and one backward pass) and measured exactly by "
        "blocking each of the top tokens alone. Covered keys are those whose block moves the "
        f"continuation's log p by {MOVES:g} nats or more; the table says whether blocking "
        "them all changes the greedy answer. Then attention mass, a secondary view. The "
        "answering positions (the last prompt token and every generated token but the last) "
        "attend to the prompt; each "
        "prompt token's mass is the attention it gets, averaged over layers, heads (per query "
        "head) and answering positions, renormalised over the prompt without position 0, the "
        "attention sink, whose share is reported apart. Darker tokens get more mass (hover for "
        "the numbers); the continuation is underlined. Coverage is the share of prompt tokens "
        f"some head reads at {TAU:g}x the uniform level or more; effective coverage "
        "exp(entropy of the mass) / tokens is 1 when every token gets the same mass. Attention "
        "is not explanation, so a causal check backs it: the continuation's log-probability "
        "with the uncovered tokens blocked from the answering positions, and with as many "
        "top-mass tokens blocked. The coverage is trustworthy when the first changes little "
        f"(at most {UNCOVERED_MAX:g} nats per token) and the second much (down by "
        f"{TOP_MIN:g} or more).",
        scale=[Token(f"{x:g} x top", x, "", False) for x in (0.0, 0.25, 0.5, 0.75, 1.0)],
    )
    summary = inputs.derived("coverage")
    if summary is None:
        section.notes.append(f"Not available for this report: {inputs.reason('coverage')}.")
        return section
    keys, layers = inputs.derived("coverage_keys"), inputs.derived("coverage_layers")
    causal = inputs.derived("coverage_causal")
    if causal is None:
        section.notes.append(f"Causal check: not available: {inputs.reason('coverage_causal')}.")
    if layers is not None:
        section.images.append(image(figures.coverage_by_layer(layers, inputs.labels),
                                    "prompt-key coverage by layer"))  # fmt: skip
    tokens = inputs.frame("tokens")
    attribution = inputs.derived("key_attribution")
    att_summary = inputs.derived("key_attribution_summary")
    if attribution is None or att_summary is None:
        section.notes.append(f"Key attribution: not available: {inputs.reason('key_attribution')}.")
    measures: dict[str, list] = {}
    for p, prompt in enumerate(inputs.prompts):
        row = summary[summary["prompt"] == p].iloc[0]
        own = keys[keys["prompt"] == p]
        checks = causal[causal["prompt"] == p] if causal is not None else None
        pane = _pane(prompt.label, row, own, tokens[tokens["prompt"] == p], checks)
        if attribution is not None and att_summary is not None:
            headline = att_summary[att_summary["prompt"] == p].iloc[0]
            _attribution(pane, attribution[attribution["prompt"] == p], headline, measures)
        section.panes.append(pane)
        top = own.loc[own["mass"].idxmax()]
        values = {name: row[col] for col, name in SUMMARY.items()}
        values["most read prompt token"] = f"{show_token(top['token'])} @{top['pos']}"
        values["its mass"] = top["mass"]
        if checks is not None:
            per = checks.set_index("blocked")["delta_per_token"]
            values["log p change, uncovered blocked (nats/token)"] = per.get("uncovered")
            values["log p change, top keys blocked (nats/token)"] = per.get("top")
            values["coverage verdict"] = verdict(checks)
        for name, value in values.items():
            measures.setdefault(name, []).append(value)
    section.measures = measures
    return section


def _attribution(pane: Pane, keys: pd.DataFrame, row, measures: dict[str, list]) -> None:
    """The headline, first in the pane: the top keys by attribution with their exact blocks."""
    top = keys.dropna(subset=["rank"]).sort_values("rank").head(TOP_KEYS)
    top = top.assign(token=top["token"].map(show_token))
    shown = top[["rank", "pos", "token", "attribution", "exact", "covered"]].rename(
        columns={"attribution": "attribution (nats)", "exact": "blocked alone (nats)"}
    )
    pane.tables.insert(0, table(shown, "key attribution: log p each prompt token supplies"))
    covered = keys[keys["covered"]]
    names = " ".join(f"{show_token(t)}@{p}" for p, t in zip(covered["pos"], covered["token"]))
    pane.notes.insert(0, (
        f"Key attribution vs blocking each of {row['checked']} tokens alone: Spearman "
        f"{fmt(row['spearman'])}. Covered keys: {names or 'none'}; blocking them all takes the "
        f"continuation's log p from {fmt(row['baseline'])} to {fmt(row['blocked_logprob'])} "
        f"nats, greedy {row['greedy_when_blocked']!r} for {row['continuation']!r}."))  # fmt: skip
    first = top.iloc[0] if len(top) else None
    values = {
        "top key by attribution": f"{show_token(first['token'])} @{first['pos']}"
        if first is not None
        else None,
        "covered keys (blocking moves the answer)": int(row["covered"]),
        "Spearman, attribution vs blocking": row["spearman"],
        "blocking covered keys changes the answer": bool(row["flipped"]),
    }
    for name, value in values.items():
        measures.setdefault(name, []).append(value)


def verdict(checks: pd.DataFrame) -> str:
    """The verdict `interp coverage` prints, from one prompt's causal-check rows."""
    if checks.set_index("blocked").loc["uncovered", "n_keys"] == 0:
        return "untested"
    return "trustworthy" if bool(checks["trustworthy"].iloc[0]) else "not trustworthy"


def _pane(label: str, row, keys: pd.DataFrame, tokens: pd.DataFrame, checks) -> Pane:
    pane = Pane(label, tokens=_shaded(keys, tokens))
    numbers = [(name, row[col]) for col, name in SUMMARY.items()]
    numbers += [
        ("prompt keys (without the sink)", int(row["keys"])),
        ("answering positions (queries)", int(row["queries"])),
        ("share of attention on the prompt keys", row["prompt_mass"]),
    ]
    pane.tables.append(table(pd.DataFrame(numbers, columns=["measure", "value"]), "coverage"))
    top = keys[~keys["sink"]].nlargest(TOP_KEYS, "mass")
    top = top.assign(token=top["token"].map(show_token))[["pos", "token", "mass", "peak"]]
    pane.tables.append(table(top.rename(columns={"peak": "peak (x uniform)"}),
                             "most read prompt tokens"))  # fmt: skip
    if checks is None:
        return pane
    first = checks.iloc[0]
    pane.notes.append(f"Continuation checked: {first['continuation']!r}.")
    shown = checks[list(CAUSAL)].rename(columns=CAUSAL)
    greedy = zip(checks["greedy_when_blocked"], checks["n_keys"])
    shown[CAUSAL["greedy_when_blocked"]] = [repr(t) if n else t for t, n in greedy]
    caption = f"causal check: continuation log p {fmt(first['baseline'])} nats unblocked"
    pane.tables.append(table(shown, caption))
    pane.notes.append(_verdict_note(checks))
    return pane


def _verdict_note(checks: pd.DataFrame) -> str:
    per = checks.set_index("blocked")["delta_per_token"]
    found = verdict(checks)
    if found == "untested":
        return "Coverage is untested: every key is covered, so there is nothing to block."
    return (
        f"Coverage is {found}: blocking the uncovered keys moves log p by "
        f"{fmt(per['uncovered'])} nats per token (needs at most {UNCOVERED_MAX:g} either way), "
        f"blocking as many top keys by {fmt(per['top'])} (needs -{TOP_MIN:g} or less)."
    )


def _shaded(keys: pd.DataFrame, tokens: pd.DataFrame) -> list[Token]:
    """The prompt shaded by mass (relative to its most read token), then the continuation."""
    top = keys["mass"].max()
    out = []
    for k in keys.itertuples():
        if k.sink:
            title = f"pos {k.pos} | sink: its share is the sink mass ({k.attention:.3g})"
            out.append(Token(show_text(k.token), 0.0, title, False))
            continue
        state = "read" if k.covered else "not read"
        title = f"pos {k.pos} | mass {k.mass:.3g} | peak {k.peak:.3g}x uniform ({state})"
        out.append(Token(show_text(k.token), float(k.mass / top), title, False))
    for t in tokens[tokens["generated"]].itertuples():
        out.append(Token(show_text(t.token), 0.0, f"pos {t.pos} | generated", True))
    return out
