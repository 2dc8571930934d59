"""Everything a report reads, gathered once: frames of one or more traces, merged so that
prompt numbers run on across traces, plus the derived analysis frames and their provenance.

Sections see only this object, never a model or a live tensor, so a report rebuilt from a
saved trace draws the same pictures as one made straight after the run.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import pandas as pd

from interp.errors import InterpError
from interp.report.parts import prompt_labels
from interp.text import decode, show_text
from interp.trace import Trace


@dataclass
class Prompt:
    label: str  # P1, P2, ...
    text: str  # as displayed: whole-span decoded, control characters made visible
    continuation: str


class ReportInputs:
    """Merged frames (`frame`), derived frames (`derived`) and per-prompt facts (`prompts`)."""

    def __init__(self, traces: Sequence[Trace], derived: Sequence[dict[str, pd.DataFrame | str]]):
        models = {t.meta.get("model") for t in traces}
        if len(models) > 1:
            raise InterpError(f"a report compares prompts on one model, got {sorted(models)}")
        self.traces = list(traces)
        self.meta = traces[0].meta
        self.facts = traces[0].facts
        self._derived = list(derived)
        self._frames: dict[str, pd.DataFrame] = {}
        self.offsets: list[int] = []
        start = 0
        for t in self.traces:
            self.offsets.append(start)
            start += _prompt_count(t)
        tokens = self.frame("tokens")
        tokenizer = traces[0].tokenizer

        def span(rows: pd.DataFrame) -> str:
            # Whole spans decode characters that byte-level tokens split; a loaded trace has
            # no tokenizer left, only its token texts.
            if tokenizer is None or rows.empty:
                return show_text("".join(rows["token"]))
            return show_text(decode(tokenizer, rows["token_id"]))

        self.prompts = []
        for i, label in enumerate(prompt_labels(start)):
            rows = tokens[tokens["prompt"] == i]
            generated = rows["generated"].astype(bool)
            self.prompts.append(Prompt(label, span(rows[~generated]), span(rows[generated])))

    @property
    def labels(self) -> list[str]:
        return [p.label for p in self.prompts]

    def frame(self, name: str) -> pd.DataFrame:
        """Trace frame `name` of all traces, prompt numbers shifted; empty if never captured."""
        if name not in self._frames:
            parts = [
                _shifted(_frame_or_empty(t, name), off) for t, off in zip(self.traces, self.offsets)
            ]
            if name == "shapes":  # one block's shapes describe the model, not a prompt
                parts = parts[:1]
            self._frames[name] = pd.concat(parts, ignore_index=True) if parts else pd.DataFrame()
        return self._frames[name]

    def derived(self, name: str) -> pd.DataFrame | None:
        """A derived frame over all prompts, or None when any trace lacks it."""
        found = [d.get(name) for d in self._derived]
        frames = [f for f in found if isinstance(f, pd.DataFrame)]
        if not frames:
            return None
        if "prompt" not in frames[0].columns:  # a property of the model, computed once
            return frames[0]
        if len(frames) < len(found):
            return None
        shifted = [_shifted(f, off) for f, off in zip(frames, self.offsets)]
        return pd.concat(shifted, ignore_index=True)

    def reason(self, name: str) -> str:
        """Why `derived(name)` is None, in one sentence for the reader."""
        for d in self._derived:
            if isinstance(d.get(name), str):
                return d[name]
        return f"the {name} analysis did not run"


def _prompt_count(trace: Trace) -> int:
    if trace.records:
        return len(trace.records)
    tokens = _frame_or_empty(trace, "tokens")
    if tokens.empty:
        raise InterpError("this saved trace has no tokens frame; it cannot be reported")
    return int(tokens["prompt"].max()) + 1


def _frame_or_empty(trace: Trace, name: str) -> pd.DataFrame:
    try:
        return trace.frame(name)
    except InterpError:  # a saved trace without this frame
        return pd.DataFrame()


def _shifted(frame: pd.DataFrame, offset: int) -> pd.DataFrame:
    if offset and "prompt" in frame.columns:
        frame = frame.assign(prompt=frame["prompt"] + offset)
    return frame
