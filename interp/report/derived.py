"""Analysis frames a report needs beyond the trace's own frames, computed while tensors exist.

`derive(trace, model)` returns {name: frame, or a one-line reason it is missing}. A live trace
computes them here; a saved trace only has what `save_derived` stored next to it (as
`report_<name>.parquet`, which `Trace.load` reads back as frames), since a saved trace keeps
no tensors. Each analysis lives in `interp.analysis`; this module only calls it.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from interp.errors import InterpError
from interp.trace import Trace

SAVED_PREFIX = "report_"

# The induction probe, smaller than `interp induction`'s defaults so a report stays quick.
PROBE_BATCH, PROBE_LEN, PROBE_SEED, TOP_HEADS = 4, 20, 0, 5


class Unavailable(Exception):
    """An analysis that cannot run on this trace; the message is shown in the report."""


def _induction(trace: Trace, model) -> dict[str, pd.DataFrame]:
    """Per head: induction / previous-token / duplicate / copying scores on a repeated random
    probe, and whether the head counts as an induction head, by `interp induction`'s rule: a high
    score AND ablating the head alone hurts the repeat more than random heads do."""
    from interp.runs.induction import induction_heads

    if model is None:
        raise Unavailable("the induction probe runs the model: pass model= (the CLI does)")
    result = induction_heads(
        model, seq_len=PROBE_LEN, batch=PROBE_BATCH, seed=PROBE_SEED, top=TOP_HEADS
    )
    verdicts = result["heads"][["layer", "head", "ablation_delta", "induction_head"]]
    scores = result["scores"].merge(verdicts, on=["layer", "head"], how="left")
    scores["induction_head"] = scores["induction_head"].eq(True)
    return {"induction": scores, "induction_ablation": result["ablation"]}


def _deltas(trace: Trace, model) -> dict[str, pd.DataFrame]:
    """Per layer and position: write sizes relative to the stream, cos(x_l, x_l+1), growth."""
    from interp.analysis import deltas

    frames = [deltas.deltas(trace, p) for p in range(len(trace.records))]
    return {"deltas": pd.concat(frames, ignore_index=True)}


def _lens(trace: Trace, model) -> dict[str, pd.DataFrame]:
    """Per prompt, layer and position: the logit lens of the stream (see analysis.lens)."""
    from interp.analysis import lens

    frames = [lens.logit_lens(trace, p, k=1)[1] for p in range(len(trace.records))]
    return {"lens": pd.concat(frames, ignore_index=True)}


def _journey(trace: Trace, model) -> dict[str, pd.DataFrame]:
    """Per prompt, its last prompt position followed layer by layer (see analysis.journey)."""
    from interp.analysis.journey import journey

    frames = [journey(trace, p) for p in range(len(trace.records))]
    return {"journey": pd.concat(frames, ignore_index=True)}


def _views(trace: Trace, model) -> dict[str, pd.DataFrame]:
    """Per prompt, the data of each interactive view (see interp.report.views)."""
    from interp.report.views.embed import view_frame

    return {"views": view_frame(trace)}


def _coverage(trace: Trace, model) -> dict[str, pd.DataFrame | str]:
    """Prompt-key coverage of every prompt from the trace's attention rows, and the causal
    check as `interp coverage` runs it (`interp.runs.coverage`)."""
    from interp.runs.coverage import attribute_trace, check_trace

    if trace.query_attention.empty:
        raise Unavailable("attention was not captured in this trace")
    cov, checks = check_trace(trace, model)
    needs_model = "the causal check runs the model: pass model= (the CLI does)"
    keys, summary = attribute_trace(trace, model) if model is not None else (needs_model,) * 2
    out: dict[str, pd.DataFrame | str] = {
        "coverage": cov.summary, "coverage_keys": cov.keys, "coverage_layers": cov.layers,
        "coverage_causal": checks if checks is not None else needs_model,
        "key_attribution": keys, "key_attribution_summary": summary,
    }  # fmt: skip
    return out


NO_HEADS = (
    "the contribution graph splits attention by head (hook_z, W_O); this model's bridge has "
    "no per-head outputs (Nemotron-H's mixers)"
)


def _contributions(trace: Trace, model) -> dict[str, pd.DataFrame]:
    """Per prompt, the contribution graph at the position that predicts the next token (on
    the collapsed stream each sub-block reads, for a model with several streams)."""
    from interp.analysis.contributions import contributions, stream_contributions

    if (
        trace.records
        and "resid" in trace.records[0].tensors
        and "z" not in trace.records[0].tensors
    ):
        raise Unavailable(NO_HEADS)
    if not trace.weights:
        raise Unavailable("the contribution graph needs the model's W_O: pass model=")
    frames = []
    for p, record in enumerate(trace.records):
        t = record.tensors
        if "z" not in t:
            raise Unavailable("the residual stream was not captured in this trace")
        if "hc_head" in t:  # DeepSeek-V4's streams
            frames.append(stream_contributions(t, trace.weights["W_O"], pos=-1, prompt=p))
            continue
        frames.append(contributions(t["resid"], t["attn_out"], t["mlp_out"], t["z"],
                                    trace.weights["W_O"], pos=-1, prompt=p))  # fmt: skip
    return {"contributions": pd.concat(frames, ignore_index=True)}


def _patching(trace: Trace, model) -> dict[str, pd.DataFrame]:
    """Activation and attribution patching from the first prompt (clean) into the second
    (corrupted), when the trace's meta names the answer (`interp report --patch`)."""
    from interp.runs.patching import patching

    asked = trace.meta.get("patch")
    if not asked:
        raise Unavailable("no patching asked for (interp report --patch ANSWER [WRONG])")
    if model is None:
        raise Unavailable("patching runs the model: pass model= (the CLI does)")
    if len(trace.records) < 2:
        raise Unavailable("patching needs two prompts: the clean one, then the corrupted one")
    clean, corrupt = (record.ids[: record.n_prompt] for record in trace.records[:2])
    result = patching(model, clean, corrupt, asked["answer"], asked.get("wrong"))
    frames = [frame.assign(grid=grid) for grid, frame in result.frames.items()]
    summary = pd.DataFrame([{"metric": result.metric, "clean": result.clean,
                             "corrupt": result.corrupt, **{f"seconds_{k}": v for k, v in
                                                           result.seconds.items()}}])  # fmt: skip
    return {"patching": pd.concat(frames, ignore_index=True), "patching_summary": summary}


