"""The prompt-key coverage section, from the frames `derived._coverage` computes with
`interp.analysis.coverage` (the numbers `interp coverage` prints for the same trace)."""

from __future__ import annotations

import pandas as pd

from interp.analysis.coverage import TAU, TOP_MIN, UNCOVERED_MAX
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
        "Which prompt tokens the model looks up while it answers. The answering positions (the "
        "last prompt token and every generated token but the last) attend to the prompt; each "
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
    measures: dict[str, list] = {}
    for p, prompt in enumerate(inputs.prompts):
        row = summary[summary["prompt"] == p].iloc[0]
        own = keys[keys["prompt"] == p]
        checks = causal[causal["prompt"] == p] if causal is not None else None
        section.panes.append(_pane(prompt.label, row, own, tokens[tokens["prompt"] == p], checks))
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
