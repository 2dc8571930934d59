"""interp: follow one token through a transformer and measure every step.

import interp
model = interp.load()                       # SmolLM2-135M, offline
trace = interp.trace(model, "The capital of France is")
trace.residual                              # long-form pandas frames
"""

from interp import prompts
from interp.errors import InterpError
from interp.models import load
from interp.survey.run import survey
from interp.trace import Sampling, Trace, trace

__all__ = ["load", "trace", "Trace", "survey", "Sampling", "prompts", "InterpError"]
