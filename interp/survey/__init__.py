"""Surveys: statistics of a model over a whole corpus, in constant memory (see run.survey);
of recorded routing with no model (from_routing.from_routing), and interp's own routing
written as a serving engine records it (export.export_routing)."""

from interp.survey.export import export_routing, trace_routing, write_routing
from interp.survey.from_routing import from_routing
from interp.survey.run import survey

__all__ = ["survey", "from_routing", "export_routing", "trace_routing", "write_routing"]
