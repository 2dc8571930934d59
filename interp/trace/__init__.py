"""The trace: run the model once, capture only what is asked, hand back plain data.

run.py (the forward passes), hooks.py (capture hooks), assemble.py (tensors per prompt),
frames.py (long-form frames), sampling.py (the sampling boundary), kv_cache.py (cache bytes),
facts.py (the model's shape), result.py (`Trace`).
"""

from interp.trace.facts import ModelFacts
from interp.trace.result import PromptRecord, Trace
from interp.trace.run import DEFAULT_CAPTURE, trace
from interp.trace.sampling import Sampling

__all__ = ["trace", "Trace", "PromptRecord", "Sampling", "ModelFacts", "DEFAULT_CAPTURE"]
