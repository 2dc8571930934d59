"""HTML reports comparing prompts: `build_report(traces, path)` writes one self-contained file.

import interp, interp.report
model = interp.load()
trace = interp.trace(model, ["The capital of France is", "The password is"], max_new_tokens=8)
interp.report.build_report(trace, "reports/demo.html", model=model)
interp.report.save_trace(trace, "traces/demo", model=model)  # rebuild later from disk:
interp.report.build_report(interp.Trace.load("traces/demo"), "reports/again.html")
"""

from interp.report.derived import derive, save_trace
from interp.report.html import build_report

__all__ = ["build_report", "derive", "save_trace"]