@dataclass(frozen=True)
class Analysis:
    names: tuple[str, ...]  # the frames it returns
    run: Callable[[Trace, object], dict[str, pd.DataFrame | str]]
    per_prompt: bool  # False: a property of the model, computed once per report


ANALYSES = [
    Analysis(("deltas",), _deltas, per_prompt=True),
    Analysis(("lens",), _lens, per_prompt=True),
    Analysis(("journey",), _journey, per_prompt=True),
    Analysis(("views",), _views, per_prompt=True),
    Analysis(
        (
            "coverage",
            "coverage_keys",
            "coverage_layers",
            "coverage_causal",
            "key_attribution",
            "key_attribution_summary",
        ),
        _coverage,
        per_prompt=True,
    ),  # fmt: skip
    Analysis(("contributions",), _contributions, per_prompt=True),
    Analysis(("patching", "patching_summary"), _patching, per_prompt=False),
    Analysis(("induction", "induction_ablation"), _induction, per_prompt=False),
]


def derive(
    trace: Trace,
    model=None,
    model_level: bool = True,
    step: Callable[[str], None] = lambda name: None,
) -> dict[str, pd.DataFrame | str]:
    """The analyses for `trace` (model-level ones only if `model_level`): name -> frame, or
    the one-line reason it is missing. `step(name)` is called as each analysis starts."""
    out: dict[str, pd.DataFrame | str] = {}
    for analysis in ANALYSES:
        step(analysis.names[0])
        if not (analysis.per_prompt or model_level):
            continue
        if not trace.records:
            out.update({name: _saved(trace, name) for name in analysis.names})
            continue
        try:
            out.update(analysis.run(trace, model))
        except (Unavailable, InterpError) as exc:  # InterpError: a tensor was not captured
            out.update(dict.fromkeys(analysis.names, str(exc)))
        except Exception as exc:  # a report with a note beats no report at all
            print(f"interp: warning: {analysis.names[0]} failed: {exc!r}", file=sys.stderr)
            out.update(dict.fromkeys(analysis.names, f"it failed: {exc!r}"))
    return out


def _saved(trace: Trace, name: str) -> pd.DataFrame | str:
    note = trace.meta.get("report_notes", {}).get(name)
    if note is not None:  # the reason the live report gave
        return note
    try:
        return trace.frame(SAVED_PREFIX + name)
    except InterpError:
        return "not saved with this trace (save it with build_report(..., save=DIR))"


def save_derived(trace: Trace, derived: dict, directory: str | Path) -> Path:
    """`trace.save(directory)` plus the frames `derive` returned for it, so a report can be
    rebuilt from disk without the model (`build_report(Trace.load(directory), ...)`); the
    reasons given for the missing ones are kept in its meta as report_notes."""
    trace.meta["report_notes"] = {n: v for n, v in derived.items() if isinstance(v, str)}
    directory = trace.save(directory)
    for name, frame in derived.items():
        if isinstance(frame, pd.DataFrame):
            try:
                frame.to_parquet(directory / f"{SAVED_PREFIX}{name}.parquet", index=False)
            except OSError as exc:
                raise InterpError(f"cannot write to {directory}: {exc.strerror}") from None
    return directory


def save_trace(trace: Trace, directory: str | Path, model=None) -> Path:
    """Derive and save without writing a report; `build_report(..., save=DIR)` saves the frames
    it already derived instead of running the analyses (the induction probe included) again."""
    return save_derived(trace, derive(trace, model), directory)
