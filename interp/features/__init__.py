"""Sparse dictionaries (SAEs, transcoders): load, encode, attach to a trace, splice.

    sae = interp.features.load("interp/features/weights/smollm2-res6")   # SAELens dir or npz
    trace = interp.trace(model, "The capital of France is", features=[sae])
    trace.features                                  # prompt pos token layer hook feature activation
    interp.trace(model, prompt, features=[sae], splice=True)   # downstream reads the reconstruction

dictionary.py (encode / decode formulas), load.py (formats), attach.py (the trace's hooks),
frames.py (the trace's frames), metrics.py (reconstruction and loss metrics).
"""

from interp.features.dictionary import ARCHITECTURES, Dictionary
from interp.features.load import load

__all__ = ["load", "Dictionary", "ARCHITECTURES"]
