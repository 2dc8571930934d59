"""The feature view's data: a prompt's top features per token (from the trace's `features`
frame), and, given a saved survey with features, each shown feature's top contexts, its
density and the density histogram. Plain lists: a prompt's top-k per token is small, and
contexts are kept only for the features the prompt shows."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from interp.errors import InterpError
from interp.text import show_text

CONTEXTS_SHOWN = 5  # top contexts per feature in the page


def features(trace, prompt: int, survey=None) -> dict:
    """`survey`: a saved survey directory (or a loaded `Survey`) counted with the same
    dictionaries, for the contexts and the densities; by default the one the trace's meta
    names (`feature_survey`, set by `interp report --feature-survey`)."""
    from interp.report.views.data import _record, tokens

    _record(trace, prompt)
    meta = trace.meta.get("features", [])
    if not meta:
        raise InterpError("the feature view needs a trace made with features=[...]")
    frame = trace.features
    errors = trace.feature_error
    frame, errors = frame[frame["prompt"] == prompt], errors[errors["prompt"] == prompt]
    survey = _survey(survey if survey is not None else trace.meta.get("feature_survey"))
    out = []
    for d in meta:
        rows = frame[frame["dictionary"] == d["name"]]
        n = int(errors["pos"].max()) + 1
        per_pos = [[] for _ in range(n)]
        for pos, feature, act in zip(rows["pos"], rows["feature"], rows["activation"]):
            per_pos[int(pos)].append([int(feature), round(float(act), 4)])
        err = errors[errors["dictionary"] == d["name"]].sort_values("pos")
        entry = {"name": d["name"], "hook": d["hook"], "top": per_pos,
                 "relative_error": [None if np.isnan(v) else round(float(v), 4)
                                    for v in err["relative"]],
                 "l0": err["l0"].astype(int).tolist()}  # fmt: skip
        if survey is not None:
            entry.update(_from_survey(survey, d["name"], set(rows["feature"].astype(int))))
        out.append(entry)
    return {**tokens(trace, prompt), "dictionaries": out}


def _survey(survey):
    if survey is None or not isinstance(survey, str | Path):
        return survey
    from interp.survey.output import Survey

    loaded = Survey.load(survey)
    if "feature_contexts" not in loaded.tables:
        raise InterpError(f"{survey} is a survey without features (run it with --features)")
    return loaded


def _from_survey(survey, name: str, shown: set[int]) -> dict:
    table = survey.features[survey.features["dictionary"] == name]
    if table.empty:
        return {}
    contexts = survey.feature_contexts
    contexts = contexts[(contexts["dictionary"] == name) & contexts["feature"].isin(shown)
                        & (contexts["rank"] < CONTEXTS_SHOWN)]  # fmt: skip
    per_feature: dict[str, list] = {}
    for row in contexts.sort_values(["feature", "rank"]).itertuples():
        per_feature.setdefault(str(int(row.feature)), []).append({
            "tokens": [show_text(t) for t in row.context],
            "acts": [round(float(a), 4) for a in row.context_activation],
            "focus": int(row.focus), "activation": round(float(row.activation), 4),
        })  # fmt: skip
    density = table.set_index("feature")["density"]
    hist = survey.feature_density
    hist = hist[hist["dictionary"] == name]
    summary = survey.feature_summary.set_index("dictionary").loc[name]
    return {
        "contexts": per_feature,
        "density": {str(f): float(density[f]) for f in shown if f in density.index},
        "histogram": [[float(lo), float(hi), int(c)]
                      for lo, hi, c in zip(hist["low"], hist["high"], hist["features"])],
        "dead_fraction": float(summary["dead_fraction"]),
        "dense_fraction": float(summary["dense_fraction"]),
        "survey_tokens": int(summary["tokens"]),
    }  # fmt: skip
