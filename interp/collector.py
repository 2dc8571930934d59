"""Python's cyclic garbage collector, paused around work that makes many objects at once.

A process holding a model tracks ~500k objects; each full sweep costs ~0.3 s, and building a
bridge (100k new objects) or a traced generation triggers several: 0.3 s of a 0.9 s load,
~6% of a traced generation. What that work leaves is freed by reference counting; the
collector resumes on exit, as it was.
"""

from __future__ import annotations

import contextlib
import gc


@contextlib.contextmanager
def paused():
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()
