"""interp: follow one token through a transformer and measure every step.

import interp
model = interp.load()                       # SmolLM2-135M, offline
trace = interp.trace(model, "The capital of France is")
trace.residual                              # long-form pandas frames
"""

from interp import prompts
from interp.errors import InterpError
from interp.models import load

__all__ = ["load", "prompts", "InterpError"]
