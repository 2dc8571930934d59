"""Views inside the report: one fragment per section, every prompt side by side.

A report made straight after the run has the tensors the views need; one rebuilt from a saved
trace does not, and the section keeps its static figure instead (`add_view` says which).
"""

from __future__ import annotations

from interp.errors import InterpError
from interp.report.views import data, page


def add_view(section, inputs, kind: str) -> bool:
    """Append the `kind` view of every prompt of `inputs` to `section.views`; False (and a
    note) when a trace cannot give it."""
    panes = []
    try:
        for trace, offset in zip(inputs.traces, inputs.offsets):
            for p in range(len(trace.records) or 1):  # a saved trace has none: the builder says so
                panes.append((inputs.labels[offset + p], data.BUILDERS[kind](trace, p)))
    except InterpError as exc:
        section.notes.append(f"Interactive {kind} view: not available: {exc}.")
        return False
    section.views.append(page.fragment(kind, panes, f"view-{kind}"))
    return True
