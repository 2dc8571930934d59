"""Views inside the report: their data is one more derived frame (prompt, kind, payload as
JSON), so a report rebuilt from a saved trace shows the same views as the live one; a section
embeds one fragment per kind, every prompt side by side.
"""

from __future__ import annotations

import json

import pandas as pd

from interp.errors import InterpError
from interp.report.views import data, page


def view_frame(trace) -> pd.DataFrame:
    """Each prompt's data for each view this trace can give (routing: MoE models only)."""
    rows = []
    for prompt in range(len(trace.records)):
        for kind, build in data.BUILDERS.items():
            try:
                payload = build(trace, prompt)
            except InterpError:  # not captured, or no experts: the section says so
                continue
            rows.append((prompt, kind, json.dumps(payload, ensure_ascii=False)))
    return pd.DataFrame(rows, columns=["prompt", "kind", "payload"])


def add_view(section, inputs, kind: str) -> bool:
    """Append the `kind` view of every prompt to `section.views`; False (and a note) when the
    report has no such data."""
    frame = inputs.derived("views")
    if frame is None:
        section.notes.append(f"Interactive {kind} view: not available: {inputs.reason('views')}.")
        return False
    rows = frame[frame["kind"] == kind].sort_values("prompt")
    if rows.empty:
        section.notes.append(f"Interactive {kind} view: not available for this trace.")
        return False
    panes = [
        (inputs.labels[p], json.loads(text)) for p, text in zip(rows["prompt"], rows["payload"])
    ]
    section.views.append(page.fragment(kind, panes, f"view-{kind}"))
    return True
