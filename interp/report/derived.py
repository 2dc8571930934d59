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


def _coverage(trace: Trace, model) -> dict[str, pd.DataFrame | str]:
    """Prompt-key coverage of every prompt from the trace's attention rows, and the causal
    check as `interp coverage` runs it (`interp.runs.coverage`)."""
    from interp.runs.coverage import check_trace

    if trace.query_attention.empty:
        raise Unavailable("attention was not captured in this trace")
    cov, checks = check_trace(trace, model)
    out: dict[str, pd.DataFrame | str] = {
        "coverage": cov.summary, "coverage_keys": cov.keys, "coverage_layers": cov.layers,
        "coverage_causal": checks if checks is not None
        else "the causal check runs the model: pass model= (the CLI does)",
    }  # fmt: skip
    return out


@dataclass(frozen=True)
class Analysis:
    names: tuple[str, ...]  # the frames it returns
    run: Callable[[Trace, object], dict[str, pd.DataFrame | str]]
    per_prompt: bool  # False: a property of the model, computed once per report


ANALYSES = [
    Analysis(("deltas",), _deltas, per_prompt=True),
    Analysis(("lens",), _lens, per_prompt=True),
    Analysis(("journey",), _journey, per_prompt=True),
    Analysis(
        ("coverage", "coverage_keys", "coverage_layers", "coverage_causal"),
        _coverage,
        per_prompt=True,
    ),  # fmt: skip
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
    try:
        return trace.frame(SAVED_PREFIX + name)
    except InterpError:
        return "not saved with this trace (save it with build_report(..., save=DIR))"


def save_derived(trace: Trace, derived: dict, directory: str | Path) -> Path:
    """`trace.save(directory)` plus the frames `derive` returned for it, so a report can be
    rebuilt from disk without the model (`build_report(Trace.load(directory), ...)`)."""
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
